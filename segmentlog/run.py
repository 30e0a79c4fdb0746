"""One run: prepare -> commit -> roll -> sync -> release. The only code that writes a run's files.

Strategy and invariants
- A ``Run`` holds the run's segments, writer descriptors, next seq, session, tail state and
  sync state. Every append of the run is prepared (seqs assigned, frames encoded and
  validated, no I/O) and committed (written, made durable per policy, published) under its
  ``commit_lock``, so frames never interleave and seqs are never reused.
- Under ``always`` and ``batch`` appends go through the run's ``GroupCommit``: the leader
  commits everything queued with one write and one fdatasync. Under ``never`` and
  ``interval`` the caller commits its own append directly.
- ``view_lock`` guards what readers see (segments, ``visible_seq``); a commit takes it only to
  publish, so a reader never waits for an fsync. ``visible_seq`` only ever covers
  acknowledged appends: a failed append is never read or delivered.
- A write or fsync error makes the log fail stop (``LogState``): the unacknowledged frames are
  cut off, every request of that commit gets ``LogFailedError``, and so does every later one.
- New runs and segments cost only the system calls the policy needs: no fsync at creation;
  the first durable commit fsyncs the segment, then the run directory and ``runs/`` once.
- Read-only logs never write: ``follow`` picks up frames and segments another process added.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import uuid
from bisect import bisect_right
from typing import Any, Generic, TypeVar

from ._fs import FileSystem
from .durability import FsyncTimer, GroupCommit, LogState, Request
from .errors import AppendError
from .events import Envelope, new_event_id, utcnow
from .format import (
    FRAME_HEADER_SIZE,
    MAX_SEGMENT_OFFSET,
    SEGMENT_HEADER_SIZE,
    FrameEncoder,
    frame_checksum,
    segment_name,
)
from .index import SparseIndex
from .layout import Layout, list_segments
from .options import FsyncPolicy, LogOptions
from .recovery import RecoveredRun
from .scan import scan
from .schema import EnvelopeCodec
from .segment import Segment

__all__ = ["Run", "RunContext"]

E = TypeVar("E")

#: Bytes a follower reads past its known end per look (more when frames keep coming).
_FOLLOW_WINDOW = 256 * 1024


class RunContext(Generic[E]):
    """What every run of one log shares."""

    def __init__(
        self,
        fs: FileSystem,
        layout: Layout,
        options: LogOptions,
        state: LogState,
        timer: FsyncTimer,
        touch: Any,
        notify: Any,
    ) -> None:
        self.fs = fs
        self.layout = layout
        self.options = options
        self.state = state
        self.timer = timer
        self.codec: EnvelopeCodec[E] = EnvelopeCodec(options.event_type)
        self.encoder = FrameEncoder(options.max_record_bytes)
        self.policy: FsyncPolicy = options.fsync
        self.durable_ack = options.fsync.durable_ack
        self.check = self.codec.check_payload if options.validate_events else None
        self.interval = options.index_interval_bytes
        self.segment_bytes = options.segment_bytes
        #: How far ahead of a write space may be reserved (0: never).
        # Only durable policies gain from preallocation (an fdatasync that does not grow the
        # file writes no metadata); under "never" and "interval" it would cost a system call.
        self.prealloc_limit = (
            options.segment_bytes if options.preallocate and self.durable_ack else 0
        )
        #: Called with a run whose descriptors were opened (the handle LRU).
        self.touch = touch
        #: Called after appends became visible (wakes ``wait_for``).
        self.notify = notify


class _Work(Generic[E]):
    """One caller's append: its events, or envelopes to import as they are."""

    __slots__ = ("events", "imported")

    def __init__(self, events: list[E], imported: list[Envelope[E]] | None) -> None:
        self.events = events
        self.imported = imported


class Prepared(Generic[E]):
    """A request's envelopes and their encoded frames (``buf``, frame starts in ``starts``)."""

    __slots__ = ("buf", "envelopes", "request", "starts")

    def __init__(
        self, request: Request[list[Envelope[E]]], envelopes: list[Envelope[E]], buf: bytearray
    ) -> None:
        self.request = request
        self.envelopes = envelopes
        self.buf = buf
        self.starts: list[int] = []


class Run(Generic[E]):
    """In-memory state and the write path of one run. See the module docstring."""

    def __init__(self, ctx: RunContext[E], run_id: uuid.UUID) -> None:
        self.ctx = ctx
        self.id = run_id
        self.dir = ctx.layout.run_dir(run_id)
        self.view_lock = threading.Lock()
        self.commit_lock = threading.Lock()
        self.committer: GroupCommit[list[Envelope[E]]] | None = (
            GroupCommit() if ctx.durable_ack else None
        )
        self.segments: list[Segment] = []
        self.bases: list[int] = []
        #: Last seq written; last seq acknowledged (what readers see).
        self.last_seq = 0
        self.visible_seq = 0
        self.session_id: uuid.UUID | None = None
        self.terminal = False
        #: The last record's payload, decoded lazily for session id and terminal state (so
        #: recovery never needs the event type).
        self.tail_payload: bytes | None = None
        self.loaded = False
        #: Directory entries created without an fsync: the run's segments, and the run
        #: directory itself in ``runs/``.
        self.run_dir_pending = False
        self.runs_dir_pending = False
        #: Read-only: identifies the run's incarnation (the first frame's checksum).
        self.fingerprint: bytes | None = None
        self.appends = 0
        self.bytes_written = 0

    # --- loading ---------------------------------------------------------------------------

    def adopt(self, recovered: RecoveredRun, writable: bool) -> None:
        """Take the state recovery established. Holds ``commit_lock``."""
        with self.view_lock:
            self.segments = recovered.segments
            self.bases = [s.base_seq for s in self.segments]
            self.last_seq = self.visible_seq = recovered.last_seq
            self.tail_payload = recovered.last_payload
            self.session_id = None
            self.terminal = False
        # Which policy the last writer had is not recorded, so directory entries it made may
        # not be durable: the first sync covers them too.
        self.run_dir_pending = self.runs_dir_pending = writable and bool(self.segments)
        if not writable and self.segments:
            self.fingerprint = self._fingerprint()
        self.loaded = True

    def reset(self) -> None:
        """Forget everything: the run was deleted. Holds ``commit_lock``."""
        with self.view_lock:
            self.segments = []
            self.bases = []
            self.last_seq = self.visible_seq = 0
            self.session_id = None
            self.terminal = False
            self.tail_payload = None
        self.run_dir_pending = self.runs_dir_pending = False

    def load_tail(self) -> None:
        """Decode the recovered last record (once) for the run's session id and state.

        Holds ``view_lock``.
        """
        payload = self.tail_payload
        if payload is not None:
            env = self.ctx.codec.decode(payload)
            self.session_id = env.session_id
            self.terminal = env.is_terminal
            self.tail_payload = None

    # --- appending -------------------------------------------------------------------------

    def append(
        self, events: list[E], imported: list[Envelope[E]] | None = None
    ) -> list[Envelope[E]]:
        """Append events (or import envelopes) atomically; returns their envelopes."""
        work = _Work(events, imported)
        if self.committer is not None:
            return self.committer.submit(work, self._commit_group)
        req: Request[list[Envelope[E]]] = Request(work)
        with self.commit_lock:
            self._commit_requests([req])
        return req.outcome()

    @staticmethod
    def work(events: list[E]) -> _Work[E]:
        """The work item of an append of ``events`` (for ``Request``)."""
        return _Work(events, None)

    def commit_locked(self, req: Request[list[Envelope[E]]]) -> None:
        """Commit one request while the caller holds ``commit_lock`` (multi-run batches)."""
        self._commit_requests([req])

    def _commit_group(self, group: list[Request[list[Envelope[E]]]]) -> None:
        with self.commit_lock:
            self._commit_requests(group)

    def _commit_requests(self, requests: list[Request[list[Envelope[E]]]]) -> None:
        """Prepare and commit requests in order. Holds ``commit_lock``.

        A run's first segment is created only once a request proved valid, so a refused
        first event leaves no run behind.
        """
        self.ctx.state.check_writable()
        seg = self.active_segment() if self.segments else None
        pending: list[Prepared[E]] = []
        buf = bytearray()
        seq = self.last_seq
        for req in requests:
            start = len(buf)
            try:
                prepared = self.prepare(req, seq + 1, seg.synced if seg else 0, buf)
            except (AppendError, ValueError, TypeError) as exc:
                req.error = exc
                continue
            if seg is None:
                seg = self._create()
            elif not seg.room_for(len(buf), self.ctx.segment_bytes):
                if pending:
                    self._commit_prepared(seg, bytes(buf[:start]), pending)
                    pending = []
                seg = self._roll()
                buf = bytearray()
                prepared = self.prepare(req, seq + 1, seg.synced, buf)
            pending.append(prepared)
            seq = prepared.envelopes[-1].seq
        if pending:
            assert seg is not None
            self._commit_prepared(seg, buf, pending)

    def prepare(
        self, req: Request[list[Envelope[E]]], first_seq: int, mark: int, buf: bytearray
    ) -> Prepared[E]:
        """Assign seqs from ``first_seq`` and encode frames into ``buf`` (no I/O).

        Raises ``InvalidEventError``/``RecordTooLargeError``/``ValueError`` for bad input,
        leaving ``buf`` as it was.
        """
        work: _Work[E] = req.work
        if work.imported is None:
            envelopes = self._make_envelopes(work.events, first_seq)
        else:
            envelopes = _check_import(self.id, work.imported, first_seq)
        prepared = Prepared(req, envelopes, buf)
        encode, check, starts = self.ctx.encoder.encode, self.ctx.check, prepared.starts
        mark = min(mark, MAX_SEGMENT_OFFSET)
        last = len(envelopes) - 1
        base = len(buf)
        try:
            for i, env in enumerate(envelopes):
                start = len(buf)
                size = encode(buf, env, mark, i < last)
                starts.append(start)
                if check is not None:
                    check(buf[start + FRAME_HEADER_SIZE : start + size], env)
        except BaseException:
            del buf[base:]
            raise
        return prepared

    def _make_envelopes(self, events: list[E], seq: int) -> list[Envelope[E]]:
        if self.tail_payload is not None:
            with self.view_lock:
                self.load_tail()
        session = self.session_id
        run_id = self.id
        session_of = self.ctx.codec.session_of
        out: list[Envelope[E]] = []
        for event in events:
            started = session_of(event)
            if started is not None:
                session = started
            out.append(Envelope(new_event_id(), seq, run_id, session, event, utcnow()))
            seq += 1
        return out

    def _commit_prepared(
        self, seg: Segment, buf: bytes | bytearray, prepared: list[Prepared[E]]
    ) -> None:
        """Write prepared frames to ``seg``, sync per policy, publish. Holds ``commit_lock``."""
        ctx = self.ctx
        fs = ctx.fs
        start = seg.size
        last = prepared[-1].envelopes[-1].seq
        try:
            seg.append(fs, buf, last, ctx.prealloc_limit)
        except OSError as exc:
            raise ctx.state.fail(exc) from exc
        if start + len(buf) - seg.index.last_offset >= seg.index.interval:
            seg.write_index(fs, seg.index.extend(_points(prepared, start)))
        previous = self.last_seq
        self.last_seq = last
        if ctx.durable_ack:
            try:
                seg.sync(fs, ctx.timer)
                self._sync_dirs()
            except OSError as exc:
                self._rollback(seg, start, previous)
                raise ctx.state.fail(exc) from exc
        tail = prepared[-1].envelopes[-1]
        with self.view_lock:
            self.visible_seq = last
            self.session_id = tail.session_id
            self.terminal = bool(getattr(type(tail.event), "terminal", False))
            self.tail_payload = None
        count = 0
        for p in prepared:
            p.request.result = p.envelopes
            count += len(p.envelopes)
        self.appends += count
        self.bytes_written += len(buf)
        ctx.notify()

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
        if not self.segments:
            return False
        seg = self.segments[-1]
        return seg.synced < seg.size or self.run_dir_pending or self.runs_dir_pending

    def sync(self) -> None:
        """Make everything written to this run durable now (``sync()``, interval flusher)."""
        with self.commit_lock:
            if not self.unsynced:
                return
            self.ctx.state.check_writable()
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
            for seg in self.segments:
                if trim and seg.fd is None and seg.allocated > seg.size:
                    with contextlib.suppress(OSError):
                        seg.open_writer(fs)
                seg.close(fs, trim=trim)
            return True
        finally:
            self.commit_lock.release()

    @property
    def open_files(self) -> int:
        """Descriptors the run holds open."""
        return sum(s.open_files for s in self.segments[-1:])

    def delete(self, trash_path: str) -> bool:
        """Move the run's directory to ``trash_path`` durably; False if it has none.

        Raises ``OSError`` (the caller fails stop). Holds ``commit_lock``.
        """
        fs = self.ctx.fs
        for seg in self.segments:
            seg.close(fs)
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

    # --- reading ---------------------------------------------------------------------------

    def snapshot(self, first: int, last: int) -> tuple[int, list[tuple[Segment, int, int]]]:
        """``(visible_seq, [(segment, size, last_seq)])`` covering seqs ``first..last``."""
        with self.view_lock:
            visible = self.visible_seq
            last = min(last, visible)
            plan: list[tuple[Segment, int, int]] = []
            if first <= last:
                i = max(0, bisect_right(self.bases, first) - 1)
                for seg in self.segments[i:]:
                    plan.append((seg, seg.size, min(seg.last_seq, visible)))
                    if seg.last_seq >= last:
                        break
        return visible, plan

    def follow(self, recover: Any) -> None:
        """Read-only: pick up frames and segments another process added since the last look.

        A run deleted (and perhaps re-created) behind the reader is noticed by its first
        frame's checksum or a shrunken last segment, and loaded afresh with ``recover``.
        """
        with self.commit_lock:
            stale = self.loaded and bool(self.segments) and self._fingerprint() != self.fingerprint
            if stale or not self.loaded or not self.segments:
                self._reload(recover)
                return
            for base in list_segments(self.ctx.fs, self.dir, writable=False):
                if base > self.bases[-1]:
                    if not self._extend_tail() or self.last_seq + 1 != base:
                        return
                    seg = Segment(self.dir, base, SparseIndex(base, self.ctx.interval))
                    with self.view_lock:
                        self.segments.append(seg)
                        self.bases.append(base)
            if not self._extend_tail() and self._shrunk():
                self._reload(recover)

    def _reload(self, recover: Any) -> None:
        self.reset()
        self.loaded = False
        self.adopt(recover(self) or RecoveredRun(), writable=False)

    def _fingerprint(self) -> bytes | None:
        fs = self.ctx.fs
        try:
            fd = fs.open_read(f"{self.dir}/{segment_name(1)}")
        except FileNotFoundError:
            return None
        try:
            return frame_checksum(fs.pread(fd, FRAME_HEADER_SIZE, SEGMENT_HEADER_SIZE), 0)
        finally:
            fs.close(fd)

    def _shrunk(self) -> bool:
        seg = self.segments[-1]
        try:
            return self.ctx.fs.file_size(seg.path) < seg.size
        except FileNotFoundError:
            return True

    def _extend_tail(self) -> bool:
        """Verify frames appended to the last segment; True when it reached the data end."""
        seg = self.segments[-1]
        fs = self.ctx.fs
        try:
            fd = fs.open_read(seg.path)
        except FileNotFoundError:
            return False
        try:
            size = fs.size(fd)
            window = _FOLLOW_WINDOW
            while size > seg.size:
                start = seg.size
                buf = fs.pread(fd, min(size - start, window), start)
                result = scan(
                    buf,
                    start,
                    seg.last_seq + 1,
                    self.ctx.options.max_record_bytes,
                    seg.index.interval,
                    seg.index.last_offset,
                )
                seg.index.extend(result.index_points, result.batch_start)
                if result.batch_start > start:
                    with self.view_lock:
                        seg.size = result.batch_start
                        seg.last_seq = result.batch_start_seq
                        self.last_seq = self.visible_seq = seg.last_seq
                        if result.last_payload is not None:
                            self.tail_payload = result.last_payload
                if result.limit >= size:  # the window reached the end of the file
                    return result.damage is None and result.batch_start == result.end
                if result.damage is None and result.end < result.limit:
                    return True  # zeros: the preallocated tail
                if result.damage is not None and not result.damage.short:
                    return False
                if seg.size == start:
                    window *= 2  # a frame or batch larger than the window
            return size == seg.size
        finally:
            fs.close(fd)


def _points(prepared: list[Prepared[Any]], start: int) -> list[tuple[int, int]]:
    """Index candidates: (seq, offset) of every frame just written from offset ``start``."""
    return [
        (env.seq, start + off)
        for p in prepared
        for env, off in zip(p.envelopes, p.starts, strict=True)
    ]


def _check_import(run_id: uuid.UUID, imported: list[Envelope[Any]], expected: int) -> list[Any]:
    if imported[0].seq != expected:
        raise ValueError(
            f"run {run_id}: import of seq {imported[0].seq} refused; the run's next seq "
            f"is {expected} (import never creates gaps or overwrites)"
        )
    for prev, env in itertools.pairwise(imported):
        if env.seq != prev.seq + 1:
            raise ValueError(f"run {run_id}: import seqs jump from {prev.seq} to {env.seq}")
    return imported
