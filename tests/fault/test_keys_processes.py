"""Idempotent and conditional appends between processes (``multiprocess=True``).

- Any interleaving of retries by concurrent writer processes stores each key exactly once,
  and every process gets the same envelope for a key (Hypothesis chooses the keys, the order
  each process tries them in, and the fsync policy).
- ``expected_seq``: among processes that all read the same last seq, exactly one wins.
- A writer killed (SIGKILL) between its write and its acknowledgement, then retried with the
  same key by another process, yields exactly one event for that key.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import segmentlog

CHILD = str(Path(__file__).with_name("keyed_child.py"))
SOAK = os.environ.get("SEGMENTLOG_SOAK") == "1"


def spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen(
        [sys.executable, CHILD, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(proc: subprocess.Popen[str]) -> list[str]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out.splitlines()


def stored_keys(path: Path, run: uuid.UUID) -> dict[str, list[tuple[int, str]]]:
    """key -> every (seq, event id) that holds it, read by a fresh read-only open."""
    found: dict[str, list[tuple[int, str]]] = {}
    with segmentlog.open(path, read_only=True) as log:
        for env in log.list_after(run, 0, 100_000):
            assert env.key is not None
            found.setdefault(env.key, []).append((env.seq, str(env.event_id)))
    return found


@settings(
    max_examples=25 if SOAK else 5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    keys=st.lists(st.text("abcdef", min_size=1, max_size=6), min_size=1, max_size=12, unique=True),
    processes=st.integers(2, 3),
    policy=st.sampled_from(["never", "batch"]),
    seed=st.integers(0, 2**16),
)
def test_concurrent_retries_in_processes_store_each_key_once(
    tmp_path_factory: object, keys: list[str], processes: int, policy: str, seed: int
) -> None:
    path = Path(str(tmp_path_factory.mktemp("keys"))) / "log"  # type: ignore[attr-defined]
    run = uuid.uuid4()
    rng = random.Random(seed)
    orders = []
    for _ in range(processes):
        order = keys + rng.sample(keys, k=rng.randint(0, len(keys)))  # retries, too
        rng.shuffle(order)
        orders.append(order)
    procs = [spawn("retry", str(path), str(run), policy, *order) for order in orders]
    answers: dict[str, set[tuple[int, str]]] = {}
    for proc in procs:
        for line in finish(proc):
            key, seq, event_id = line.split()
            answers.setdefault(key, set()).add((int(seq), event_id))
    stored = stored_keys(path, run)
    assert sorted(stored) == sorted(keys)
    assert all(len(held) == 1 for held in stored.values()), stored
    assert sorted(held[0][0] for held in stored.values()) == list(range(1, len(keys) + 1))
    for key in keys:  # every process, every retry, was told the one stored envelope
        assert answers[key] == {stored[key][0]}


def test_expected_seq_has_exactly_one_winner_among_processes(tmp_path: Path) -> None:
    path = tmp_path / "log"
    run = uuid.uuid4()
    with segmentlog.open(path, multiprocess=True) as log:
        log.append(segmentlog.TextDelta(run_id=run, delta="first"))
    for round_ in range(6 if SOAK else 3):
        contenders = [
            spawn("expect", str(path), str(run), "batch", f"r{round_}p{i}") for i in range(4)
        ]
        reads = set()
        for proc in contenders:
            assert proc.stdout is not None
            reads.add(proc.stdout.readline().split()[1])
        assert len(reads) == 1, "every contender read the same last seq"
        (last,) = reads
        for proc in contenders:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [finish(proc)[0].split() for proc in contenders]
        winners = [r for r in results if r[0] == "won"]
        assert len(winners) == 1, results
        assert int(winners[0][1]) == int(last) + 1
        assert all(int(r[1]) == int(last) + 1 for r in results if r[0] == "lost")
    with segmentlog.open(path, read_only=True) as log:
        assert log.last_seq(run) == 1 + (6 if SOAK else 3)


def test_a_kill_between_write_and_ack_then_a_retry_yields_one_event(tmp_path: Path) -> None:
    path = tmp_path / "log"
    run = uuid.uuid4()
    rng = random.Random(7)
    start = 0
    cycles = 30 if SOAK else 8
    for policy in ("never", "batch", "always"):
        for _ in range(cycles):
            proc = spawn("loop", str(path), str(run), policy, str(start))
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, 0.03))
            proc.send_signal(signal.SIGKILL)
            out, _ = proc.communicate(timeout=60)
            acked = [line.split()[0] for line in out.splitlines()]
            tried = start + len(acked)  # the key in flight when the child died, if any
            # Another process retries every key the dead one may have started.
            retry = spawn(
                "retry", str(path), str(run), policy, *(f"k{n}" for n in range(start, tried + 1))
            )
            finish(retry)
            start = tried + 1
    stored = stored_keys(path, run)
    assert sorted(stored, key=lambda k: int(k[1:])) == [f"k{n}" for n in range(start)]
    assert all(len(held) == 1 for held in stored.values()), "a key was stored twice"
    seqs = sorted(held[0][0] for held in stored.values())
    assert seqs == list(range(1, len(seqs) + 1))
