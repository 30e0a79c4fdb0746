"""Retention: which whole runs to delete, by age and by total size.

Strategy and invariants
- Retention only ever deletes whole runs, through ``delete_run`` (a rename into ``trash/``
  and directory fsyncs), so a run is either wholly present or gone; segments are never
  compacted or rewritten.
- By default only finished runs (last event terminal) are candidates. Oldest first, by the
  modification time of a run's newest segment.
- Quarantined bytes are not runs: retention and ``delete_run`` leave ``quarantine/`` alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Protocol

__all__ = ["RunSummary", "select_for_deletion"]


class RunSummary(Protocol):
    """What retention needs to know of a run (``RunInfo`` has it)."""

    @property
    def run_id(self) -> uuid.UUID: ...
    @property
    def bytes(self) -> int: ...
    @property
    def terminal(self) -> bool: ...
    @property
    def mtime(self) -> float: ...


def select_for_deletion(
    infos: Iterable[RunSummary],
    now: float,
    max_age: float | None,
    max_bytes: int | None,
    only_terminal: bool,
) -> list[uuid.UUID]:
    """Runs older than ``max_age`` seconds, then the oldest until at most ``max_bytes`` stay."""
    ordered = sorted(infos, key=lambda info: info.mtime)
    total = sum(info.bytes for info in ordered)
    chosen: list[uuid.UUID] = []
    for info in ordered:
        if only_terminal and not info.terminal:
            continue
        too_old = max_age is not None and now - info.mtime > max_age
        too_big = max_bytes is not None and total > max_bytes
        if too_old or too_big:
            chosen.append(info.run_id)
            total -= info.bytes
    return chosen
