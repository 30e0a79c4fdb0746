"""The descriptor LRU: at most ``max_open_files`` descriptors held by idle runs.

Strategy and invariants
- A run that opens descriptors for writing, or maps its state record (which holds one), is
  ``touch``ed; past the capacity (three descriptors per run: segment, index and state
  record), the least recently touched runs release theirs, writers and readers alike.
- Eviction never blocks and never waits for a commit: a run whose commit lock is held is
  skipped and tried again at the next touch. A run's descriptors are reopened on its next
  append; closing them loses nothing (the page cache keeps the bytes, and an fdatasync on a
  new descriptor flushes them).
- Readers open their own descriptors per call, so eviction never pulls one from under them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from itertools import islice
from typing import Any

__all__ = ["Handles"]


class Handles:
    """Runs holding writer descriptors, least recently used first."""

    def __init__(self, max_open_files: int) -> None:
        self.capacity = max(1, max_open_files // 3)
        # Keyed by the run object itself: its identity hash is far cheaper than a UUID's.
        self._lru: OrderedDict[Any, None] = OrderedDict()
        self._lock = threading.Lock()

    def touch(self, run: Any) -> None:
        """Note that ``run`` holds descriptors; release idle runs' past the capacity."""
        with self._lock:
            self._lru[run] = None
            self._lru.move_to_end(run)
            over = len(self._lru) - self.capacity
            if over <= 0:
                return
            victims = [r for r in islice(self._lru, over + 4) if r is not run]
        for victim in victims:
            if victim.release_files(blocking=False):
                with self._lock:
                    self._lru.pop(victim, None)
                over -= 1
                if over <= 0:
                    break

    def forget(self, run: Any) -> None:
        """``run`` closed its descriptors by itself."""
        with self._lock:
            self._lru.pop(run, None)

    def open_files(self) -> int:
        """Descriptors held by the runs in the LRU."""
        with self._lock:
            runs = list(self._lru)
        return sum(r.open_files for r in runs)

    def clear(self) -> None:
        """Forget every run (at close)."""
        with self._lock:
            self._lru.clear()
