"""Readers in other processes deliver only acknowledged frames, never one whose fsync failed.

A writer process runs on ``GateFS`` (``tests/multiproc.py``): the real file system, failing
a chosen ``fdatasync`` with EIO. The writer fails stop and cuts the frames off; readers in
other processes (``read_only=True``: ``list_after``, ``wait_for``, ``subscribe``, and
``segmentlog tail --follow``) must never deliver them, must deliver every acknowledged
append, and must go on delivering after the writer reopens and re-uses the failed seqs.

- The gate tests hold the writer inside the fdatasync that will fail, with the frames
  already in the file, and look from another process at that exact moment: at a run's first
  append, a later one, the first one after a segment roll, and the first one of a run that
  was deleted and created again; under ``always`` and ``batch``, exclusive and
  ``multiprocess=True`` writers.
- The random test lets writer threads append until a random fdatasync fails, reopens,
  several rounds, while a subscriber process and ``segmentlog tail --follow`` follow.
- A white-box test watches a read-only run's ``visible_seq`` at every file-system call of a
  follow (what another reader thread of that process could snapshot at that moment).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

import segmentlog
from segmentlog import LogFailedError, NotFoundError, RunCompleted
from segmentlog._fs import FileSystem
from segmentlog.format import segment_name
from tests.multiproc import (
    TIMEOUT,
    GateFS,
    GateSpec,
    RemoteError,
    delta,
    open_gate,
    read_all,
    wait_reached,
    workers,
)

SMALL: dict[str, Any] = {"segment_bytes": 4096, "index_interval_bytes": 256}
SCRIPT = Path(sys.executable).with_name("segmentlog")


def names(envelopes: list[Any]) -> list[str]:
    return [getattr(e.event, "delta", type(e.event).__name__).rstrip("x") for e in envelopes]


def done(run: uuid.UUID) -> RunCompleted:
    return RunCompleted(run_id=run, finish_reason="stop", iterations=1)


# --- the writer held inside the failing fdatasync --------------------------------------------

#: Where the failing append falls: the appends before it (``"delete"`` deletes the run),
#: the number of the fdatasync that fails, and whether the failing append starts a segment.
WHERE = {
    "first": ([], 1),
    "later": (["a", "b"], 3),
    "after-roll": (["a", "b", "c"], 4),
    "after-delete": (["a", "b", "delete"], 3),
}


def test_where_cases_are_what_they_say(tmp_path: Path) -> None:
    """Guard for the table above: with these sizes the fourth append rolls, and deletes
    take no fdatasync (so the counts name the intended appends)."""
    calls = {"n": 0}

    class Count(FileSystem):
        def fdatasync(self, fd: int) -> None:
            calls["n"] += 1
            super().fdatasync(fd)

    run = uuid.uuid4()
    with segmentlog.open(tmp_path / "log", fs=Count(), fsync="always", **SMALL) as log:
        for name in ["a", "b", "c"]:
            log.append(delta(run, name, 1000))
        assert calls["n"] == 3
        assert not (tmp_path / "log" / "runs" / str(run) / segment_name(4)).exists()
        log.append(delta(run, "d", 1000))
        assert calls["n"] == 4
        assert (tmp_path / "log" / "runs" / str(run) / segment_name(4)).exists()
        log.delete_run(run)
        assert calls["n"] == 4


@pytest.mark.parametrize("multiprocess", [False, True], ids=["exclusive", "multiprocess"])
@pytest.mark.parametrize("policy", ["always", "batch"])
@pytest.mark.parametrize("where", list(WHERE))
def test_a_reader_never_sees_the_append_whose_fsync_fails(
    tmp_path: Path, where: str, policy: str, multiprocess: bool
) -> None:
    path, gates = str(tmp_path / "log"), str(tmp_path / "gates")
    os.mkdir(gates)
    run = uuid.uuid4()
    before, failing = WHERE[where]
    options = {"fsync": policy, "multiprocess": multiprocess, **SMALL}
    segmentlog.open(path, multiprocess=multiprocess).close()
    reader = segmentlog.open(path, read_only=True)
    acked: list[str] = []
    with workers(1) as (writer,):
        writer.call("open", path, fs=GateSpec(gates, fdatasync={failing: "hold-eio"}), **options)
        for name in before:
            if name == "delete":
                assert names(read_all(reader, run)) == acked  # the reader knows the old run
                assert writer.call("delete_run", run) is True
                acked = []
            else:
                writer.call("append", delta(run, name, 1000))
                acked.append(name)
        writer.send("append", delta(run, "FAILED", 1000))
        wait_reached(gates, "fdatasync", failing, writer)

        # The frame is in the file now, and its fsync is about to fail: look from here.
        assert names(read_all(reader, run)) == acked
        assert reader.last_seq(run) == (len(acked) or None)
        assert reader.wait_for(run, len(acked), timeout=0.2) is False
        if acked:
            assert reader.run_info(run).events == len(acked)
        else:
            with pytest.raises(NotFoundError):
                reader.run_info(run)

        open_gate(gates, "fdatasync", failing)
        with pytest.raises(RemoteError) as failed:
            writer.recv()
        assert failed.value.kind == "LogFailedError"
        # (Another reader looks now; ``reader`` itself next looks after the seq was reused.)
        with segmentlog.open(path, read_only=True) as other:
            assert names(read_all(other, run)) == acked

        writer.call("open", path, **options)  # reopen: the failed seq is used again
        writer.call("append", delta(run, "replacement", 1500))
        writer.call("append_batch", [delta(run, "more", 10), done(run)])
    acked += ["replacement", "more", "RunCompleted"]
    assert names(read_all(reader, run)) == acked
    assert [e.seq for e in reader.subscribe(run, 0)] == list(range(1, len(acked) + 1))
    reader.close()
    with segmentlog.open(path, read_only=True) as fresh:
        assert names(read_all(fresh, run)) == acked


@pytest.mark.parametrize("multiprocess", [False, True], ids=["exclusive", "multiprocess"])
def test_a_state_record_left_without_segments_does_not_vouch_for_new_frames(
    tmp_path: Path, multiprocess: bool
) -> None:
    """Salvage took every segment of a run out (its first header was damaged); the run's state
    record acknowledged seq 3. Recovery removes that record with the emptied run (once it was
    left behind), and the next frames of the run must be held to the new writer's watermark,
    never to the old record's."""
    path, gates = str(tmp_path / "log"), str(tmp_path / "gates")
    os.mkdir(gates)
    run = uuid.uuid4()
    options = {"fsync": "always", "multiprocess": multiprocess}
    with segmentlog.open(path, **options) as log:
        for name in ["a", "b", "c"]:
            log.append(delta(run, name))
    segment = tmp_path / "log" / "runs" / str(run) / segment_name(1)
    with open(segment, "r+b") as f:
        f.write(b"\0" * 8)  # the header's magic
    with segmentlog.open(path, recovery="salvage", **options) as log:
        assert log.last_seq(run) is None
    assert not segment.exists() and not (segment.parent / "STATE").exists()
    reader = segmentlog.open(path, read_only=True)
    with workers(1) as (writer,):
        writer.call("open", path, fs=GateSpec(gates, fdatasync={1: "hold-eio"}), **options)
        writer.send("append", delta(run, "FAILED"))
        wait_reached(gates, "fdatasync", 1, writer)
        assert read_all(reader, run) == []
        with segmentlog.open(path, read_only=True) as other:
            assert read_all(other, run) == []
        open_gate(gates, "fdatasync", 1)
        with pytest.raises(RemoteError):
            writer.recv()
        writer.call("open", path, **options)
        writer.call("append", delta(run, "new"))
    assert names(read_all(reader, run)) == ["new"]
    reader.close()


# --- random failures, followed by a subscriber and by tail --follow --------------------------


def write_with_failures(
    state: dict[str, Any],
    path: str,
    run: uuid.UUID,
    options: dict[str, Any],
    threads: int,
    rounds: int,
    seed: int,
) -> tuple[list[tuple[int, str]], list[str]]:
    """Rounds of appending from ``threads`` threads until a random fdatasync fails (the log
    fails stop), then reopening; finally a terminal event. Returns the acknowledged
    ``(seq, name)`` and the names of every append that raised."""
    rng = random.Random(seed)
    acked: list[tuple[int, str]] = []
    failed: list[str] = []
    mu = threading.Lock()
    for rnd in range(rounds):
        spec = GateSpec(path, fdatasync={rng.randint(3, 30): "eio"})
        log = segmentlog.open(path, fs=GateFS(spec), **options)

        def work(t: int, log: Any = log, rnd: int = rnd) -> None:
            local = random.Random(rng.random())
            for i in range(10_000):
                batch = [f"r{rnd}.t{t}.{i}.{j}" for j in range(local.choice([1, 1, 1, 3]))]
                try:
                    envs = log.append_batch([delta(run, n, local.randint(10, 900)) for n in batch])
                except LogFailedError:
                    with mu:
                        failed.extend(batch)
                    return
                with mu:
                    acked.extend((e.seq, n) for e, n in zip(envs, batch, strict=True))

        pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join(TIMEOUT)
            assert not t.is_alive()
        log.close()
    with segmentlog.open(path, **options) as log:
        for env, name in zip(
            log.append_batch([delta(run, "last"), done(run)]), ["last", "RunCompleted"], strict=True
        ):
            acked.append((env.seq, name))
    return acked, failed


def subscribe_run(state: dict[str, Any], path: str, run: uuid.UUID) -> list[tuple[int, str]]:
    with segmentlog.open(path, read_only=True) as log:
        return [(e.seq, names([e])[0]) for e in log.subscribe(run, poll_interval=0.01)]


@pytest.mark.parametrize(
    ("policy", "threads", "multiprocess"),
    [("always", 1, True), ("batch", 3, True), ("always", 1, False), ("batch", 3, False)],
)
def test_followers_in_other_processes_skip_failed_appends(
    tmp_path: Path, policy: str, threads: int, multiprocess: bool
) -> None:
    path = str(tmp_path / "log")
    run = uuid.uuid4()
    options = {"fsync": policy, "multiprocess": multiprocess, "segment_bytes": 16384}
    segmentlog.open(path, multiprocess=multiprocess).close()
    tail = subprocess.Popen(
        [str(SCRIPT), "tail", path, str(run), "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        with workers(2) as (follower, writer):
            follower.send("run", subscribe_run, path, run)
            seed = random.Random(f"{policy}-{threads}-{multiprocess}").randrange(1 << 30)
            acked, failed = writer.call(
                "run",
                write_with_failures,
                path,
                run,
                options,
                threads,
                4,
                seed,
                timeout=4 * TIMEOUT,
            )
            followed = follower.recv()
        out, err = tail.communicate(timeout=TIMEOUT)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait(TIMEOUT)
    assert tail.returncode == 0, err.decode()[-2000:]
    tailed = []
    for line in out.decode().splitlines():
        env = json.loads(line)
        tailed.append((env["seq"], env["event"].get("delta", env["event"]["type"]).rstrip("x")))

    assert len(failed) >= 4, "the writer's fdatasyncs did not fail as arranged"
    assert len(acked) > 20
    acked.sort()
    assert [seq for seq, _ in acked] == list(range(1, len(acked) + 1))
    never = set(failed)
    for who, got in (("subscribe", followed), ("tail --follow", tailed)):
        leaked = [item for item in got if item[1] in never]
        assert not leaked, f"{who} delivered appends that raised in the writer: {leaked[:5]}"
        assert got == acked, f"{who} did not deliver exactly the acknowledged appends"
    with segmentlog.open(path, read_only=True) as log:
        got = read_all(log, run)
        assert list(zip([e.seq for e in got], names(got), strict=True)) == acked


# --- what another reader thread could see in the middle of a follow ------------------------


class _Watch(FileSystem):
    """Notes the watched run's ``visible_seq`` at every file-system call: what a reader
    thread of this process could snapshot at that moment (``list_after`` takes the run's
    view lock only for its snapshot)."""

    def __init__(self) -> None:
        super().__init__()
        self.run: Any = None
        self.old: list[Any] = []
        #: (the view is still the old incarnation's, visible_seq) at each call
        self.seen: list[tuple[bool, int]] = []

    def _note(self) -> None:
        run = self.run
        if run is not None:
            segments = list(run.segments)
            self.seen.append((bool(segments) and segments[-1] in self.old, run.visible_seq))

    def open_read(self, path: str) -> int:
        self._note()
        return super().open_read(path)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        self._note()
        return super().pread(fd, size, offset)

    def close(self, fd: int) -> None:
        self._note()
        super().close(fd)

    def listdir(self, path: str) -> list[str]:
        self._note()
        return super().listdir(path)


@pytest.mark.parametrize("case", ["new-frame", "re-created"])
def test_a_follow_never_exposes_an_unacknowledged_frame_midway(tmp_path: Path, case: str) -> None:
    """While a follow takes in a frame whose fsync is still running, the run's visible seq
    must never pass the writer's watermark, not even between two statements of ``follow``.

    For "re-created": a read-only view loaded afresh once published every complete frame as
    visible and only then clamped it to the watermark, so a reader thread snapshotting in
    between delivered a frame whose fsync might yet fail. The watermark is now read before
    recovery and caps ``visible_seq`` in the same hold of the view lock."""
    path, gates = str(tmp_path / "log"), str(tmp_path / "gates")
    os.mkdir(gates)
    run = uuid.uuid4()
    segmentlog.open(path, multiprocess=True).close()
    watch = _Watch()
    reader = segmentlog.open(path, read_only=True, fs=watch)
    with workers(1) as (writer,):
        spec = GateSpec(gates, fdatasync={3: "hold"})
        writer.call("open", path, fs=spec, fsync="always", multiprocess=True)
        writer.call("append", delta(run, "a"))
        writer.call("append", delta(run, "b"))
        assert names(read_all(reader, run)) == ["a", "b"]
        acked = 2
        if case == "re-created":
            assert writer.call("delete_run", run) is True
            acked = 0
        writer.send("append", delta(run, "held"))
        wait_reached(gates, "fdatasync", 3, writer)
        watch.run = reader._runs[run]
        watch.old = list(watch.run.segments)
        assert reader.last_seq(run) == (acked or None)
        watch.run = None
        open_gate(gates, "fdatasync", 3)
        assert writer.recv().seq == acked + 1
    assert watch.seen, "the follow made no file-system call"
    leaks = [visible for old, visible in watch.seen if not old and visible > acked]
    if case == "new-frame":
        leaks = [visible for _, visible in watch.seen if visible > acked]
    assert not leaks, f"visible_seq passed the watermark ({acked}) midway: {watch.seen}"
    assert reader.last_seq(run) == acked + 1
    reader.close()


# --- a read planned past the end of a file ---------------------------------------------------

_SHORTER_THAN_PLANNED = """
import os, sys, uuid
import segmentlog
from segmentlog import TextDelta
from segmentlog.reader import read_page

path, run = sys.argv[1], uuid.uuid4()
with segmentlog.open(path) as log:
    for i in range(3):
        log.append(TextDelta(run_id=run, delta=str(i) * 500))
reader = segmentlog.open(path, read_only=True)
assert len(reader.list_after(run, 0)) == 3
state = reader._runs[run]
_generation, visible, plan = state.snapshot(1, 3)
segment = f"{path}/runs/{run}/00000000000000000001.seg"
os.truncate(segment, os.path.getsize(segment) - 300)  # as another process's repair may cut
try:
    read_page(reader._fs, reader._ctx.codec, run, plan, 1, 3, 1 << 23, state.view_lock)
except segmentlog.SegmentLogError as exc:
    print("raised", type(exc).__name__)
"""


def test_a_read_planned_past_the_end_of_a_file_raises_instead_of_spinning(tmp_path: Path) -> None:
    """When a segment is shorter than the snapshot planned (a read-only view the files no
    longer continue, or a cut by another process between snapshot and read), ``pread``
    returns no bytes at the end of the file; the read loop once retried the same 28-byte read
    forever at 100% CPU. It must raise (``CorruptionError``/``NotFoundError``). The follower
    fix in ``follow`` keeps views consistent, but the read loop itself must not spin. Run in
    a subprocess with a timeout, so the bug fails the test instead of hanging it."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", _SHORTER_THAN_PLANNED, str(tmp_path / "log")],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("read_page spun on a segment shorter than its plan (killed after 30 s)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("raised "), result.stdout
