"""Measuring: samples, percentiles, and peak memory in a fresh child process.

Strategy and invariants
- A measurement returns one ``Sample``: the headline value (events per second, a latency in
  microseconds or a duration in seconds, as its workload says) plus a few named extras.
- Clocks are ``time.perf_counter`` (monotonic, highest resolution); latencies are taken per call
  with ``perf_counter_ns`` and summarised as percentiles by the nearest-rank rule.
- Peak memory is measured in a child started with ``spawn`` (a clean interpreter, not a fork
  of a parent that already holds the benchmark's data), which reports its own ``VmHWM`` (the
  kernel's high-water mark of resident memory) together with its RSS just before the work,
  so the import cost can be told apart from what the work itself needed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, NamedTuple

__all__ = [
    "Sample",
    "cpu_count",
    "in_child",
    "latency_sample",
    "peak_rss_kib",
    "percentile",
    "quietly",
    "rss_kib",
]


class Sample(NamedTuple):
    """One measurement: ``value`` in the workload's unit, plus named extras."""

    value: float
    extra: dict[str, float]


def run_threads(per_thread: list[list[Any]], work: Callable[[Any], object]) -> float:
    """Start one thread per list, release them together, call ``work(item)`` for each item.

    Returns the seconds from the release until every thread finished; re-raises the first
    error a thread met.
    """
    barrier = threading.Barrier(len(per_thread) + 1)
    errors: list[BaseException] = []

    def worker(items: list[Any]) -> None:
        barrier.wait()
        try:
            for item in items:
                work(item)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(items,)) for items in per_thread]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed


def percentile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0..100) of already sorted values."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, min(len(sorted_values), -(-len(sorted_values) * q // 100)))
    return sorted_values[int(rank) - 1]


def latency_sample(ns: list[int]) -> Sample:
    """Summarise per-call latencies (nanoseconds) as p50 in microseconds, with p90 and p99."""
    values = sorted(x / 1000.0 for x in ns)
    return Sample(
        percentile(values, 50),
        {"p90_us": percentile(values, 90), "p99_us": percentile(values, 99), "calls": len(values)},
    )


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_kib() -> int:
    """This process's resident memory now, in KiB (0 where the platform cannot say)."""
    return _status_kib("VmRSS") or 0


def peak_rss_kib() -> int:
    """This process's peak resident memory so far, in KiB."""
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def in_child(fn: Callable[..., dict[str, float]], *args: Any) -> dict[str, float]:
    """Run ``fn(*args)`` in a fresh spawned interpreter and return its result.

    ``fn`` must be a module-level function (it is pickled by name).
    """
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        result: dict[str, float] = pool.submit(quietly, fn, *args).result()
        return result


def quietly(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn(*args)`` with the engine's log records dropped (in a child process, where
    Python's last-resort handler would print them through the parent's progress bar)."""
    logging.getLogger("segmentlog").addHandler(logging.NullHandler())
    return fn(*args)


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
