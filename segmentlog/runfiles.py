"""A run's files: create, open, roll, sync, release and delete them (a part of ``Run``).

Strategy and invariants
- Every method holds the run's commit lock. A run's directory and its first segment are
  created only by its first valid commit; new runs and segments cost only the system calls the
  policy needs: no fsync at creation, and the first durable commit fsyncs the segment, then
  the run directory and ``runs/``, once (``run_dir_pending``, ``runs_dir_pending``).
- A roll seals the active segment first (trim, fdatasync) and fsyncs the directory entries,
  so every segment before the last one is whole and durable (recovery relies on it), then
  creates the next one.
- Descriptors are opened on demand and registered with the log's LRU (``ctx.touch``), which
  may release an idle run's at any time; closing one loses nothing.
- Deleting a run marks its shared state deleted (for other processes), closes its files,
  renames its directory into ``trash/`` and fsyncs both directories, under every policy.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from typing import TYPE_CHECKING, Any

from .segment import Segment
from .statefile import StateFile, new_epoch

__all__ = ["RunFiles"]


class RunFiles:
    """The file-handling part of ``Run`` (a mixin; see the module docstring)."""

    ctx: Any
    id: uuid.UUID
    dir: str
    segments: list[Segment]
    bases: list[int]
    last_seq: int
    view_lock: threading.Lock
    commit_lock: threading.Lock
    state_file: StateFile
    epoch: int
    run_dir_pending: bool
    runs_dir_pending: bool
    state_pending: bool

    if TYPE_CHECKING:  # provided by the other parts of Run

        def mark_deleted(self) -> None: ...

        def reset(self) -> None: ...

        def hold(self) -> contextlib._GeneratorContextManager[None]: ...

        def claim_state(self) -> None: ...

    def _rollback(self, seg: Segment, start: int, last_kept: int) -> None:
        """Cut unacknowledged frames off after an fsync error (best effort)."""
        self.last_seq = last_kept
        with contextlib.suppress(OSError):
            seg.cut(self.ctx.fs, start, max(last_kept, seg.base_seq - 1))

    # --- segments --------------------------------------------------------------------------

    def active_segment(self) -> Segment:
        """The segment appends go to, created and opened as needed. Holds ``commit_lock``."""
        if not self.segments:
            return self._create()
        seg = self.segments[-1]
        if self.state_pending:
            try:
                self.claim_state()
            except OSError as exc:
                raise self.ctx.state.fail(exc) from exc
        if seg.fd is None:
            try:
                seg.open_writer(self.ctx.fs)
            except OSError as exc:
                raise self.ctx.state.fail(exc) from exc
            self.ctx.touch(self)
        return seg

    def _create(self) -> Segment:
        fs = self.ctx.fs
        try:
            try:
                fs.mkdir(self.dir)
                self.runs_dir_pending = True
            except FileExistsError:
                pass
            seg = Segment.create(fs, self.dir, self.id, 1, self.ctx.interval)
            if self.ctx.keep_state:
                self.epoch = new_epoch()
                self.state_pending = False
                self.state_file.open(create=True)
        except OSError as exc:
            raise self.ctx.state.fail(exc) from exc
        with self.view_lock:
            self.segments = [seg]
            self.bases = [1]
        self.run_dir_pending = True
        self.ctx.touch(self)
        return seg

    def _roll(self) -> Segment:
        """Seal the active segment (trim, fsync) and start the next one."""
        ctx = self.ctx
        old = self.segments[-1]
        try:
            old.seal(ctx.fs, ctx.timer)
            self._sync_dirs()  # a sealed segment's name must be durable too
            new = Segment.create(ctx.fs, self.dir, self.id, old.last_seq + 1, ctx.interval)
        except OSError as exc:
            raise ctx.state.fail(exc) from exc
        old.close(ctx.fs)
        with self.view_lock:
            self.segments.append(new)
            self.bases.append(new.base_seq)
        self.run_dir_pending = True
        ctx.touch(self)
        return new

    def _sync_dirs(self) -> None:
        fs = self.ctx.fs
        if self.run_dir_pending:
            fs.fsync_dir(self.dir)
            self.run_dir_pending = False
        if self.runs_dir_pending:
            fs.fsync_dir(self.ctx.layout.runs)
            self.runs_dir_pending = False

    # --- syncing and releasing -------------------------------------------------------------

    @property
    def unsynced(self) -> bool:
        """True when written frames or directory entries are not known to be durable."""
        segments = self.segments  # one read: a reset may replace the list meanwhile
        if not segments:
            return False
        seg = segments[-1]
        return seg.synced < seg.size or self.run_dir_pending or self.runs_dir_pending

    def sync(self) -> None:
        """Make everything written to this run durable now (``sync()``, interval flusher)."""
        with self.commit_lock:
            if not self.unsynced:
                return
            self.ctx.state.check_writable()
            if self.ctx.locks is None:
                self._sync_now()
                return
            with self.hold():  # catch up first: another process may have deleted the run
                if self.unsynced:
                    self._sync_now()

    def _sync_now(self) -> None:
        seg = self.active_segment()
        try:
            seg.sync(self.ctx.fs, self.ctx.timer)
            self._sync_dirs()
        except OSError as exc:
            raise self.ctx.state.fail(exc) from exc

    def release_files(self, *, blocking: bool, trim: bool = False) -> bool:
        """Close the run's descriptors (``trim``: cut preallocated zeros first).

        Non-blocking for the handle LRU: False when a commit holds the run.
        """
        if not self.commit_lock.acquire(blocking=blocking):
            return False
        try:
            fs = self.ctx.fs
            trim = trim and self.ctx.locks is None  # others may be writing past our view
            for seg in self.segments:
                if trim and seg.fd is None and seg.allocated > seg.size:
                    with contextlib.suppress(OSError):
                        seg.open_writer(fs)
                seg.close(fs, trim=trim)
            self.state_file.close()
            return True
        finally:
            self.commit_lock.release()

    def close_files(self) -> None:
        """Close descriptors and the state mapping (before this view is rebuilt)."""
        for seg in self.segments:
            seg.close(self.ctx.fs)
        self.state_file.close()

    @property
    def open_files(self) -> int:
        """Descriptors the run holds open (its mapped state record holds one too)."""
        return sum(s.open_files for s in self.segments[-1:]) + self.state_file.mapped

    def delete(self, trash_path: str) -> bool:
        """Move the run's directory to ``trash_path`` durably; False if it has none.

        Raises ``OSError`` (the caller fails stop). Holds ``commit_lock``.
        """
        fs = self.ctx.fs
        self.mark_deleted()
        self.close_files()
        try:
            fs.rename(self.dir, trash_path)
        except FileNotFoundError:
            self.reset()
            return False
        # Under every policy: a deletion that a power loss undoes would bring back data the
        # caller was told is gone.
        fs.fsync_dir(self.ctx.layout.runs)
        fs.fsync_dir(self.ctx.layout.trash)
        self.reset()
        return True
