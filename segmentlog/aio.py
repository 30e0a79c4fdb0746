"""asyncio API: ``log = await segmentlog.aio.open(path)``, then ``await log.append(event)``.

Strategy and invariants
- ``AsyncSegmentLog`` wraps a ``SegmentLog``. Every call that may touch the disk (open,
  append, read, fsync, close) runs on a small dedicated thread pool, so the event loop never
  waits for disk I/O or an fsync. Only in-memory accessors (``stats``, ``recovery_reports``)
  run on the loop.
- Group commit: concurrent coroutines' appends run in parallel pool threads, where the
  engine's ``fsync="batch"`` policy lets one fdatasync cover every append waiting on the same
  run. The pool size (``threads``) bounds how many appends can share one fsync. Rejected:
  merging coroutines' events into one ``append_batch`` on the loop; a batch is all-or-nothing,
  so one invalid event would fail every coroutine that shared its batch.
- Cancelling a coroutine that awaits an append does not cancel the write (a thread cannot be
  interrupted): the event may still be stored, exactly as if the caller had crashed after the
  write. ``close()`` waits for every call already started, then closes the log.
- ``subscribe`` reads through ``list_after`` from a cursor (the last seq yielded), so replay
  and live delivery are the same loop: no gap and no duplicate at the seam, and a consumer
  that falls behind holds one page, never an unbounded buffer. Between pages it waits on an
  ``asyncio.Event`` set when an append made through this object returns (so after the event
  is persisted and visible), or at most ``poll_interval`` seconds, which picks up appends made
  through the blocking API and, for a ``read_only`` log, another process's writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Generic, TypeVar

from . import log as log_module
from ._fs import FileSystem
from .errors import LogClosedError, NotFoundError
from .events import Envelope
from .log import LogStats, RunInfo, SegmentLog
from .repair import RecoveryReport
from .store import DEFAULT_PAGE_LIMIT, check_page_args

__all__ = ["DEFAULT_THREADS", "AsyncSegmentLog", "open"]

E = TypeVar("E")
T = TypeVar("T")

#: Threads per ``AsyncSegmentLog``: the most appends in flight at once (and so the most one
#: group-commit fsync can cover).
DEFAULT_THREADS = 16

#: How often a waiting subscriber re-reads the run when nothing told it to: appends from
#: another process (read-only log) or through the blocking API.
READ_ONLY_POLL_SECONDS = 0.05
WRITER_POLL_SECONDS = 0.25


class AsyncSegmentLog(Generic[E]):
    """The asyncio face of a ``SegmentLog``. Create it with ``await segmentlog.aio.open(...)``.

    Use it in one event loop, as ``async with log:`` or with ``await log.close()``. Every
    method that may do disk I/O is a coroutine that runs the blocking call in the log's own
    thread pool; results and errors are exactly those of the ``SegmentLog`` method of the same
    name.
    """

    def __init__(self, log: SegmentLog[E], *, threads: int = DEFAULT_THREADS) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an int >= 1, got {threads!r}")
        self._log = log
        self._executor = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="segmentlog-aio"
        )
        self._closing = False
        self._waiters: dict[uuid.UUID, set[asyncio.Event]] = {}

    # --- plumbing ------------------------------------------------------------------------

    def _start_threads(self) -> None:
        """Start every pool thread now (call off the loop).

        ThreadPoolExecutor starts threads lazily inside ``submit``, and ``Thread.start``
        waits for the new thread to run; under load that wait, on the loop, is long.
        """
        threads = self._executor._max_workers
        barrier = threading.Barrier(threads + 1)
        for _ in range(threads):
            self._executor.submit(barrier.wait, 10.0)
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(10.0)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closing:
            raise LogClosedError(f"the log at {self._log.path} is closed; open it again")
        if self._log._state.forked:
            # In a fork() child the pool's threads do not exist (its idle count says they
            # do): a submitted call would never run. Refuse before handing it over.
            self._log._state.check_open()
        return await asyncio.wrap_future(self._executor.submit(fn, *args))

    def _notify(self, run_ids: Iterable[uuid.UUID]) -> None:
        for run_id in run_ids:
            for event in self._waiters.get(run_id, ()):
                event.set()

    # --- context manager -----------------------------------------------------------------

    async def __aenter__(self) -> AsyncSegmentLog[E]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<AsyncSegmentLog {self._log!r}>"

    # --- properties ----------------------------------------------------------------------

    @property
    def blocking(self) -> SegmentLog[E]:
        """The wrapped ``SegmentLog`` (for code running in other threads)."""
        return self._log

    @property
    def path(self) -> str:
        """The log directory."""
        return self._log.path

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closing

    @property
    def recovery_reports(self) -> list[RecoveryReport]:
        """Every repair recovery made (or, read-only, would make) since open."""
        return self._log.recovery_reports

    def stats(self) -> LogStats:
        """Counters for operators (in memory; does not block)."""
        return self._log.stats()

    # --- writing -------------------------------------------------------------------------

    async def append(
        self, event: E, *, key: str | None = None, expected_seq: int | None = None
    ) -> Envelope[E]:
        """Append one event (idempotent with ``key``, conditional with ``expected_seq``);
        see ``SegmentLog.append``.

        Returns once the event is stored per the fsync policy. Concurrent calls share fsyncs
        under ``fsync="batch"``. Cancelling the caller does not undo the write: retry with
        the same ``key`` to learn what was stored.
        """
        append = functools.partial(self._log.append, key=key, expected_seq=expected_seq)
        env = await self._call(append, event)
        self._notify((env.run_id,))
        return env

    async def append_batch(
        self,
        events: Sequence[E],
        *,
        keys: Sequence[str | None] | None = None,
        expected_seq: int | None = None,
    ) -> list[Envelope[E]]:
        """Append several events, atomic per run and one fsync per run (idempotent with
        ``keys``, conditional with ``expected_seq``); see ``SegmentLog.append_batch``."""
        batch = functools.partial(self._log.append_batch, keys=keys, expected_seq=expected_seq)
        envs = await self._call(batch, list(events))
        self._notify({env.run_id for env in envs})
        return envs

    async def import_envelopes(self, envelopes: Iterable[Envelope[E]]) -> int:
        """Append envelopes unchanged (ids, seqs, timestamps kept); see
        ``SegmentLog.import_envelopes``. Refuses gaps and overwrites with ``ValueError``."""
        items = list(envelopes)
        try:
            return await self._call(self._log.import_envelopes, items)
        finally:
            self._notify({env.run_id for env in items})

    # --- reading -------------------------------------------------------------------------

    async def list_after(
        self, run_id: uuid.UUID, after_seq: int | None = None, limit: int = DEFAULT_PAGE_LIMIT
    ) -> list[Envelope[E]]:
        """The run's envelopes with ``seq > after_seq``, at most ``limit``; see
        ``SegmentLog.list_after`` (raises ``NotFoundError`` for a run with no events)."""
        check_page_args(run_id, after_seq, limit)
        return await self._call(self._log.list_after, run_id, after_seq, limit)

    async def runs(self) -> list[uuid.UUID]:
        """Ids of the runs in the log (sorted)."""
        return await self._call(self._log.runs)

    async def last_seq(self, run_id: uuid.UUID) -> int | None:
        """The run's last acknowledged seq, or None if it has no events."""
        return await self._call(self._log.last_seq, run_id)

    async def run_info(self, run_id: uuid.UUID) -> RunInfo:
        """A summary of one run; raises ``NotFoundError`` for a run with no events."""
        return await self._call(self._log.run_info, run_id)

    def subscribe(
        self,
        run_id: uuid.UUID,
        after_seq: int | None = None,
        *,
        poll_interval: float | None = None,
        page_size: int = DEFAULT_PAGE_LIMIT,
    ) -> AsyncIterator[Envelope[E]]:
        """Replay the run after ``after_seq``, then follow new events until a terminal one.

        An async iterator: ``async for env in log.subscribe(run_id): ...``. It yields every
        stored envelope with ``seq > after_seq`` (``None``: from the start), then each new one
        as it is appended, each seq exactly once and in order, and stops after the run's
        terminal event. A run with no events yet is waited for. Only persisted events are
        delivered (a failed append never is). A slow consumer holds at most ``page_size``
        envelopes; the rest stay in the log. To resume after a disconnect, pass the last seq
        you saw as ``after_seq``.

        ``poll_interval`` bounds how late an append not made through this object is seen
        (another process's, for a ``read_only`` log; default 0.05 s read-only, 0.25 s
        otherwise); appends made through this object wake subscribers at once. Raises
        ``LogClosedError`` if the log is closed before the terminal event. Close an iterator
        you leave early (``contextlib.aclosing``) to release it at once.
        """
        cursor = check_page_args(run_id, after_seq, page_size)
        if poll_interval is None:
            read_only = self._log.options.read_only
            poll_interval = READ_ONLY_POLL_SECONDS if read_only else WRITER_POLL_SECONDS
        elif not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval!r}")
        return self._follow(run_id, cursor, poll_interval, page_size)

    async def _follow(
        self, run_id: uuid.UUID, cursor: int, poll_interval: float, page_size: int
    ) -> AsyncIterator[Envelope[E]]:
        wake = asyncio.Event()
        waiters = self._waiters.setdefault(run_id, set())
        waiters.add(wake)
        try:
            while True:
                # Cleared before reading: an append that lands during the read sets it again,
                # so the wait below cannot miss it.
                wake.clear()
                try:
                    page = await self._call(self._log.list_after, run_id, cursor, page_size)
                except NotFoundError:
                    page = []
                for env in page:
                    yield env
                    cursor = env.seq
                    if env.is_terminal:
                        return
                if len(page) < page_size:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), poll_interval)
        finally:
            waiters.discard(wake)
            if not waiters and self._waiters.get(run_id) is waiters:
                del self._waiters[run_id]

    # --- maintenance ---------------------------------------------------------------------

    async def delete_run(self, run_id: uuid.UUID) -> bool:
        """Remove a run crash-safely; False if it was absent. See ``SegmentLog.delete_run``."""
        return await self._call(self._log.delete_run, run_id)

    async def retain(
        self,
        max_age: float | None = None,
        max_bytes: int | None = None,
        only_terminal: bool = True,
    ) -> list[uuid.UUID]:
        """Delete whole runs by age and total size; see ``SegmentLog.retain``."""
        return await self._call(self._log.retain, max_age, max_bytes, only_terminal)

    async def sync(self) -> None:
        """Make every acknowledged append durable now (whatever the fsync policy)."""
        await self._call(self._log.sync)

    async def close(self) -> None:
        """Wait for calls already started, sync per the fsync policy, and release the log.

        Idempotent. Waiting subscribers then raise ``LogClosedError``.
        """
        if self._closing:
            return
        self._closing = True
        for waiters in list(self._waiters.values()):
            for event in waiters:
                event.set()
        executor, log = self._executor, self._log

        def finish() -> None:
            executor.shutdown(wait=True)
            log.close()

        await asyncio.get_running_loop().run_in_executor(None, finish)


class _Opening(Generic[E]):
    """What ``open`` returns: await it for the log, or use it as ``async with``."""

    def __init__(self, path: str, threads: int, fs: FileSystem | None, options: Any) -> None:
        self._path = path
        self._threads = threads
        self._fs = fs
        self._options = options
        self._log: AsyncSegmentLog[E] | None = None

    async def _open(self) -> AsyncSegmentLog[E]:
        loop = asyncio.get_running_loop()

        def blocking_open() -> AsyncSegmentLog[E]:
            log: SegmentLog[E] = log_module.open(self._path, fs=self._fs, **self._options)
            try:
                wrapped = AsyncSegmentLog(log, threads=self._threads)
                wrapped._start_threads()
            except BaseException:
                log.close()
                raise
            return wrapped

        return await loop.run_in_executor(None, blocking_open)

    def __await__(self) -> Generator[Any, None, AsyncSegmentLog[E]]:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncSegmentLog[E]:
        self._log = await self._open()
        return self._log

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._log is not None:
            await self._log.close()


def open(
    path: str | os.PathLike[str],
    *,
    threads: int = DEFAULT_THREADS,
    fs: FileSystem | None = None,
    **options: Any,
) -> _Opening[Any]:
    """Open a log for asyncio: ``log = await segmentlog.aio.open(path, fsync="batch")``.

    Also ``async with segmentlog.aio.open(path) as log:``. ``options`` are those of
    ``segmentlog.open`` (``LogOptions``); ``threads`` sizes the log's thread pool (default
    16), which bounds how many appends are in flight and so how many share one fsync. Opening
    runs in a thread too. Raises what ``segmentlog.open`` raises.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    return _Opening(os.fspath(path), threads, fs, options)
