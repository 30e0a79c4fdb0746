"""The writer-descriptor LRU: at most ``max_open_files`` descriptors held by idle runs.

Strategy and invariants
- A run that opens descriptors for writing is ``touch``ed; past the capacity (two
  descriptors per run: segment and index), the least recently touched runs release theirs.
- Eviction never blocks and never waits for a commit: a run whose commit lock is held is
  skipped and tried again at the next touch. A run's descriptors are reopened on its next
  append; closing them loses nothing (the page cache keeps the bytes, and an fdatasync on a
  new descriptor flushes them).
- Readers open their own descriptors per call, so eviction never pulls one from under them.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from typing import Any

__all__ = ["Handles"]


class Handles:
    """Runs holding writer descriptors, least recently used first."""

    def __init__(self, max_open_files: int) -> None:
        self.capacity = max(1, max_open_files // 2)
        self._lru: OrderedDict[uuid.UUID, Any] = OrderedDict()
        self._lock = threading.Lock()

    def touch(self, run: Any) -> None:
        """Note that ``run`` holds descriptors; release idle runs' past the capacity."""
        with self._lock:
            self._lru[run.id] = run
            self._lru.move_to_end(run.id)
            over = len(self._lru) - self.capacity
            if over <= 0:
                return
            victims = [r for r in self._lru.values() if r is not run][: over + 4]
        for victim in victims:
            if victim.release_files(blocking=False):
                with self._lock:
                    self._lru.pop(victim.id, None)
                over -= 1
                if over <= 0:
                    break

    def forget(self, run: Any) -> None:
        """``run`` closed its descriptors by itself."""
        with self._lock:
            self._lru.pop(run.id, None)

    def open_files(self) -> int:
        """Descriptors held by the runs in the LRU."""
        with self._lock:
            runs = list(self._lru.values())
        return sum(r.open_files for r in runs)

    def clear(self) -> None:
        """Forget every run (at close)."""
        with self._lock:
            self._lru.clear()
