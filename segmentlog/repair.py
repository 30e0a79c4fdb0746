"""Repair acts on a run's files: cut in place, quarantine, remove, rewrite an index; each reported.

Strategy and invariants
- Repair never destroys intact data. Bytes that hold at least one frame that verifies go
  to ``<dir>/quarantine/<run id>/<UTC time>/`` under their original file name before they
  leave the run: a whole segment is renamed there; a cut tail is copied there (the file then
  holds the segment's bytes from the cut on, a ``.tail`` of its name, beside a ``.offset``
  note) and fsynced before the live file is truncated. The quarantine directory entries are
  fsynced, so a crash at any step leaves the bytes in the run, in quarantine, or in both.
- Only bytes in which no frame verifies (a torn write, zeros, an interrupted segment header)
  are cut or removed in place, and only an index (a cache) is rewritten.
- Every act is a ``RecoveryReport``, logged through the ``segmentlog`` logger. A read-only
  repairer changes nothing and reports what it would do as ``"ignored"``; a dry-run
  repairer changes nothing either and reports each act under its own name.
- An I/O error while repairing (a full disk, say) raises ``RepairError``; nothing in the run
  was changed by the failed act, so the caller can free space and retry.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec

from ._fs import FileSystem
from .errors import RepairError, seq_span
from .format import index_name, segment_name
from .layout import Layout

__all__ = ["QUARANTINE_TAIL", "RecoveryReport", "Repairer", "quarantine_stamp"]

logger = logging.getLogger("segmentlog")

#: Suffix of a quarantined cut tail (the original name stays in front of it).
QUARANTINE_TAIL = ".tail"
_OFFSET_NOTE = ".offset"


class RecoveryReport(msgspec.Struct, frozen=True, kw_only=True):
    """One thing recovery did (or, read-only, would do) to a run."""

    run_id: uuid.UUID
    path: str
    #: "truncated" (cut in place), "quarantined" (moved or copied aside, then cut),
    #: "removed" (an interrupted segment with no frame), "index_rebuilt", or "ignored"
    #: (a read-only open: nothing was changed).
    action: str
    reason: str
    offset: int
    bytes_dropped: int = 0
    #: Dropped seq range (``None`` when no seq was lost or the range is unknown).
    first_seq: int | None = None
    last_seq: int | None = None
    #: Where the dropped bytes were kept, for ``"quarantined"``.
    quarantine: str | None = None


def quarantine_stamp(now: datetime | None = None) -> str:
    """The directory name of one quarantine act: UTC time, sortable."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S.%fZ")


class Repairer:
    """Acts on one run's files for recovery, and records each act."""

    def __init__(
        self,
        fs: FileSystem,
        layout: Layout,
        run_id: uuid.UUID,
        *,
        writable: bool,
        durable: bool,
        dry_run: bool = False,
    ) -> None:
        self.fs = fs
        self.dry_run = dry_run
        self.layout = layout
        self.run_id = run_id
        self.run_dir = layout.run_dir(run_id)
        self.writable = writable
        self.durable = durable
        self.reports: list[RecoveryReport] = []
        self._quarantine_dir: str | None = None

    def _report(self, action: str, path: str, reason: str, offset: int, **extra: Any) -> None:
        if not self.writable and not self.dry_run:
            action = "ignored"
        if not self.writable:
            extra.pop("quarantine", None)
        report = RecoveryReport(
            run_id=self.run_id, action=action, path=path, reason=reason, offset=offset, **extra
        )
        self.reports.append(report)
        logger.warning(
            "recovery: %s %s at offset %d (%s); %d bytes, seqs %s%s",
            report.action,
            report.path,
            report.offset,
            report.reason,
            report.bytes_dropped,
            seq_span(report.first_seq, report.last_seq),
            f", kept in {report.quarantine}" if report.quarantine else "",
        )

    def _failed(self, what: str, exc: OSError) -> RepairError:
        return RepairError(
            f"recovery could not {what} ({exc}); nothing was changed. Free space or fix the "
            "cause, then open the log again",
            cause=exc,
        )

    # --- in place --------------------------------------------------------------------------

    def truncate(
        self, path: str, at: int, size: int, reason: str, first: int | None, last: int | None
    ) -> None:
        """Cut ``path`` at ``at``: the bytes from there hold no frame that verifies."""
        if self.writable:
            try:
                fd = self.fs.open_write(path)
                try:
                    self.fs.truncate(fd, at)
                    if self.durable:
                        self.fs.fdatasync(fd)
                finally:
                    self.fs.close(fd)
            except OSError as exc:
                raise self._failed(f"truncate {path}", exc) from exc
        self._report(
            "truncated", path, reason, at, bytes_dropped=size - at, first_seq=first, last_seq=last
        )

    def remove(self, base_seq: int, size: int, reason: str) -> None:
        """Remove a segment in which no frame verifies (an interrupted creation)."""
        path = f"{self.run_dir}/{segment_name(base_seq)}"
        if self.writable:
            try:
                self.fs.remove_quietly(path)
                self.fs.remove_quietly(f"{self.run_dir}/{index_name(base_seq)}")
                # Durable under every policy: the segment before it becomes the last one and
                # takes new frames; if a power loss brought this file back, that segment would
                # look sealed with an unsynced (torn) tail, which is corruption.
                self.fs.fsync_dir(self.run_dir)
            except OSError as exc:
                raise self._failed(f"remove {path}", exc) from exc
        self._report("removed", path, reason, 0, bytes_dropped=size)

    def rewrite_index(self, base_seq: int, data: bytes, valid: int) -> None:
        """Replace a damaged or stale index file (a cache: errors are swallowed)."""
        if not self.writable:
            return
        path = f"{self.run_dir}/{index_name(base_seq)}"
        with contextlib.suppress(OSError):
            fd = self.fs.create_new(path)
            try:
                if data:
                    self.fs.write(fd, data)
            finally:
                self.fs.close(fd)
        if valid >= 0:
            self._report("index_rebuilt", path, "index file damaged", valid)

    # --- quarantine ------------------------------------------------------------------------

    def _ensure_quarantine_dir(self) -> str:
        if self._quarantine_dir is None:
            fs, q = self.fs, self.layout.quarantine
            run_q = f"{q}/{self.run_id}"
            target = f"{run_q}/{quarantine_stamp()}"
            fs.makedirs(target)
            for parent in (run_q, q, self.layout.root):  # each new entry, innermost first
                fs.fsync_dir(parent)
            self._quarantine_dir = target
        return self._quarantine_dir

    def quarantine_segment(
        self, base_seq: int, size: int, reason: str, first: int | None, last: int | None
    ) -> None:
        """Move a whole segment into quarantine (and drop its index, a cache)."""
        path = f"{self.run_dir}/{segment_name(base_seq)}"
        where = None
        if self.writable:
            try:
                where = self._ensure_quarantine_dir()
                self.fs.rename(path, f"{where}/{segment_name(base_seq)}")
                self.fs.fsync_dir(where)
                self.fs.fsync_dir(self.run_dir)
                self.fs.remove_quietly(f"{self.run_dir}/{index_name(base_seq)}")
            except OSError as exc:
                raise self._failed(f"move {path} into quarantine", exc) from exc
        self._report(
            "quarantined",
            path,
            reason,
            0,
            bytes_dropped=size,
            first_seq=first,
            last_seq=last,
            quarantine=where,
        )

    def quarantine_tail(
        self,
        base_seq: int,
        at: int,
        size: int,
        reason: str,
        first: int | None,
        last: int | None,
    ) -> None:
        """Copy a segment's bytes from ``at`` into quarantine, then cut the segment there."""
        path = f"{self.run_dir}/{segment_name(base_seq)}"
        where = None
        if self.writable:
            fs = self.fs
            copy = None
            try:
                where = self._ensure_quarantine_dir()
                copy = f"{where}/{segment_name(base_seq)}{QUARANTINE_TAIL}"
                fd = fs.open_read(path)
                try:
                    tail = fs.pread(fd, size - at, at)
                finally:
                    fs.close(fd)
                self._write_durably(copy, tail)
                self._write_durably(f"{copy}{_OFFSET_NOTE}", b"%d\n" % at)
                fs.fsync_dir(where)
            except OSError as exc:
                if copy is not None:
                    with contextlib.suppress(OSError):
                        fs.remove_quietly(copy)
                raise self._failed(f"copy the tail of {path} into quarantine", exc) from exc
        self.truncate_after_quarantine(path, at)
        self._report(
            "quarantined",
            path,
            reason,
            at,
            bytes_dropped=size - at,
            first_seq=first,
            last_seq=last,
            quarantine=where,
        )

    def truncate_after_quarantine(self, path: str, at: int) -> None:
        if not self.writable:
            return
        try:
            fd = self.fs.open_write(path)
            try:
                self.fs.truncate(fd, at)
                self.fs.fdatasync(fd)
            finally:
                self.fs.close(fd)
        except OSError as exc:
            raise self._failed(f"truncate {path} (its tail is safe in quarantine)", exc) from exc

    def _write_durably(self, path: str, data: bytes) -> None:
        fd = self.fs.create_new(path)
        try:
            view = memoryview(data)
            written = 0
            while written < len(view):
                written += self.fs.write(fd, view[written:])
            self.fs.fdatasync(fd)
        finally:
            self.fs.close(fd)
