"""The in-memory backend for the conformance suite (reopen keeps the same instance)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from segmentlog import MemoryEventStore


class MemoryBackend:
    name = "memory"
    reopens = False

    def __init__(self) -> None:
        self._store: MemoryEventStore | None = None

    def open(self) -> MemoryEventStore:
        if self._store is None:
            self._store = MemoryEventStore()
        return self._store

    def reopen(self) -> MemoryEventStore:
        return self.open()

    def close(self) -> None:
        self._store = None


@contextmanager
def make_backend(tmp_path: Path) -> Iterator[MemoryBackend]:
    backend = MemoryBackend()
    try:
        yield backend
    finally:
        backend.close()
