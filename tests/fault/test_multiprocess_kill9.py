"""kill -9 with several writer processes: no acknowledged append is lost, seqs stay gapless.

The oracle: four child processes (``mp_kill9_child.py``, two threads each) append to the
same two runs with ``multiprocess=True`` and print every acknowledged ``run seq event_id
name size``; a long-lived fifth writer (a ``Worker``, never killed) appends beside them. At a
random moment the four are SIGKILLed together, and then:

- the survivor appends once more to each run: it must take in what the dead wrote, and
  recover any tail a dead writer left busy, before it appends (``catch_up``);
- a fresh ``read_only`` open must find every acknowledged ``(run, seq, event)`` exactly,
  each run gapless from 1 with no duplicate event id, and every envelope carrying the
  session of the run's ``RunStarted``;
- a fresh ``multiprocess=True`` open appends to each run and gets ``last_seq + 1``;
- every tenth cycle the survivor closes and a fresh exclusive open checks it all again,
  recovering from the files alone.

The same directory is used for every cycle, under ``always`` and ``batch``; 50 cycles each
(``SEGMENTLOG_SOAK=1``: 300). Children's output is read by one thread per child straight
from the pipe until EOF, so no acknowledged line is lost to buffering.

Beside the oracle, deterministic kills: a writer killed with half a frame written (the busy
byte set) leaves a torn tail that the next writer, long-lived or fresh, cuts before it
appends; one killed after its write and fsync but before acknowledging leaves a whole frame,
which readers deliver only once a writer has recovered it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import segmentlog
from segmentlog import RunStarted
from segmentlog.format import SEGMENT_HEADER_SIZE, STATE_BUSY_AT, segment_name
from tests.multiproc import (
    TIMEOUT,
    GateSpec,
    Worker,
    delta,
    open_gate,
    read_all,
    wait_reached,
    workers,
)

from .model import frames_of

SOAK = os.environ.get("SEGMENTLOG_SOAK") == "1"
CYCLES = 300 if SOAK else 50
CHILD = Path(__file__).with_name("mp_kill9_child.py")
WRITERS = 4
THREADS = 2
RUNS = [uuid.UUID("0190a8c4-1e00-7000-8000-0000000000a1"), uuid.UUID(int=0xB2)]
SESSIONS = {RUNS[0]: uuid.UUID(int=0x5E55_0001), RUNS[1]: uuid.UUID(int=0x5E55_0002)}
OPTIONS: dict[str, Any] = {
    "multiprocess": True,
    "segment_bytes": 16384,
    "index_interval_bytes": 1024,
}

#: A promise: (run, seq) -> (event id, name, size).
Promises = dict[tuple[uuid.UUID, int], tuple[str, str, int]]


class Child:
    """One killed writer: its process and every complete line it printed."""

    def __init__(self, path: Path, policy: str, seed: int, tag: str, err: Path) -> None:
        self.err = err
        with open(err, "wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(CHILD), str(path), policy, str(THREADS), str(seed), tag]
                + [str(r) for r in RUNS],
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        self.lines: list[bytes] = []
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # until EOF: the process is gone
            if line == b"ready\n":
                self.ready.set()
            elif line.endswith(b"\n"):  # a cut last line is no promise
                self.lines.append(line)
        self.ready.set()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)

    def finish(self) -> list[bytes]:
        """Reap the killed process and return its acknowledgement lines."""
        self.kill()
        self.proc.wait(TIMEOUT)
        self.reader.join(TIMEOUT)
        assert not self.reader.is_alive()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        assert self.proc.returncode == -signal.SIGKILL, (
            f"writer exited by itself ({self.proc.returncode}): "
            f"{self.err.read_text(errors='replace')[-2000:]}"
        )
        return self.lines


def survivor_start(state: dict[str, Any], tag: str) -> None:
    """In the survivor: append to both runs from a thread until ``survivor_stop``."""
    log = state["log"]
    stop = threading.Event()
    acked: list[tuple[str, int, str, str, int]] = []

    def loop() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            run, name = RUNS[i % 2], f"{tag}.{i}"
            env = log.append(delta(run, name, 60))
            acked.append((str(run), env.seq, str(env.event_id), name, 60))
            time.sleep(0.002)

    thread = threading.Thread(target=loop)
    thread.start()
    state["survivor"] = (thread, stop, acked)


def survivor_stop(state: dict[str, Any]) -> list[tuple[str, int, str, str, int]]:
    thread, stop, acked = state.pop("survivor")
    stop.set()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    return list(acked)


def _promise(promised: Promises, run: str, seq: int, eid: str, name: str, size: int) -> None:
    key = (uuid.UUID(run), seq)
    assert key not in promised or promised[key] == (eid, name, size), (
        f"two acknowledged appends got {key}: {promised.get(key)} and {(eid, name, size)}"
    )
    promised[key] = (eid, name, size)


def check_log(log: Any, promised: Promises, when: str) -> dict[uuid.UUID, int]:
    """Assert every promise and the run invariants; return each run's last seq."""
    last: dict[uuid.UUID, int] = {}
    for run in RUNS:
        envs = read_all(log, run, page=1000)
        seqs = [e.seq for e in envs]
        assert seqs == list(range(1, len(seqs) + 1)), f"{when}: run {run} is not gapless"
        assert len({e.event_id for e in envs}) == len(envs), f"{when}: duplicate event ids"
        assert isinstance(envs[0].event, RunStarted)
        assert {e.session_id for e in envs} == {SESSIONS[run]}, f"{when}: session not carried"
        last[run] = len(envs)
        for (r, seq), (eid, name, size) in promised.items():
            if r != run:
                continue
            assert seq <= len(envs), f"{when}: acknowledged {run} seq {seq} is missing"
            env = envs[seq - 1]
            assert str(env.event_id) == eid, f"{when}: {run} seq {seq} holds another event"
            assert env.event.delta == delta(run, name, size).delta, f"{when}: {run} seq {seq}"
    return last


@pytest.mark.parametrize("policy", ["always", "batch"])
def test_every_acknowledged_append_survives_killing_every_writer(
    tmp_path: Path, policy: str
) -> None:
    rng = random.Random(f"mp-kill9-{policy}")
    path = tmp_path / "log"
    promised: Promises = {}
    with segmentlog.open(path, fsync=policy, **OPTIONS) as log:
        for run in RUNS:
            env = log.append(
                RunStarted(run_id=run, session_id=SESSIONS[run], provider="p", model="m")
            )
            assert env.seq == 1
    survivor = Worker("survivor")
    try:
        survivor.call("open", str(path), fsync=policy, **OPTIONS)
        from_children = busy = 0
        for cycle in range(CYCLES):
            survivor.call("run", survivor_start, f"s{cycle}")
            children = [
                Child(path, policy, rng.randrange(1 << 30), f"c{cycle}.{i}", tmp_path / f"err{i}")
                for i in range(WRITERS)
            ]
            try:
                for child in children:
                    assert child.ready.wait(TIMEOUT), "a writer did not start"
                time.sleep(rng.uniform(0.0, 0.25))
                for child in children:
                    child.kill()
                busy += sum(_busy(path, run) for run in RUNS)  # left by a writer killed mid-append
            finally:
                lines = [line for child in children for line in child.finish()]
            for line in lines:
                run, seq, eid, name, size = line.decode().split()
                _promise(promised, run, int(seq), eid, name, int(size))
            from_children += len(lines)
            for item in survivor.call("run", survivor_stop):
                _promise(promised, *item)
            for run in RUNS:  # the survivor catches up with the dead before it appends
                env = survivor.call("append", delta(run, f"after{cycle}", 10))
                _promise(promised, str(run), env.seq, str(env.event_id), f"after{cycle}", 10)

            with segmentlog.open(path, read_only=True) as log:
                last = check_log(log, promised, f"cycle {cycle}, read-only")
            with segmentlog.open(path, fsync=policy, **OPTIONS) as log:
                for run in RUNS:
                    assert log.last_seq(run) == last[run]
                    env = log.append(delta(run, f"fresh{cycle}", 10))
                    assert (env.seq, env.session_id) == (last[run] + 1, SESSIONS[run])
                    _promise(promised, str(run), env.seq, str(env.event_id), f"fresh{cycle}", 10)
            if cycle % 10 == 9 or cycle == CYCLES - 1:
                survivor.call("close")
                with segmentlog.open(path, fsync=policy) as log:  # exclusive: from the files
                    check_log(log, promised, f"cycle {cycle}, exclusive")
                survivor.call("open", str(path), fsync=policy, **OPTIONS)
    finally:
        survivor.stop()
    assert from_children > 2 * CYCLES, "the writers acknowledged almost nothing"
    assert busy > 0, "no kill caught a writer mid-append: the survivor never had to recover"
    assert len(promised) > from_children


# --- deterministic kills mid-append ----------------------------------------------------------

SMALL: dict[str, Any] = {"multiprocess": True, "segment_bytes": 4096, "index_interval_bytes": 256}


def texts(envelopes: list[Any]) -> list[str]:
    return [e.event.delta for e in envelopes]


def _busy(path: Path, run: uuid.UUID) -> int:
    return (path / "runs" / str(run) / "STATE").read_bytes()[STATE_BUSY_AT]


def _check_no_torn_bytes(path: Path, run: uuid.UUID, seqs: int) -> None:
    """Every segment holds whole frames only (then, in the last, only preallocated zeros)."""
    run_dir = path / "runs" / str(run)
    found: list[int] = []
    for seg in sorted(run_dir.glob("*.seg")):
        data = seg.read_bytes()
        frames = frames_of(data)
        found += [f.seq for f in frames]
        end = frames[-1].end if frames else SEGMENT_HEADER_SIZE
        assert data[end:] == bytes(len(data) - end), f"{seg.name}: bytes after the last frame"
    assert found == list(range(1, seqs + 1))


@pytest.mark.parametrize("where", ["mid-segment", "new-segment"])
@pytest.mark.parametrize("next_writer", ["long-lived", "fresh"])
def test_a_torn_tail_left_by_a_killed_writer_is_cut_before_the_next_append(
    tmp_path: Path, where: str, next_writer: str
) -> None:
    path, gates = tmp_path / "log", str(tmp_path / "gates")
    os.mkdir(gates)
    run = uuid.uuid4()
    before = ["a", "b"] if where == "mid-segment" else ["a", "b", "c"]
    torn = len(before) + 1  # the pwrite of the append that is torn
    with workers(2) as (victim, survivor):
        victim.call("open", str(path), fs=GateSpec(gates, pwrite={torn: "tear"}), **SMALL)
        for name in before:
            victim.call("append", delta(run, name, 1000))
        if next_writer == "long-lived":
            survivor.call("open", str(path), **SMALL)
            assert survivor.call("last_seq", run) == len(before)
        victim.send("append", delta(run, "TORN", 1000))
        wait_reached(gates, "pwrite", torn, victim)
        assert _busy(path, run) == 1, "the writer did not mark the run busy before writing"
        if where == "new-segment":
            assert (path / "runs" / str(run) / segment_name(torn)).exists()
        victim.kill()

        with segmentlog.open(path, read_only=True) as reader:
            assert [e.seq for e in read_all(reader, run)] == list(range(1, len(before) + 1))
        if next_writer == "fresh":
            survivor.call("open", str(path), **SMALL)
        env = survivor.call("append", delta(run, "next", 1000))
        assert env.seq == len(before) + 1
        assert _busy(path, run) == 0
        names = [*before, "next"]
        assert survivor.call("read_all", run) == survivor.call("list_after", run, 0, 100)
        assert texts(survivor.call("read_all", run)) == [delta(run, n, 1000).delta for n in names]
        _check_no_torn_bytes(path, run, len(names))
    with segmentlog.open(path) as log:
        assert texts(read_all(log, run)) == [delta(run, n, 1000).delta for n in names]
        assert log.recovery_reports == [], "the next writer left damage behind"


def test_a_writer_killed_before_acknowledging_leaves_a_frame_readers_wait_for(
    tmp_path: Path,
) -> None:
    """Killed after the frame was written and synced, before the state record said so: the
    frame is whole, so the next writer keeps it (as after any crash before an
    acknowledgement), and readers deliver it only once a writer has recovered the run."""
    path, gates = tmp_path / "log", str(tmp_path / "gates")
    os.mkdir(gates)
    run = uuid.uuid4()
    with workers(2) as (victim, survivor):
        victim.call("open", str(path), fs=GateSpec(gates, fdatasync={3: "hang"}), **SMALL)
        victim.call("append", delta(run, "a"))
        victim.call("append", delta(run, "b"))
        survivor.call("open", str(path), **SMALL)
        assert survivor.call("last_seq", run) == 2
        victim.send("append", delta(run, "unacknowledged"))
        wait_reached(gates, "fdatasync", 3, victim)
        victim.kill()
        assert _busy(path, run) == 1
        with segmentlog.open(path, read_only=True) as reader:
            assert [e.seq for e in read_all(reader, run)] == [1, 2]
            assert survivor.call("append", delta(run, "c")).seq == 4
            assert texts(read_all(reader, run)) == ["a", "b", "unacknowledged", "c"]


def group_that_rolls(state: dict[str, Any], run: uuid.UUID, gates: str) -> None:
    """In the victim: one append held in its fdatasync while two more queue behind it, so
    that the next leader commits those two as one group, in which the first fits the
    segment and the second rolls it. Returns once the group is under way."""
    log = state["log"]
    log.append(delta(run, "a", 1000))
    threads = [threading.Thread(target=log.append, args=(delta(run, "A", 1000),))]
    threads[0].start()
    wait_reached(gates, "fdatasync", 2)
    for name in ["B", "C"]:
        threads.append(threading.Thread(target=log.append, args=(delta(run, name, 1000),)))
        threads[-1].start()
        queue = log._runs[run].committer._queue  # white-box: the group commit's queue
        deadline = time.monotonic() + TIMEOUT
        while len(queue) < len(threads) - 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert len(queue) == len(threads) - 1
    open_gate(gates, "fdatasync", 2)
    state["threads"] = threads


def test_a_writer_killed_after_a_roll_inside_one_group_leaves_the_run_busy(
    tmp_path: Path,
) -> None:
    """A group commit whose first appends fit the segment and whose last one rolls it
    publishes the first part, then seals, creates the next segment and writes, all under one
    hold of the run's lock. Killed before its last publish, it must still leave the run
    marked busy: the next writer has to find the new segment, not append the same seq to
    the old one (which made two segments hold one seq, a CorruptionError on every open)."""
    path, gates = tmp_path / "log", str(tmp_path / "gates")
    os.mkdir(gates)
    run = uuid.uuid4()
    spec = GateSpec(gates, fdatasync={2: "hold"}, pwrite={4: "hang"})
    with workers(2) as (victim, survivor):
        victim.call("open", str(path), fs=spec, fsync="always", **SMALL)
        survivor.call("open", str(path), **SMALL)
        victim.call("run", group_that_rolls, run, gates)
        wait_reached(gates, "pwrite", 4, victim)  # C written into the new segment
        assert (path / "runs" / str(run) / segment_name(4)).exists()
        victim.kill()
        assert _busy(path, run) == 1, "a writer died mid-append and the run is not busy"
        assert survivor.call("append", delta(run, "next")).seq == 5
    with segmentlog.open(path) as log:
        assert texts(read_all(log, run)) == [
            delta(run, n, size).delta
            for n, size in [("a", 1000), ("A", 1000), ("B", 1000), ("C", 1000), ("next", 0)]
        ]
