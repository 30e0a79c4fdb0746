"""Durability machinery: fsync timing, the interval flusher, group commit and fail-stop.

Strategy and invariants
- ``FsyncTimer`` times every fsync for ``stats()`` and logs slow ones through the
  ``segmentlog`` logger. An fsync is never retried: after an error the page cache may have
  dropped the data, and a second fsync could report success for bytes that are gone.
- ``LogState`` is the log's one-way state (open -> failed -> closed), passed down to every
  run, so that any layer checks and sets the same fail-stop flag and raises the same errors.
- ``GroupCommit`` is the writer queue of one run (LevelDB's model): every append enqueues a
  request; the first one becomes the leader, takes everything queued, writes it with one
  write and makes it durable with one fdatasync, then hands leadership to the next queued
  request. So each fdatasync covers every append that arrived while the previous one ran.
  Followers sleep on a lock of their own, released exactly once by the leader: no condition
  variable, no thundering herd (rejected: a shared condition, where every fsync woke every
  waiter to re-check, and GIL hand-offs kept groups at about two appends).
- ``IntervalFlusher`` calls a flush function every ``fsync_interval_ms``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from _thread import allocate_lock
from collections import deque
from collections.abc import Callable
from time import sleep as _yield
from typing import Any, Generic, TypeVar

from .errors import LogClosedError, LogFailedError, LogForkedError, ReadOnlyError

__all__ = ["FsyncTimer", "GroupCommit", "IntervalFlusher", "LogState", "Request", "logger"]

logger = logging.getLogger("segmentlog")

T = TypeVar("T")


class FsyncTimer:
    """Counts fsyncs and keeps recent latencies for percentiles."""

    def __init__(self, slow_threshold_s: float, window: int = 4096) -> None:
        self.slow_threshold_s = slow_threshold_s
        self.count = 0
        self._recent: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def run(self, sync: Callable[[int], None], fd: int, what: str) -> None:
        """Call ``sync(fd)``, timing it; exceptions propagate untouched."""
        start = time.perf_counter()
        sync(fd)
        elapsed = time.perf_counter() - start
        with self._lock:
            self.count += 1
            self._recent.append(elapsed)
        if elapsed >= self.slow_threshold_s:
            logger.warning("slow fsync: %.3f s on %s", elapsed, what)

    def percentile_us(self, q: float) -> float:
        """The ``q`` quantile (0..1) of recent fsync latencies, in microseconds."""
        with self._lock:
            samples = sorted(self._recent)
        if not samples:
            return 0.0
        i = min(len(samples) - 1, int(q * len(samples)))
        return samples[i] * 1e6


_LIVE: weakref.WeakSet[LogState] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for state in list(_LIVE):
        state.forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class LogState:
    """A log's lifecycle: open, failed (fail-stop after an I/O error), closed; and whether
    this process is a ``fork()`` child of the one that opened it."""

    __slots__ = ("__weakref__", "closed", "failed", "forked", "path", "read_only")

    def __init__(self, path: str, read_only: bool) -> None:
        self.path = path
        self.read_only = read_only
        self.failed: BaseException | None = None
        self.closed = False
        self.forked = False
        _LIVE.add(self)

    def _refuse_forked(self) -> None:
        raise LogForkedError(
            f"the log at {self.path} was opened before fork() and cannot be used in the "
            "child; open it again in the child (with multiprocess=True if the parent keeps "
            "writing too)"
        )

    def check_open(self) -> None:
        """Raise ``LogClosedError`` once the log is closed (``LogForkedError`` in a child)."""
        if self.forked:
            self._refuse_forked()
        if self.closed:
            raise LogClosedError(f"the log at {self.path} is closed; open it again")

    def check_writable(self) -> None:
        """Raise unless appends are accepted: closed, read-only or failed logs refuse them."""
        if self.forked:
            self._refuse_forked()
        if self.closed:
            raise LogClosedError(f"the log at {self.path} is closed; open it again")
        if self.read_only:
            raise ReadOnlyError(
                f"the log at {self.path} was opened read_only; open it without read_only to write"
            )
        if self.failed is not None:
            raise LogFailedError(
                f"the log at {self.path} stopped accepting appends after an I/O error "
                f"({self.failed}); fix the cause (disk full? failing disk?) and reopen it",
                self.failed,
            )

    def fail(self, exc: BaseException) -> LogFailedError:
        """Enter fail-stop (the first error wins) and return the error for the caller."""
        if self.failed is None:
            self.failed = exc
            logger.error("segmentlog %s failed stop: %s", self.path, exc)
        return LogFailedError(
            f"append failed and was rolled back: {exc}. The log now refuses appends until "
            "it is reopened; fix the cause (disk full? failing disk?) and reopen it",
            exc,
        )


class Request(Generic[T]):
    """One caller's work in a group: its input, and the result or error the leader sets."""

    __slots__ = ("done", "error", "result", "wake", "work")

    def __init__(self, work: Any) -> None:
        self.work = work
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = False
        self.wake: Any = None

    def outcome(self) -> T:
        """The result, or raise the error."""
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class GroupCommit(Generic[T]):
    """Leader/follower group commit for one run. See the module docstring."""

    __slots__ = ("_last", "_leading", "_mu", "_queue", "groups", "requests")

    def __init__(self) -> None:
        self._mu = threading.Lock()
        self._queue: list[Request[T]] = []
        self._leading = False
        self._last = 1
        #: Groups committed and requests in them (their ratio is appends per fsync).
        self.groups = 0
        self.requests = 0

    def submit(self, work: Any, process: Callable[[list[Request[T]]], None]) -> T:
        """Queue ``work``; return its result once a leader (maybe this thread) committed it.

        ``process`` commits a group: it sets each request's ``result`` or ``error``; an
        exception it raises becomes the error of every request it did not settle.
        """
        req: Request[T] = Request(work)
        with self._mu:
            self._queue.append(req)
            if self._leading:
                req.wake = wake = allocate_lock()
                wake.acquire()
            else:
                self._leading = True
        if req.wake is not None:
            req.wake.acquire()  # released when done, or when promoted to leader
            if req.done:
                return req.outcome()
        # When the last group had company, its members were just released and are about to
        # queue their next appends: give them the GIL (a few yields, no sleeping) so this
        # group takes them along instead of alternating one big group and one of one.
        expect, stalls = self._last, 0
        while len(self._queue) < expect and stalls < 3:
            before = len(self._queue)
            _yield(0)
            stalls = stalls + 1 if len(self._queue) == before else 0
        with self._mu:
            group, self._queue = self._queue, []
        try:
            process(group)
        except BaseException as exc:
            for other in group:
                if other.error is None and other.result is None:
                    other.error = exc
        finally:
            self.groups += 1
            self.requests += len(group)
            self._last = len(group)
            for other in group:
                other.done = True
                if other is not req:
                    other.wake.release()
            with self._mu:
                if self._queue:
                    self._queue[0].wake.release()  # promote: it leads the next group
                else:
                    self._leading = False
        return req.outcome()


class IntervalFlusher:
    """A daemon thread that calls ``flush`` every ``interval_s`` until stopped."""

    def __init__(self, interval_s: float, flush: Callable[[], None]) -> None:
        self._interval_s = interval_s
        self._flush = flush
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="segmentlog-flusher", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._flush()
            except Exception:  # the log has already failed stop; keep the thread quiet
                logger.exception("background fsync failed")

    def stop(self) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
