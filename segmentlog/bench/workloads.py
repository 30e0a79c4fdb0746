"""The segmentlog side of every workload, written against the public API only.

Strategy and invariants
- Each function does one measured job on a log it opens itself and returns a ``Sample`` whose
  unit its workload names. Opening a log to *write* is inside the timed region only where the
  job includes it (the reopen workloads); closing is always inside it for writers, because a
  non-durable log may still hold bytes in memory until ``close``.
- Readers open the log before the clock starts, as the SQLite baseline connects before its
  clock starts. They open it as the writer process would (not ``read_only``): reads served by
  the process that appends are the common case, and a read-only opener also rescans the
  run's directory on every call to see another process's appends.
- Fixtures (a store to replay, runs to seek in) are written with ``import_envelopes`` from the
  same stamped envelopes the baselines' fixtures get, so all contenders read identical records.
- ``kill_writer`` runs in a spawned child and dies by SIGKILL with the log open, which is how
  the recovery workloads get a directory a crashed writer left behind.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Iterable
from typing import Any

import segmentlog

from ..events import Envelope
from ..frames import (
    FrameEncoder,
)
from .data import Stamper
from .timing import Sample, latency_sample, peak_rss_kib, percentile, rss_kib, run_threads

__all__ = [
    "LOG_NAME",
    "SegmentlogBuilder",
    "add_torn_tail",
    "kill_writer",
    "seg_append",
    "seg_append_batches",
    "seg_append_threads",
    "seg_open_runs",
    "seg_open_runs_probe",
    "seg_reopen_after_kill",
    "seg_replay",
    "seg_replay_probe",
    "seg_seek",
]

LOG_NAME = "log"


def _log_path(directory: str) -> str:
    return os.path.join(directory, LOG_NAME)


def seg_append(directory: str, events: list[Any], fsync: str) -> Sample:
    """``append`` one event per call, then ``close``. Value: events per second."""
    log = segmentlog.open(_log_path(directory), fsync=fsync)
    append = log.append
    start = time.perf_counter()
    for event in events:
        append(event)
    log.close()
    elapsed = time.perf_counter() - start
    return Sample(len(events) / elapsed, {"seconds": elapsed})


def seg_append_batches(directory: str, batches: list[list[Any]], fsync: str) -> Sample:
    """``append_batch`` per batch, then ``close``. Value: events per second."""
    log = segmentlog.open(_log_path(directory), fsync=fsync)
    append_batch = log.append_batch
    count = sum(len(b) for b in batches)
    start = time.perf_counter()
    for batch in batches:
        append_batch(batch)
    log.close()
    elapsed = time.perf_counter() - start
    return Sample(count / elapsed, {"seconds": elapsed})


def seg_append_threads(directory: str, per_thread: list[list[Any]], fsync: str) -> Sample:
    """Each thread appends its list of events (its own run, or a shared one), one per call.

    With ``fsync="batch"`` concurrent appends share fsyncs (group commit).
    """
    log = segmentlog.open(_log_path(directory), fsync=fsync)
    try:
        elapsed = run_threads(per_thread, log.append)
        stats = log.stats()
    finally:
        log.close()
    count = sum(len(x) for x in per_thread)
    return Sample(
        count / elapsed,
        {"seconds": elapsed, "fsyncs": float(stats.fsyncs), "appends": float(stats.appends)},
    )


class SegmentlogBuilder:
    """Fills a log with already stamped envelopes (fixture, not timed).

    By default it writes as an application would, under the default fsync policy, so the
    frames' durable marks are real and a reader's first touch of a run validates only its
    tail. (Under ``fsync="never"`` nothing is known durable, and recovery rescans the whole
    last segment of every run it touches: a real cost of that policy, measured by the
    recovery workloads, not something a replay or seek should pay for its fixture.)
    """

    def __init__(self, directory: str, fsync: str = "batch") -> None:
        self._log = segmentlog.open(_log_path(directory), fsync=fsync)

    def add(self, envelopes: Iterable[Envelope[Any]]) -> None:
        """Import envelopes, keeping their ids, seqs and timestamps."""
        self._log.import_envelopes(list(envelopes))

    def close(self) -> None:
        """Close the log (everything written reaches the OS)."""
        self._log.close()


def _read_all(log: Any, limit: int) -> int:
    count = 0
    list_after = log.list_after
    for run_id in log.runs():
        after: int | None = None
        while True:
            page = list_after(run_id, after_seq=after, limit=limit)
            if not page:
                break
            count += len(page)
            after = page[-1].seq
            if len(page) < limit:
                break
    return count


def seg_replay(directory: str, limit: int) -> Sample:
    """Read every event of every run with ``list_after`` paging. Value: events per second."""
    log = segmentlog.open(_log_path(directory))
    start = time.perf_counter()
    count = _read_all(log, limit)
    elapsed = time.perf_counter() - start
    log.close()
    return Sample(count / elapsed, {"seconds": elapsed, "events": count})


def seg_replay_probe(directory: str, limit: int) -> dict[str, float]:
    """Child-process memory probe of ``seg_replay``."""
    before = rss_kib()
    log = segmentlog.open(_log_path(directory))
    count = _read_all(log, limit)
    log.close()
    return {"rss_before_kib": before, "peak_rss_kib": peak_rss_kib(), "events": count}


def seg_seek(
    directory: str, run_id: uuid.UUID, run_events: int, probes: int, limit: int, seed: int
) -> Sample:
    """Latency of one ``list_after(run, after_seq=k, limit)`` at random k.

    Value: p50 in microseconds (p90 and p99 in the extras).
    """
    log = segmentlog.open(_log_path(directory))
    list_after = log.list_after
    rng = random.Random(seed)
    top = max(1, run_events - limit)
    latencies: list[int] = []
    clock = time.perf_counter_ns
    list_after(run_id, after_seq=0, limit=1)  # the run's files are open, as in a live reader
    for _ in range(probes):
        k = rng.randrange(top)
        t0 = clock()
        page = list_after(run_id, after_seq=k, limit=limit)
        latencies.append(clock() - t0)
        if not page or page[0].seq != k + 1:
            raise AssertionError(f"seek after {k} returned {page[:1]!r}")
    log.close()
    return latency_sample(latencies)


def kill_writer(directory: str, runs: dict[uuid.UUID, list[Any]]) -> None:
    """Child process: append to every run in turn, then die by SIGKILL with the log open."""
    log = segmentlog.open(_log_path(directory), fsync="never")
    lists = list(runs.values())
    for i in range(max(len(x) for x in lists)):
        for events in lists:
            if i < len(events):
                log.append(events[i])
    log.sync()  # what was appended reaches the OS; the kill then skips close()
    os.kill(os.getpid(), 9)


def add_torn_tail(directory: str, run_id: uuid.UUID, event: Any) -> int:
    """Append the first half of a valid frame to ``run_id``'s last segment; return its size."""
    run_dir = os.path.join(_log_path(directory), "runs", str(run_id))
    segments = sorted(n for n in os.listdir(run_dir) if n.endswith(".seg"))
    buf = bytearray()
    FrameEncoder().encode(buf, Stamper().stamp(event), 0)
    torn = bytes(buf[: len(buf) // 2])
    with open(os.path.join(run_dir, segments[-1]), "ab") as f:
        f.write(torn)
    return len(torn)


def seg_reopen_after_kill(directory: str) -> Sample:
    """Open a log left by a killed writer and read every run's last seq. Value: seconds."""
    start = time.perf_counter()
    log = segmentlog.open(_log_path(directory))
    runs = log.runs()
    for run_id in runs:
        log.last_seq(run_id)
    dropped = sum(r.bytes_dropped for r in log.recovery_reports)
    log.close()
    elapsed = time.perf_counter() - start
    return Sample(elapsed, {"runs": len(runs), "bytes_dropped": dropped})


def _open_runs(directory: str) -> int:
    log = segmentlog.open(_log_path(directory))
    count = len(log.runs())
    log.close()
    return count


def seg_open_runs(directory: str) -> Sample:
    """Open a log, list its runs and close it. Value: seconds."""
    start = time.perf_counter()
    count = _open_runs(directory)
    elapsed = time.perf_counter() - start
    return Sample(elapsed, {"runs": count})


def seg_open_runs_probe(directory: str) -> dict[str, float]:
    """Child-process memory probe of ``seg_open_runs``."""
    before = rss_kib()
    count = _open_runs(directory)
    return {"rss_before_kib": before, "peak_rss_kib": peak_rss_kib(), "runs": count}


# --- asyncio: event-loop lag under many appending coroutines -----------------------------


async def measure_loop_lag(
    path: str, coroutines: int, appends_each: int, tick: float = 0.001
) -> tuple[list[float], list[Envelope[Any]], int]:
    """Loop lag samples (seconds a ``tick`` sleep overshot) while ``coroutines`` tasks each
    ``await log.append`` ``appends_each`` times under ``fsync="batch"``; with
    ``coroutines=0`` the ticker runs alone on an idle loop. Returns the lags, the envelopes and
    the fsync count."""
    import asyncio

    from .. import aio
    from ..events import RunStarted, TextDelta

    lags: list[float] = []
    async with aio.open(path, fsync="batch") as log:
        run = uuid.uuid4()
        await log.append(RunStarted(run_id=run, session_id=uuid.uuid4(), provider="p", model="m"))
        stop = asyncio.Event()

        async def ticker() -> None:
            while not stop.is_set():
                start = time.perf_counter()
                await asyncio.sleep(tick)
                lags.append(time.perf_counter() - start - tick)

        async def appender(i: int) -> list[Envelope[Any]]:
            return [
                await log.append(TextDelta(run_id=run, delta=f"{i}.{j}"))
                for j in range(appends_each)
            ]

        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(tick * 5)
        if coroutines:
            results = await asyncio.gather(*(appender(i) for i in range(coroutines)))
        else:
            results = []
            await asyncio.sleep(0.5)
        stop.set()
        await ticking
        fsyncs = log.stats().fsyncs
    return lags, [env for envs in results for env in envs], fsyncs


def aio_loop_lag(directory: str, coroutines: int, appends_each: int) -> Sample:
    """p99 event-loop lag (microseconds) of a 1 ms ticker while coroutines append."""
    import asyncio

    start = time.perf_counter()
    lags, envs, fsyncs = asyncio.run(
        measure_loop_lag(_log_path(directory), coroutines, appends_each)
    )
    elapsed = time.perf_counter() - start
    ordered = sorted(lag * 1e6 for lag in lags)
    return Sample(
        percentile(ordered, 99),
        {
            "p50_us": percentile(ordered, 50),
            "max_us": ordered[-1] if ordered else 0.0,
            "appends": float(len(envs)),
            "appends_per_s": len(envs) / elapsed,
            "fsyncs": float(fsyncs),
        },
    )
