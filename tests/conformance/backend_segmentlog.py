"""The segment engine as a conformance backend: small segments so tests cross rolls."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import segmentlog


class SegmentLogBackend:
    name = "segmentlog"
    reopens = True

    def __init__(self, path: Path, **options: Any) -> None:
        self.path = path
        self.options = {"fsync": "batch", "segment_bytes": 4096, "index_interval_bytes": 256}
        self.options.update(options)
        self._log: segmentlog.SegmentLog[Any] | None = None

    def open(self) -> segmentlog.SegmentLog[Any]:
        if self._log is None:
            self._log = segmentlog.open(self.path, **self.options)
        return self._log

    def reopen(self) -> segmentlog.SegmentLog[Any]:
        self.close()
        return self.open()

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@contextmanager
def make_backend(tmp_path: Path) -> Iterator[SegmentLogBackend]:
    backend = SegmentLogBackend(tmp_path / "log")
    try:
        yield backend
    finally:
        backend.close()
