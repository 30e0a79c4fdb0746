"""The descriptor LRU: at most ``max_open_files`` descriptors held by idle runs.

Strategy and invariants
- A run that opens descriptors for writing, or maps its state record (which holds one), is
  ``touch``ed, and the LRU notes how many it holds (its segment, its index, its state
  record: one to three). Past ``max_open_files`` in all, the least recently touched runs
  release theirs, writers and readers alike (and past half the process's ``ulimit -n``,
  whichever is lower). A run's count is taken at its touches, so an index opened between
  two touches is counted from the next one.
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
    """Runs holding descriptors, least recently used first, with what each held."""

    def __init__(self, max_open_files: int, process_limit: int | None = None) -> None:
        #: At most ``max_open_files``, and never over half the process's own limit (the
        #: rest is left to the application, readers' per-call descriptors and sockets).
        limit = max_open_files if process_limit is None else min(max_open_files, process_limit // 2)
        self.capacity = max(1, limit)
        # Keyed by the run object itself: its identity hash is far cheaper than a UUID's.
        # The value: the descriptors the run held at its last touch.
        self._lru: OrderedDict[Any, int] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()

    def touch(self, run: Any) -> None:
        """Note that ``run`` holds descriptors; release idle runs' past the capacity."""
        held = run.open_files
        with self._lock:
            self._total += held - self._lru.get(run, 0)
            self._lru[run] = held
            self._lru.move_to_end(run)
            over = self._total - self.capacity
            if over <= 0:
                return
            victims = [r for r in islice(self._lru, over + 4) if r is not run]
        for victim in victims:
            if victim.release_files(blocking=False):
                with self._lock:
                    self._total -= self._lru.pop(victim, 0)
                    if self._total <= self.capacity:
                        break

    def forget(self, run: Any) -> None:
        """``run`` closed its descriptors by itself."""
        with self._lock:
            self._total -= self._lru.pop(run, 0)

    def open_files(self) -> int:
        """Descriptors held by the runs in the LRU."""
        with self._lock:
            runs = list(self._lru)
        return sum(r.open_files for r in runs)

    def clear(self) -> None:
        """Forget every run (at close)."""
        with self._lock:
            self._lru.clear()
            self._total = 0
