"""Before/after: the durable path and run creation of whichever segmentlog is importable.

``segmentlog bench`` measures the engine against its baselines; this script measures two
*versions* of the engine against each other, through the public API only (``open``,
``append``, ``stats``), so it runs unchanged against an older checkout::

    git worktree add /tmp/before <old commit>
    for i in 1 2 3; do
        PYTHONPATH=/tmp/before python benchmarks/compare_engines.py --label before
        python benchmarks/compare_engines.py --label after
    done

Each call prints one JSON line: new runs per second under ``never`` and ``batch`` (the first
append to a fresh run), ``always`` with 1 thread, ``batch`` with 1, 4 and 16 threads on one
run (throughput and appends per fsync), and SQLite ``synchronous=FULL`` with 1 thread as a
yardstick of the disk at that moment. Alternate the two labels and compare medians: the disk
of a shared machine drifts between calls.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import segmentlog
from segmentlog import TextDelta


def _event(run: uuid.UUID, n: int) -> TextDelta:
    return TextDelta(run_id=run, delta=f"chunk {n} " + "x" * 100)


def new_runs(root: Path, fsync: str, runs: int) -> float:
    """First appends to ``runs`` fresh runs, per second (close included)."""
    ids = [uuid.uuid4() for _ in range(runs)]
    start = time.perf_counter()
    with segmentlog.open(root / f"new-{fsync}", fsync=fsync) as log:
        for run in ids:
            log.append(_event(run, 0))
    return runs / (time.perf_counter() - start)


def threads_on_one_run(root: Path, fsync: str, threads: int, per_thread: int) -> dict[str, float]:
    """``threads`` threads appending to one run: events/s and appends per fsync."""
    run = uuid.uuid4()
    path = root / f"t{threads}-{fsync}"
    with segmentlog.open(path, fsync=fsync) as log:
        log.append(_event(run, 0))  # the run exists: measure appends, not creation
        before = log.stats()
        barrier = threading.Barrier(threads + 1)

        def work() -> None:
            barrier.wait()
            for n in range(per_thread):
                log.append(_event(run, n))

        pool = [threading.Thread(target=work) for _ in range(threads)]
        for t in pool:
            t.start()
        barrier.wait()
        start = time.perf_counter()
        for t in pool:
            t.join()
        elapsed = time.perf_counter() - start
        after = log.stats()
    appends = after.appends - before.appends
    fsyncs = max(1, after.fsyncs - before.fsyncs)
    return {"events_per_s": appends / elapsed, "appends_per_fsync": appends / fsyncs}


def sqlite_full(root: Path, events: int) -> float:
    """SQLite WAL, ``synchronous=FULL``, one commit per insert: events/s."""
    db = sqlite3.connect(root / "sqlite.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE e (run BLOB, seq INTEGER, payload BLOB, PRIMARY KEY (run, seq))")
    run = uuid.uuid4().bytes
    payload = b"x" * 140
    start = time.perf_counter()
    for seq in range(1, events + 1):
        db.execute("INSERT INTO e VALUES (?, ?, ?)", (run, seq, payload))
    elapsed = time.perf_counter() - start
    db.close()
    return events / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="a name for this engine (before/after)")
    parser.add_argument("--dir", default=None, help="scratch directory's parent (disk to test)")
    parser.add_argument(
        "--events", type=int, default=1000, help="durable appends per workload (default 1000)"
    )
    args = parser.parse_args()
    events = args.events
    result: dict[str, Any] = {"label": args.label, "engine": segmentlog.__file__}
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        root = Path(scratch)
        result["new_runs_never"] = new_runs(root, "never", 2 * events)
        result["new_runs_batch"] = new_runs(root, "batch", max(1, events // 3))
        result["always_t1"] = threads_on_one_run(root, "always", 1, events)
        for threads in (1, 4, 16):
            per_thread = max(1, 4 * events // threads)
            result[f"batch_t{threads}"] = threads_on_one_run(root, "batch", threads, per_thread)
        result["sqlite_full_t1"] = sqlite_full(root, events)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
