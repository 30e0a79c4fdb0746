"""Several writer processes on one log (``multiprocess=True``), and SQLite doing the same.

Strategy and invariants
- Writers are separate interpreters started with ``multiprocessing``'s ``spawn`` context (not
  forks of a benchmark that already holds data and open logs). Each opens the log itself,
  then all wait at one barrier, so opening is not timed and they start together.
- Each child times its own work with ``time.perf_counter`` (CLOCK_MONOTONIC, shared by every
  process on Linux) from the barrier to the end of its ``close()``; the throughput is all
  events over the span from the first start to the last end.
- Appends per fsync is the sum of the children's ``stats().appends`` over the sum of their
  ``stats().fsyncs``.
- SQLite gets the same processes, events and envelopes: WAL, ``synchronous=FULL``, one
  connection per process, and each insert in a ``BEGIN IMMEDIATE`` transaction that reads the
  run's ``MAX(seq)`` first: the way several processes must assign gapless seqs to one run.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import sqlite3
import time
from typing import Any

import msgspec

import segmentlog

from .baselines import DB_NAME, sqlite_connect
from .data import Stamper, envelope_encoder
from .timing import Sample, quietly

__all__ = ["seg_processes", "sqlite_processes"]

_MAX_SEQ = "SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = ?"
_INSERT = "INSERT INTO events (run_id, seq, payload) VALUES (?, ?, ?)"
_TIMEOUT = 600.0


def _seg_child(
    path: str, events: list[Any], fsync: str, options: dict[str, Any], barrier: Any, out: Any
) -> None:
    log = segmentlog.open(path, fsync=fsync, **options)
    append = log.append
    barrier.wait(_TIMEOUT)
    start = time.perf_counter()
    for event in events:
        append(event)
    stats = log.stats()
    log.close()
    out.put((start, time.perf_counter(), len(events), stats.appends, stats.fsyncs))


def _sqlite_child(directory: str, events: list[Any], barrier: Any, out: Any) -> None:
    conn = sqlite3.connect(os.path.join(directory, DB_NAME), isolation_level=None, timeout=60)
    conn.execute("PRAGMA synchronous=FULL")
    stamp = Stamper().stamp
    encode = envelope_encoder().encode
    execute = conn.execute
    barrier.wait(_TIMEOUT)
    start = time.perf_counter()
    for event in events:
        key = event.run_id.bytes
        execute("BEGIN IMMEDIATE")
        (last,) = execute(_MAX_SEQ, (key,)).fetchone()
        env = msgspec.structs.replace(stamp(event), seq=last + 1)
        execute(_INSERT, (key, env.seq, encode(env)))
        execute("COMMIT")
    conn.close()
    out.put((start, time.perf_counter(), len(events), 0, 0))


def _spawn(target: Any, per_process: list[list[Any]], *args: Any) -> Sample:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(per_process))
    out = ctx.Queue()
    procs = [
        ctx.Process(target=quietly, args=(target, args[0], events, *args[1:], barrier, out))
        for events in per_process
    ]
    for p in procs:
        p.start()
    results: list[tuple[float, float, int, int, int]] = []
    deadline = time.monotonic() + _TIMEOUT
    try:
        while len(results) < len(procs):
            try:
                results.append(out.get(timeout=0.5))
            except queue.Empty:
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(f"a writer process failed (exit codes {dead})") from None
    finally:
        for p in procs:
            p.join(5 if len(results) < len(procs) else _TIMEOUT)
            if p.exitcode is None:
                p.kill()
                p.join()
    start = min(r[0] for r in results)
    elapsed = max(r[1] for r in results) - start
    count = sum(r[2] for r in results)
    appends, fsyncs = sum(r[3] for r in results), sum(r[4] for r in results)
    extra = {"seconds": elapsed, "processes": float(len(procs))}
    if fsyncs:
        extra["appends_per_fsync"] = appends / fsyncs
    return Sample(count / elapsed, extra)


def seg_processes(
    directory: str, per_process: list[list[Any]], fsync: str, **options: Any
) -> Sample:
    """One spawned process per list, each appending its events one per call to the same log
    (opened with ``options``, e.g. ``multiprocess=True``). Value: events per second, all
    processes together."""
    path = os.path.join(directory, "log")
    segmentlog.open(path, fsync=fsync, **options).close()  # the directory exists before them
    return _spawn(_seg_child, per_process, path, fsync, options)


def sqlite_processes(directory: str, per_process: list[list[Any]]) -> Sample:
    """The same with SQLite (WAL, ``synchronous=FULL``), one connection per process."""
    sqlite_connect(directory, "FULL").close()  # schema and WAL mode before the writers start
    return _spawn(_sqlite_child, per_process, directory)
