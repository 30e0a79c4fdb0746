"""What a benchmark is made of: contenders, workloads, groups and memory probes.

Strategy and invariants
- A ``Workload`` is segmentlog (the subject) and its baselines doing one job, in one unit.
  Throughputs (``events/s``, ``runs/s``, ``GB/s``) are better high; latencies (``us``) and
  durations (``s``) low. Every ratio is reported "higher is better" (see ``runner``).
- A workload whose engine feature this build lacks carries ``unavailable`` (why): it is
  listed, never run, and reported as "not available in this build" (``features``).
- A ``Group`` shares one preparation step and one fixture directory among its workloads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from .timing import Sample

__all__ = ["RATE_UNITS", "Contender", "Group", "MemoryProbe", "Workload"]

#: Units of throughput (higher is better); every other unit is a time (lower is better).
RATE_UNITS = frozenset({"events/s", "runs/s", "GB/s"})


@dataclasses.dataclass
class Contender:
    """One side of a comparison.

    Exactly one of ``run`` (measure now, in a scratch directory), ``ref`` (the segmentlog samples
    of the workload with that id) or ``constant`` (a fixed value in the workload's unit) is set.
    ``target`` is the minimum ratio the issue asks for, if any.
    """

    id: str
    title: str
    run: Callable[[str], Sample] | None = None
    ref: str | None = None
    constant: float | None = None
    target: float | None = None


@dataclasses.dataclass
class MemoryProbe:
    """A peak-RSS measurement of ``fn(*args)`` in a spawned child."""

    id: str
    title: str
    fn: Callable[..., dict[str, float]]
    args: tuple[Any, ...]
    store: str | None = None  # a directory whose size is reported next to the peak


@dataclasses.dataclass
class Workload:
    """segmentlog and its baselines doing one job."""

    id: str
    title: str
    unit: str  # "events/s", "runs/s", "GB/s", "us" or "s"
    subject: Contender
    baselines: list[Contender]
    note: str = ""
    #: Extras of the segmentlog samples shown in the table's details column.
    details: tuple[str, ...] = ()
    #: Why this build cannot run it (an engine feature it lacks); None when it can.
    unavailable: str | None = None

    @property
    def higher_is_better(self) -> bool:
        """Throughputs are better high; latencies and durations low."""
        return self.unit in RATE_UNITS


@dataclasses.dataclass
class Group:
    """Workloads sharing one preparation step and one fixture directory."""

    id: str
    title: str
    workloads: list[Workload]
    prepare: Callable[[], None] | None = None
    probes: list[MemoryProbe] = dataclasses.field(default_factory=list)
    #: Releases what ``prepare`` made outside the fixture directory (a server schema).
    cleanup: Callable[[], None] | None = None

    @property
    def runnable(self) -> bool:
        """True when at least one workload can run in this build."""
        return any(w.unavailable is None for w in self.workloads)
