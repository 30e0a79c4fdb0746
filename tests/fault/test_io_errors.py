"""Write and fsync errors (EIO, ENOSPC), torn and short writes, failed renames.

Each sweep arms the fault at the n-th call of its kind, for every n the workload reaches, and
runs a workload that rolls segments. The first append the fault reaches must fail with
``LogFailedError`` (carrying the OS error) unless the fault only hit the index, which is a
cache; from then on every append must fail too (fail-stop), and no half frame may remain in
any segment. Reopening after the fault clears (a process crash, or a power loss) must recover
everything acknowledged and may add only the one append that was in flight.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import logging
import threading
import uuid
from typing import Any

import pytest

from segmentlog import LogFailedError
from segmentlog.format import (
    SEGMENT_HEADER_SIZE,
)

from .faultfs import FaultFS
from .model import LogModel, event, frames_of, fresh_fs, open_log, read_run

A = uuid.UUID("0190a8c4-1e00-7000-8000-0000000000a1")
ERRORS = [errno.EIO, errno.ENOSPC]


@pytest.fixture(autouse=True)
def _quiet_recovery_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="segmentlog")


@pytest.fixture(scope="module")
def base() -> FaultFS:
    fs = fresh_fs()
    log = open_log(fs, fsync="always")
    for n in range(10):
        log.append(event(A, n, 200))
    log.close()
    fs.sync_all()
    return fs


def _workload(log: Any, model: LogModel) -> None:
    for n in range(8):
        model.append(log, event(A, 100 + n, 400))
    model.append_batch(log, [event(A, 200 + n, 300) for n in range(3)])
    for n in range(4):
        model.append(log, event(A, 300 + n, 400))


def _no_half_frames(fs: FaultFS) -> None:
    for path in fs.walk_files():
        if path.endswith(".seg"):
            data = fs.read_bytes(path)
            frames = frames_of(data)
            end = frames[-1].end if frames else SEGMENT_HEADER_SIZE
            tail = data[end:]  # only the zeros of a preallocated tail may follow the frames
            assert tail == bytes(len(tail)), f"{path}: a half frame remains at offset {end}"


def _start(base: FaultFS, policy: str) -> tuple[FaultFS, Any, LogModel]:
    fs = base.clone()
    log = open_log(fs, fsync=policy)
    model = LogModel(durable_ack=policy in ("always", "batch"))
    model.acknowledged(read_run(log, A))
    model.synced()
    fs.reset_counters()  # sweeps compare these counts with the fault's position
    return fs, log, model


def _run_faulty(fs: FaultFS, log: Any, model: LogModel, err: int | None) -> bool:
    """Run the workload; True if it failed stop (and check the fail-stop contract)."""
    try:
        _workload(log, model)
    except LogFailedError as exc:
        if err is not None:
            assert isinstance(exc.cause, OSError) and exc.cause.errno == err, exc.cause
        assert "reopen" in str(exc), f"the error should say what to do: {exc}"
        with pytest.raises(LogFailedError, match="reopen"):
            log.append(event(A, 9999))
        with pytest.raises(LogFailedError):
            log.append_batch([event(A, 9998)])
        _no_half_frames(fs)
        return True
    return False


def _recovers(fs: FaultFS, log: Any, model: LogModel, what: str) -> None:
    for mode in (None, "drop_unsynced"):
        survivor = fs.clone()
        if mode is not None:
            survivor.power_loss(mode)
        again = open_log(survivor)
        try:
            copy.deepcopy(model).check(again, power_lost=mode is not None)
        except AssertionError as exc:
            after = mode or "process crash"
            raise AssertionError(f"{what}, reopened after {after}: {exc}") from exc
        nxt = again.append(event(A, 5555))
        assert nxt.seq == (again.last_seq(A) or 0), what
        again.close()
    with contextlib.suppress(Exception):  # a failed log may not close cleanly
        log.close()


@pytest.mark.parametrize("err", ERRORS, ids=["EIO", "ENOSPC"])
@pytest.mark.parametrize("sticky", [False, True], ids=["once", "sticky"])
def test_write_error_at_every_write_fails_stop_and_loses_nothing_acknowledged(
    base: FaultFS, err: int, sticky: bool
) -> None:
    failed_stops = 0
    for n in range(1, 200):
        fs, log, model = _start(base, "always")
        fs.fail_write(n, err, sticky=sticky)
        stopped = _run_faulty(fs, log, model, err)
        if not stopped and fs.counts["write"] < n:
            break
        failed_stops += stopped
        _recovers(fs, log, model, f"write {n} failed with {errno.errorcode[err]}")
    assert failed_stops >= 10


@pytest.mark.parametrize("keep", [0, 1, 13, 27, 28, 29, 100])
def test_torn_write_leaves_no_half_frame_and_recovers(base: FaultFS, keep: int) -> None:
    for n in range(1, 60):
        fs, log, model = _start(base, "always")
        fs.tear_write(n, keep=keep, err=errno.EIO)
        stopped = _run_faulty(fs, log, model, errno.EIO)
        if not stopped and fs.counts["write"] < n:
            break
        _recovers(fs, log, model, f"write {n} torn after {keep} bytes")


def test_short_writes_are_completed(base: FaultFS) -> None:
    fs, log, model = _start(base, "always")
    for n in range(1, 40, 3):
        fs.tear_write(n, keep=5, err=None)
    _workload(log, model)
    _no_half_frames(fs)
    log.close()
    _recovers(fs, log, model, "short writes")


@pytest.mark.parametrize("policy", ["always", "batch"])
@pytest.mark.parametrize("err", ERRORS, ids=["EIO", "ENOSPC"])
@pytest.mark.parametrize("dirs", [False, True], ids=["files", "files+dirs"])
def test_fsync_error_at_every_fsync_fails_stop_and_loses_nothing_acknowledged(
    base: FaultFS, policy: str, err: int, dirs: bool
) -> None:
    failed_stops = 0
    for n in range(1, 200):
        fs, log, model = _start(base, policy)
        fs.fail_fsync(n, err, include_dirs=dirs)
        stopped = _run_faulty(fs, log, model, err)
        synced = fs.counts["fsync"] + fs.counts["fdatasync"] + dirs * fs.counts["fsync_dir"]
        if not stopped and synced < n:
            break
        assert stopped, f"fsync {n} failed with {errno.errorcode[err]} but no append failed"
        failed_stops += 1
        _recovers(fs, log, model, f"{policy}: fsync {n} failed with {errno.errorcode[err]}")
    assert failed_stops >= 10


@pytest.mark.parametrize("err", ERRORS, ids=["EIO", "ENOSPC"])
def test_failed_segment_creation_during_roll_fails_stop(base: FaultFS, err: int) -> None:
    fs, log, model = _start(base, "always")
    fs.fail_create(1, err)
    assert _run_faulty(fs, log, model, err), "the roll's create failed but no append failed"
    assert not [p for p in fs.walk_files() if p.endswith(".tmp")], "a .tmp file was left behind"
    _recovers(fs, log, model, "segment creation failed")


def test_fsync_error_under_batch_with_several_threads(base: FaultFS) -> None:
    fs = base.clone()
    log = open_log(fs, fsync="batch")
    runs = [uuid.UUID(int=0xBA7C0000 + i) for i in range(4)]
    acked: dict[uuid.UUID, list[Any]] = {r: [] for r in runs}
    errors: list[BaseException] = []
    fs.fail_fsync(25, errno.EIO)

    def writer(run_id: uuid.UUID) -> None:
        try:
            for n in range(40):
                acked[run_id].append(log.append(event(run_id, n, 150)))
        except LogFailedError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors, "an fsync failed but no writer saw LogFailedError"
    survivor = fs.clone()
    survivor.power_loss("drop_unsynced")
    again = open_log(survivor)
    for run_id in runs:
        got = read_run(again, run_id)
        ids = [e.event_id for e in got]
        assert [e.seq for e in got] == list(range(1, len(got) + 1))
        assert [e.event_id for e in acked[run_id]] == ids[: len(acked[run_id])], (
            f"run {run_id}: an acknowledged append was lost after the fsync error"
        )
        assert len(got) <= len(acked[run_id]) + 1
    again.close()
