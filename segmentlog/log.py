"""SegmentLog, the facade: options, the directory lock, the run registry, the public API.

Strategy and invariants
- ``segmentlog.open`` checks the options once, takes the directory (``layout``) and returns a
  ``SegmentLog``. Opening touches no run: a run is recovered on its first touch
  (``recovery``), under its commit lock, and registered here.
- Every public method checks the log's state first (``LogState``: closed, read-only,
  failed), then hands the work down: appends to the run (``run.py``), reads to ``reader``
  from the run's snapshot, following to ``follow``, deletions to the run and ``retention``.
  An append travels strictly downward: facade -> run -> segment -> format/_fs.
- A batch over several runs takes their commit locks in run-id order (so two batches never
  deadlock) and validates every event of every run before anything is written.
- Thread-safe. Writers in several processes share a directory with ``multiprocess=True``.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Generic, TypeVar

from ._fs import OS_FS, FileSystem
from .context import RunContext
from .durability import FsyncTimer, IntervalFlusher, LogState
from .errors import NotFoundError
from .events import Envelope, new_event_id
from .follow import AppendSignal, poll_until, subscribe
from .handles import Handles
from .info import LogStats, RunInfo
from .layout import Layout, check_directory, list_run_ids, open_for_writing
from .maintenance import QuarantineEntry, quarantined
from .options import FsyncPolicy, LogOptions, parse_options
from .registry import RunTable
from .repair import RecoveryReport
from .retention import select_for_deletion
from .shared import RunLocks
from .store import (
    DEFAULT_PAGE_LIMIT,
    check_append_args,
    check_expected_run,
    check_page_args,
)

__all__ = ["LogOptions", "LogStats", "RunInfo", "SegmentLog", "open"]

E = TypeVar("E")


def open(
    path: str | os.PathLike[str], *, fs: FileSystem | None = None, **options: Any
) -> SegmentLog[Any]:
    """Open (creating if missing or empty) the log directory at ``path``.

    ``options`` are the fields of ``LogOptions`` (each documents its default). ``fs`` swaps
    the file-system layer (tests inject faults through it).

    Raises ``LockedError`` if another process has it open for writing,
    ``NotASegmentLogError`` for a non-empty foreign directory (or a missing one when
    ``read_only``), ``FormatVersionError`` for a directory of a newer format,
    ``UnsupportedPlatformError`` where segment logs cannot run, and ``ValueError``/
    ``TypeError`` for a bad option.
    """
    opts = parse_options(options)
    if fs is None:
        fs = OS_FS if opts.full_fsync else FileSystem(full_fsync=False)
    return SegmentLog(os.fspath(path), opts, fs)


class SegmentLog(Generic[E]):
    """A directory of per-run segment logs. Create it with ``segmentlog.open``.

    Thread-safe. One process writes a directory (several with ``multiprocess=True``); any
    number read it with ``read_only=True``. Use it as a context manager, or call ``close()``.
    """

    def __init__(self, path: str, options: LogOptions, fs: FileSystem) -> None:
        fs.check_supported(multiprocess=options.multiprocess and not options.read_only)
        self.path = path
        self.options = options
        self._fs = fs
        self._layout = Layout(path)
        self._state = LogState(path, options.read_only)
        self._timer = FsyncTimer(options.slow_fsync_seconds)
        self._lock_fd: int | None = None
        self._handles = Handles(options.max_open_files, fs.open_files_limit())
        self._signal = AppendSignal()
        self._locks: RunLocks | None = None
        if options.read_only:
            check_directory(fs, path)
        else:
            self._lock_fd = open_for_writing(fs, path, shared=options.multiprocess)
            if options.multiprocess:
                self._locks = RunLocks(fs, path)
        self._table: RunTable[E] = RunTable(self._layout, options)
        self._ctx: RunContext[E] = RunContext(
            fs,
            self._layout,
            options,
            self._state,
            self._timer,
            self._handles.touch,
            self._signal.notify,
            self._table.recover,
            self._table.read_locked,
            self._locks,
        )
        self._table.ctx = self._ctx
        self._runs = self._table.runs
        self._get_run = self._table.get
        self._fresh = self._table.fresh
        self._flusher: IntervalFlusher | None = None
        if options.fsync is FsyncPolicy.INTERVAL and not options.read_only:
            self._flusher = IntervalFlusher(options.fsync_interval_ms / 1000, self._flush)

    # --- context manager -----------------------------------------------------------------

    def __enter__(self) -> SegmentLog[E]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._state.closed else ("failed" if self._state.failed else "open")
        return f"<SegmentLog {self.path!r} fsync={self.options.fsync.value} {state}>"

    # --- runs ----------------------------------------------------------------------------

    def runs(self) -> list[uuid.UUID]:
        """Ids of the runs in the log (sorted). Lists directories; touches no run."""
        self._state.check_open()
        return list_run_ids(self._fs, self.path)

    def last_seq(self, run_id: uuid.UUID) -> int | None:
        """The run's last acknowledged seq, or None if it has no events."""
        self._state.check_open()
        return self._fresh(run_id).visible_seq or None

    def run_info(self, run_id: uuid.UUID) -> RunInfo:
        """A summary of one run; raises ``NotFoundError`` for a run with no events."""
        self._state.check_open()
        run = self._fresh(run_id)
        with run.view_lock:
            if not run.visible_seq:
                raise NotFoundError(run_id)
            run.load_tail()
            segments = list(run.segments)
            info = (run.visible_seq, run.session_id, run.terminal)
        try:
            mtime = self._fs.mtime(segments[-1].path)
        except FileNotFoundError:
            raise NotFoundError(run_id) from None
        return RunInfo(
            run_id=run_id,
            events=info[0],
            first_seq=1,
            last_seq=info[0],
            bytes=sum(s.size for s in segments),
            segments=len(segments),
            session_id=info[1],
            terminal=info[2],
            mtime=mtime,
        )

    # --- appending -----------------------------------------------------------------------

    def append(
        self, event: E, *, key: str | None = None, expected_seq: int | None = None
    ) -> Envelope[E]:
        """Append one event to its run and return its envelope.

        The frame is in the kernel before this returns; under ``fsync="always"`` or
        ``"batch"`` it is also on stable storage. ``key`` is an idempotency key, unique in
        the run: when the run already holds it for an equal event, the stored envelope comes
        back and nothing is written. With ``expected_seq`` the event is appended only if
        the run's last seq equals it (0: the run has no events yet).

        Raises ``InvalidEventError`` for an object that is not one of the log's event types,
        ``RecordTooLargeError`` above ``max_record_bytes``, ``InvalidKeyError`` for a bad
        key, ``IdempotencyConflictError`` when the key holds another event,
        ``SeqConflictError`` when the run moved on, ``LogFailedError`` after an I/O error,
        ``ReadOnlyError`` and ``LogClosedError``; in each case nothing was stored.
        """
        state = self._state
        if state.failed is not None or state.closed or state.read_only or state.forked:
            state.check_writable()
        keys = None
        if key is not None or expected_seq is not None:
            keys = check_append_args(1, [key], expected_seq)
        run_id = self._ctx.codec.run_id_of(event)
        run = self._runs.get(run_id)
        if run is None or not run.loaded:
            run = self._get_run(run_id)
        if expected_seq is None:
            return run.append_one(event, key)
        return run.append([event], None, keys, expected_seq)[0]

    def append_batch(
        self,
        events: Sequence[E],
        *,
        keys: Sequence[str | None] | None = None,
        expected_seq: int | None = None,
    ) -> list[Envelope[E]]:
        """Append several events; atomic per run (all or none), one fsync per run.

        Envelopes come back in input order. Every event of every run is encoded and checked
        before anything is written, so a bad event stores nothing. ``keys`` gives each event
        an idempotency key (or None): when every key is held for an equal event, the stored
        envelopes come back and nothing is written; a batch that mixes held and new keys is
        refused. ``expected_seq`` (for a batch of one run) appends only if the run's last
        seq equals it. Raises as ``append`` does, and ``ValueError`` for a key given twice.
        """
        self._state.check_writable()
        events = list(events)
        checked = check_append_args(len(events), keys, expected_seq)
        groups: dict[uuid.UUID, list[int]] = {}
        for i, event in enumerate(events):
            groups.setdefault(self._ctx.codec.run_id_of(event), []).append(i)
        check_expected_run(list(groups), expected_seq)
        if len(groups) <= 1:
            if not groups:
                return []
            (run_id,) = groups
            return self._get_run(run_id).append(events, None, checked, expected_seq)
        return self._table.append_across(events, groups, checked)

    def import_envelopes(self, envelopes: Iterable[Envelope[E]]) -> int:
        """Append envelopes as they are (event ids, seqs, timestamps kept).

        Each envelope's seq must be its run's last seq + 1: import refuses to create gaps or
        overwrite seqs (``ValueError``, nothing of that envelope's group written).
        Returns the number imported.
        """
        self._state.check_writable()
        return self._table.import_envelopes(envelopes)

    # --- syncing -------------------------------------------------------------------------

    def sync(self) -> None:
        """Make every acknowledged append durable now (whatever the fsync policy).

        Covers the runs this process has touched, including tails that a crashed process
        wrote but never synced.
        """
        self._state.check_open()
        if self.options.read_only:
            return
        for run in list(self._table.runs.values()):
            if run.unsynced:
                run.sync()

    def _flush(self) -> None:
        """The interval flusher's tick: sync every run with unsynced appends."""
        for run in list(self._table.runs.values()):
            if self._state.closed or self._state.failed is not None:
                return
            if run.appends and run.unsynced:
                run.sync()

    # --- reading -------------------------------------------------------------------------

    def list_after(
        self, run_id: uuid.UUID, after_seq: int | None = None, limit: int = DEFAULT_PAGE_LIMIT
    ) -> list[Envelope[E]]:
        """Return the run's envelopes with ``seq > after_seq`` in order, at most ``limit``.

        ``after_seq`` of ``None`` or ``0`` reads from the start. Seeks through the sparse
        index, so the cost does not grow with the run's length. Raises ``NotFoundError`` for
        a run with no events and ``CorruptionError`` for damage met on the way.
        """
        after = check_page_args(run_id, after_seq, limit)
        self._state.check_open()
        return self._table.read(self._fresh(run_id), after, limit)

    def wait_for(self, run_id: uuid.UUID, after_seq: int, timeout: float | None = None) -> bool:
        """Block until the run has an acknowledged seq above ``after_seq``; False on timeout.

        A read-only log polls the files; a writer is woken by its appends (a multiprocess
        writer also polls for other processes').
        """
        self._state.check_open()

        def closed() -> bool:
            return self._state.closed

        def fresh() -> bool:  # polled: the files, or what other processes appended
            return not closed() and self._fresh(run_id).visible_seq > after_seq

        if self.options.read_only:
            return poll_until(fresh, timeout, closed)
        run = self._get_run(run_id)
        poll = None if self._locks is None else fresh
        return self._signal.wait(lambda: run.visible_seq > after_seq, timeout, closed, poll)

    def subscribe(
        self, run_id: uuid.UUID, after_seq: int | None = None, *, poll_interval: float = 0.5
    ) -> Iterator[Envelope[E]]:
        """Replay the run after ``after_seq``, then follow new events until a terminal one.

        Yields each seq exactly once, in order, with no gap at the seam between replay and
        live. Only acknowledged (persisted) events are delivered. A slow consumer reads from
        the log, never from an unbounded buffer.
        """
        return subscribe(self, run_id, after_seq, poll_interval)

    # --- retention -----------------------------------------------------------------------

    def delete_run(self, run_id: uuid.UUID) -> bool:
        """Remove a run crash-safely (rename into trash, then delete). False if absent."""
        self._state.check_writable()
        run = self._get_run(run_id)
        trash = f"{self._layout.trash}/{run_id}.{new_event_id().hex}"
        with run.commit_lock:
            self._state.check_writable()
            self._handles.forget(run)
            try:
                if self._locks is None:
                    deleted = run.delete(trash)
                else:
                    with run.hold():
                        deleted = run.delete(trash)
            except OSError as exc:
                raise self._state.fail(exc) from exc
        if deleted:
            with contextlib.suppress(OSError):  # emptied at the next open
                self._fs.rmtree(trash)
        return deleted

    def retain(
        self,
        max_age: float | None = None,
        max_bytes: int | None = None,
        only_terminal: bool = True,
    ) -> list[uuid.UUID]:
        """Delete whole runs older than ``max_age`` seconds, then the oldest runs until the
        log holds at most ``max_bytes``. With ``only_terminal`` (default) only finished runs
        (last event terminal) are deleted. Returns the deleted run ids.
        """
        self._state.check_writable()
        infos = []
        for rid in self.runs():
            with contextlib.suppress(NotFoundError):
                infos.append(self.run_info(rid))
        chosen = select_for_deletion(infos, time.time(), max_age, max_bytes, only_terminal)
        return [rid for rid in chosen if self.delete_run(rid)]

    # --- introspection and shutdown ------------------------------------------------------

    def quarantined(self, run_id: uuid.UUID | None = None) -> list[QuarantineEntry]:
        """What repair has put in quarantine (of one run, or all): one entry per file, with
        run, path, seq range, bytes and time. ``segmentlog salvage-export`` reads it back."""
        self._state.check_open()
        return quarantined(self.path, run_id, fs=self._fs)

    @property
    def recovery_reports(self) -> list[RecoveryReport]:
        """Every repair recovery made (or, read-only, would make) since open."""
        return list(self._table.reports)

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._state.closed

    def stats(self) -> LogStats:
        """Counters for operators (appends, bytes, fsync latency percentiles, ...)."""
        runs = list(self._table.runs.values())
        appends = sum(r.appends for r in runs)
        fsyncs = self._timer.count
        return LogStats(
            appends=appends,
            bytes_written=sum(r.bytes_written for r in runs),
            fsyncs=fsyncs,
            appends_per_fsync=appends / fsyncs if fsyncs else 0.0,
            fsync_p50_us=self._timer.percentile_us(0.5),
            fsync_p99_us=self._timer.percentile_us(0.99),
            open_files=self._handles.open_files() + (self._lock_fd is not None),
            runs_recovered=self._table.recovered,
            bytes_dropped=sum(r.bytes_dropped for r in self._table.reports),
            sync_method=self._fs.sync_method,
        )

    def close(self) -> None:
        """Sync per the fsync policy, trim and release descriptors, release the lock.

        Idempotent. In a ``fork()`` child of the process that opened the log it writes
        nothing and only closes the child's descriptors.
        """
        if self._state.closed:
            return
        if self._flusher is not None:
            self._flusher.stop()
        # A fork() child's copy only lets go of its descriptors: the files are the parent's.
        writer = not self.options.read_only and self._state.failed is None
        writer = writer and not self._state.forked
        if writer and self.options.fsync is not FsyncPolicy.NEVER:
            # Only what this process appended: a reader that merely recovered runs should
            # not pay an fsync per run it looked at (``sync()`` covers those on request).
            for run in list(self._table.runs.values()):
                if run.appends and run.unsynced:
                    with contextlib.suppress(Exception):
                        run.sync()
        self._state.closed = True
        self._signal.notify()
        for run in list(self._table.runs.values()):
            run.release_files(blocking=True, trim=writer)
        self._handles.clear()
        if self._locks is not None:
            self._locks.close()
            self._locks = None
        if self._lock_fd is not None:
            self._fs.close(self._lock_fd)
            self._lock_fd = None
