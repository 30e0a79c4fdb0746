"""The interleaved runner: prepare a group, measure its workloads, probe memory, clean up.

Strategy and invariants
- Workloads come in groups that share inputs and fixtures. A group is prepared once, all its
  workloads run, then its fixtures are deleted, so the disk never holds more than one
  group's data. A group none of whose workloads this build can run is not even prepared.
- Within a workload every repetition runs segmentlog and each baseline once, back to back
  (interleaved), on a fresh scratch directory each. Odd repetitions run them in reverse order,
  so neither side always runs first (warm caches, CPU frequency, background writeback).
- Every ratio is "higher is better": contender ÷ baseline for throughputs, baseline ÷
  contender for latencies and durations. It is computed from medians of the repetitions.
- A baseline can be another measurement, a reference to a workload measured earlier in the
  same run (``ref``), or a constant limit (``constant``: e.g. a 1 s reopen budget).
- Memory is probed once per group in spawned children, after the timed repetitions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import shutil
import statistics
import time
from collections.abc import Callable
from typing import Any

from .model import Group, Workload
from .timing import Sample, in_child

__all__ = ["fresh", "run_suite", "selected", "steps"]


def fresh(path: str) -> str:
    """An empty directory at ``path`` (whatever was there is removed)."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def _dir_bytes(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(root, name))
    return total


def _median_extra(samples: list[Sample]) -> dict[str, float]:
    keys = {k for s in samples for k in s.extra}
    return {k: statistics.median(s.extra[k] for s in samples if k in s.extra) for k in sorted(keys)}


def _ratio(subject: float, baseline: float, higher_is_better: bool) -> float | None:
    if subject <= 0 or baseline <= 0:
        return None
    return subject / baseline if higher_is_better else baseline / subject


def selected(groups: list[Group], only: list[str] | None) -> list[Group]:
    """Keep the groups and workloads named (by id or id prefix) in ``only``."""
    if not only:
        return groups
    out = []
    for g in groups:
        if any(g.id == o for o in only):
            out.append(g)
            continue
        ws = [w for w in g.workloads if any(w.id == o or w.id.startswith(o) for o in only)]
        if ws:
            out.append(dataclasses.replace(g, workloads=ws, probes=[]))
    return out


def _runnable(w: Workload) -> list[Any]:
    if w.unavailable is not None:
        return []
    return [c for c in [w.subject, *w.baselines] if c.run is not None]


def steps(groups: list[Group], repeat: int) -> int:
    """Progress units for running ``groups``: preparations, measurements, probes."""
    total = 0
    for g in groups:
        if not g.runnable:
            continue
        total += 1 + len(g.probes)
        total += sum(repeat * len(_runnable(w)) for w in g.workloads)
    return total


def _unavailable_entry(g: Group, w: Workload) -> dict[str, Any]:
    return {
        "id": w.id,
        "group": g.id,
        "title": w.title,
        "unit": w.unit,
        "higher_is_better": w.higher_is_better,
        "note": w.note,
        "available": False,
        "unavailable": w.unavailable,
        "segmentlog": None,
        "baselines": [
            {"id": b.id, "title": b.title, "target": b.target, "ratio": None, "met": None}
            for b in w.baselines
        ],
    }


def _measure(
    w: Workload, repeat: int, scratch: str, advance: Callable[[str], None]
) -> dict[str, list[Sample]]:
    contenders = _runnable(w)
    samples: dict[str, list[Sample]] = {c.id: [] for c in contenders}
    for rep in range(repeat):
        order = contenders if rep % 2 == 0 else contenders[::-1]
        for c in order:
            advance(f"{w.id}: {c.id} ({rep + 1}/{repeat})")
            d = fresh(os.path.join(scratch, "m"))
            gc.collect()
            samples[c.id].append(c.run(d))
            shutil.rmtree(d, ignore_errors=True)
    return samples


def _entry(
    g: Group, w: Workload, samples: dict[str, list[Sample]], earlier: dict[str, list[float]]
) -> dict[str, Any]:
    subj = [s.value for s in samples[w.subject.id]]
    earlier[w.id] = subj
    subj_median = statistics.median(subj)
    entry: dict[str, Any] = {
        "id": w.id,
        "group": g.id,
        "title": w.title,
        "unit": w.unit,
        "higher_is_better": w.higher_is_better,
        "note": w.note,
        "available": True,
        "details": list(w.details),
        "segmentlog": {
            "samples": subj,
            "median": subj_median,
            "extra": _median_extra(samples[w.subject.id]),
        },
        "baselines": [],
    }
    for b in w.baselines:
        extra: dict[str, float] = {}
        if b.run is not None:
            values = [s.value for s in samples[b.id]]
            extra = _median_extra(samples[b.id])
            kind = "measured"
        elif b.ref is not None:
            values = earlier.get(b.ref, [])
            kind = f"ref:{b.ref}"
        else:
            assert b.constant is not None
            values = [b.constant]
            kind = "constant"
        median = statistics.median(values) if values else None
        ratio = _ratio(subj_median, median, w.higher_is_better) if median else None
        entry["baselines"].append(
            {
                "id": b.id,
                "title": b.title,
                "kind": kind,
                "samples": values,
                "median": median,
                "extra": extra,
                "ratio": ratio,
                "target": b.target,
                "met": None if b.target is None or ratio is None else ratio >= b.target,
            }
        )
    return entry


def run_suite(
    groups: list[Group],
    repeat: int,
    scratch: str,
    fixtures: str,
    advance: Callable[[str], None],
) -> dict[str, Any]:
    """Run ``groups`` and return the results (see ``report`` for the layout).

    ``advance(status)`` is called after each unit of progress with a description of the next.
    """
    results: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    earlier: dict[str, list[float]] = {}
    for g in groups:
        if not g.runnable:
            results.extend(_unavailable_entry(g, w) for w in g.workloads)
            continue
        advance(f"preparing {g.title}")
        t0 = time.perf_counter()
        if g.prepare is not None:
            g.prepare()
        prep_s = time.perf_counter() - t0
        for w in g.workloads:
            if w.unavailable is not None:
                results.append(_unavailable_entry(g, w))
                continue
            entry = _entry(g, w, _measure(w, repeat, scratch, advance), earlier)
            entry["prepare_seconds"] = prep_s
            results.append(entry)
        for p in g.probes:
            advance(f"memory: {p.id}")
            got = in_child(p.fn, *p.args)
            row: dict[str, Any] = {"id": p.id, "title": p.title, "group": g.id}
            row["peak_rss_mib"] = got.pop("peak_rss_kib") / 1024
            row["rss_before_mib"] = got.pop("rss_before_kib") / 1024
            if p.store is not None:
                row["store_mib"] = _dir_bytes(p.store) / 2**20
            row.update(got)
            memory.append(row)
        if g.cleanup is not None:
            g.cleanup()
        shutil.rmtree(fixtures, ignore_errors=True)
        os.makedirs(fixtures, exist_ok=True)
    advance("done")
    return {"workloads": results, "memory": memory}
