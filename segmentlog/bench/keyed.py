"""Keyed (idempotent) appends: what a key costs, and the first keyed append to a long run.

Strategy and invariants
- ``append(event, key=...)`` is called through ``Any``: the harness must import and type-check
  on builds whose ``SegmentLog.append`` has no ``key`` yet; ``features.missing("key")`` keeps
  these functions from being called there.
- The keyed and unkeyed sides append the same events to fresh logs under the same policy;
  the keys are distinct strings made before the clock starts.
- The long-run workload reopens a fixture run of N keyed events and times ``open`` plus the
  first keyed append (a new key, so the engine must know the key is not taken: whatever
  lookup structure it uses has to be found or rebuilt after the reopen). Each repetition adds
  one event with a new key, so the fixture is not copied between repetitions.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from typing import Any

import segmentlog

from .data import make_run_events
from .timing import Sample

__all__ = ["build_keyed_run", "first_keyed_append", "seg_append_keyed"]

_fresh_keys = itertools.count()


def seg_append_keyed(directory: str, events: list[Any], fsync: str, keyed: bool) -> Sample:
    """``append`` one event per call, each with a distinct key when ``keyed``. Events/s."""
    keys = [f"key-{i}" for i in range(len(events))]
    log = segmentlog.open(os.path.join(directory, "log"), fsync=fsync)
    append: Any = log.append
    start = time.perf_counter()
    if keyed:
        for event, key in zip(events, keys, strict=True):
            append(event, key=key)
    else:
        for event in events:
            append(event)
    log.close()
    elapsed = time.perf_counter() - start
    return Sample(len(events) / elapsed, {"seconds": elapsed})


def build_keyed_run(directory: str, events: int) -> uuid.UUID:
    """A log at ``directory`` holding one run of ``events`` keyed events (fixture, untimed)."""
    run = uuid.UUID(int=0x4B3D, version=4)
    with segmentlog.open(directory, fsync="never") as log:
        append: Any = log.append
        for start in range(0, events, 10_000):
            stop = min(events, start + 10_000)
            chunk = make_run_events(run, events + 1, 31, start=start, stop=stop)
            for n, event in enumerate(chunk, start):
                append(event, key=f"fixture-{n}")
    return run


def first_keyed_append(directory: str, run: uuid.UUID) -> Sample:
    """Reopen the fixture and append one event with a new key. Value: seconds, open included."""
    event = segmentlog.TextDelta(run_id=run, delta="after the reopen")
    key = f"new-{os.getpid()}-{next(_fresh_keys)}-{time.time_ns()}"
    start = time.perf_counter()
    log = segmentlog.open(directory, fsync="never")
    append: Any = log.append
    env = append(event, key=key)
    elapsed = time.perf_counter() - start
    log.close()
    return Sample(elapsed, {"seq": float(env.seq)})
