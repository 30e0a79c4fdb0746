"""The kill -9 oracle: a real child process appends, the parent SIGKILLs it at random moments.

The child (``kill9_child.py``) prints every acknowledged ``run seq event_id`` after ``append``
returns. The parent kills it with SIGKILL a random moment after it is ready, reopens the log on
the real file system, and checks that every acknowledged seq is present with the same event id,
and that every run is gapless from seq 1 with no duplicates. The same directory is reused for
every cycle, so later cycles also recover what earlier kills left behind. SIGKILL leaves the page
cache intact, so this holds under every policy; ``always`` and ``batch`` (with several threads,
group commit) are the ones run here. ``SEGMENTLOG_SOAK=1`` runs many more cycles.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import segmentlog

from .children import kill_and_read
from .model import read_run

SOAK = os.environ.get("SEGMENTLOG_SOAK") == "1"
CYCLES = 500 if SOAK else 50
CHILD = Path(__file__).with_name("kill9_child.py")


def _one_cycle(path: Path, policy: str, threads: int, rng: random.Random) -> dict[str, int]:
    """Start the child, kill it mid-append, return the acknowledged ``event_id -> seq`` lines."""
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(path), policy, str(threads), str(rng.randrange(1 << 30))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out = kill_and_read(proc, rng.uniform(0.0, 0.12))
    acked: dict[str, int] = {}
    for line in out.split(b"\n")[:-1]:  # the last piece is an unfinished line (or empty)
        run_id, seq, event_id = line.decode().split()
        acked[f"{run_id} {event_id}"] = int(seq)
    return acked


def test_lines_printed_together_with_ready_all_reach_the_oracle() -> None:
    """The parent's first ``readline`` buffers whatever followed ``ready`` in the pipe; every
    such line is a promise and must be read (``communicate()`` dropped them)."""
    code = (
        "import sys, time\n"
        "sys.stdout.write('ready\\n' + ''.join(f'{i}\\n' for i in range(2000)))\n"
        "sys.stdout.flush()\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out = kill_and_read(proc, 0.0)
    assert out.split(b"\n")[:-1] == [str(i).encode() for i in range(2000)]


@pytest.mark.parametrize(("policy", "threads"), [("always", 1), ("batch", 4)])
def test_every_acknowledged_append_survives_sigkill(
    tmp_path: Path, policy: str, threads: int
) -> None:
    rng = random.Random(f"kill9-{policy}-{threads}")
    path = tmp_path / "log"
    promised: dict[str, int] = {}
    total_acked = 0
    for cycle in range(CYCLES):
        acked = _one_cycle(path, policy, threads, rng)
        total_acked += len(acked)
        promised.update(acked)
        with segmentlog.open(path) as log:  # type: ignore[attr-defined]
            stored: dict[str, int] = {}
            for run_id in log.runs():
                envs = read_run(log, run_id, page=1000)
                seqs = [e.seq for e in envs]
                assert seqs == list(range(1, len(seqs) + 1)), (
                    f"cycle {cycle}: run {run_id} is not gapless from 1 (or has duplicates)"
                )
                ids = {e.event_id for e in envs}
                assert len(ids) == len(envs), f"cycle {cycle}: duplicate event ids in {run_id}"
                stored.update({f"{run_id} {e.event_id}": e.seq for e in envs})
            missing = {k: v for k, v in promised.items() if stored.get(k) != v}
            assert not missing, (
                f"cycle {cycle}: {len(missing)} acknowledged appends missing or renumbered, "
                f"e.g. {sorted(missing.items(), key=lambda kv: kv[1])[:5]}"
            )
    assert total_acked > CYCLES, "the child acknowledged almost nothing; the test proves little"
    assert len({uuid.UUID(k.split()[0]) for k in promised}) == threads
