"""Which engine features this build has, for the workloads that need them.

Strategy and invariants
- A workload that needs a feature the engine has not landed yet is still defined, listed and
  reported, as "not available in this build", so the table's shape does not depend on the
  build and the row lights up by itself when the feature arrives.
- Detection asks the public API, never a version number: ``multiprocess`` is a field of
  ``LogOptions`` (``segmentlog.open(path, multiprocess=True)``), and keyed appends are a
  ``key`` parameter of ``SegmentLog.append``.
"""

from __future__ import annotations

import dataclasses
import inspect

from ..log import LogOptions, SegmentLog

__all__ = ["has_keyed_append", "has_multiprocess", "missing"]


def has_multiprocess() -> bool:
    """True when ``segmentlog.open`` accepts ``multiprocess=True``."""
    return "multiprocess" in {f.name for f in dataclasses.fields(LogOptions)}


def has_keyed_append() -> bool:
    """True when ``SegmentLog.append`` accepts ``key=``."""
    try:
        return "key" in inspect.signature(SegmentLog.append).parameters
    except (TypeError, ValueError):  # pragma: no cover - a compiled method without a signature
        return False


def missing(feature: str) -> str | None:
    """None when ``feature`` ("multiprocess" or "key") is present, else why a row cannot run."""
    if feature == "multiprocess":
        return None if has_multiprocess() else "LogOptions has no multiprocess option"
    if feature == "key":
        return None if has_keyed_append() else "SegmentLog.append takes no key"
    raise ValueError(f"unknown feature {feature!r}")
