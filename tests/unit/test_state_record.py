"""When a run's STATE record is written: a read never creates it, a first write does.

An exclusive durable writer used to claim (create, stamp, publish) every run's record as
soon as it loaded the run, so reading 1000 runs after a reopen created 1000 files (and
needed free space). The record matters only to other processes once this one writes.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import segmentlog
from segmentlog import TextDelta
from segmentlog.format import STATE_NAME


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _write_runs(path: Path, runs: list[uuid.UUID]) -> None:
    # "never" keeps no state record: the runs start without one.
    with segmentlog.open(path, fsync="never") as log:
        for run_id in runs:
            log.append(TextDelta(run_id=run_id, delta="a"))
            log.append(TextDelta(run_id=run_id, delta="b"))


def test_reading_runs_under_a_durable_policy_creates_no_file(tmp_path: Path) -> None:
    path = tmp_path / "log"
    runs = [uuid.uuid4() for _ in range(5)]
    _write_runs(path, runs)
    before = _files(path)
    assert not any(name.endswith(STATE_NAME) for name in before)
    with segmentlog.open(path, fsync="batch") as log:
        for run_id in runs:
            assert log.last_seq(run_id) == 2
            assert [e.event.delta for e in log.list_after(run_id)] == ["a", "b"]
        assert _files(path) - before == set()
    assert _files(path) - before == set()


def test_the_first_write_after_a_reopen_claims_the_record_for_followers(tmp_path: Path) -> None:
    path = tmp_path / "log"
    run_id = uuid.uuid4()
    _write_runs(path, [run_id])
    state = path / "runs" / str(run_id) / STATE_NAME
    with segmentlog.open(path, fsync="batch") as log:
        assert log.last_seq(run_id) == 2
        assert not state.exists()
        log.append(TextDelta(run_id=run_id, delta="c"))
        assert state.exists() and os.path.getsize(state) > 0
        with segmentlog.open(path, read_only=True) as follower:
            # The record now holds the writer's watermark: every acknowledged event shows.
            assert follower.last_seq(run_id) == 3
            assert [e.event.delta for e in follower.list_after(run_id)] == ["a", "b", "c"]
        log.append(TextDelta(run_id=run_id, delta="d"))
        with segmentlog.open(path, read_only=True) as follower:
            assert follower.last_seq(run_id) == 4


def test_a_run_deleted_and_written_again_claims_a_fresh_record(tmp_path: Path) -> None:
    path = tmp_path / "log"
    run_id = uuid.uuid4()
    _write_runs(path, [run_id])
    with segmentlog.open(path, fsync="batch") as log:
        assert log.last_seq(run_id) == 2  # loaded: the claim is pending
        log.delete_run(run_id)
        log.append(TextDelta(run_id=run_id, delta="again"))
        with segmentlog.open(path, read_only=True) as follower:
            assert [e.event.delta for e in follower.list_after(run_id)] == ["again"]
