"""One async face over any event store: blocking calls on bounded worker threads.

Strategy and invariants
- ``StoreReader`` wraps whatever ``create_app`` was given: a blocking store (``SegmentLog``,
  ``MemoryEventStore``, ``PostgresEventStore``, anything with the EventStore contract) or an
  asyncio one (``AsyncSegmentLog``, ``AsyncPostgresEventStore``: their ``list_after`` is a
  coroutine function). Async stores are awaited directly. Blocking calls run on anyio worker
  threads under the reader's own ``CapacityLimiter``, so however many requests and streams
  there are, at most ``threads`` store calls run at once and the event loop never blocks.
- ``wait_for`` (only ``SegmentLog`` has it) blocks a thread for up to ``timeout``; those calls
  take a second limiter so that followers never starve page reads. Following code calls it
  once per followed *run* (see ``_feed.py``), never once per client.
- ``summary`` gives the same fields for every store: ``SegmentLog.run_info()`` where there
  is one, else derived from ``last_seq()`` and the last envelope (terminal from
  ``Envelope.is_terminal``, mtime from its ``emitted_at``; bytes and segments unknown).
- Optional methods that a store lacks raise ``Unsupported``; the app answers 501.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import msgspec

from ..errors import CorruptionError, NotFoundError
from ..events import Envelope

__all__ = ["RunSummary", "StoreReader", "Unsupported"]

T = TypeVar("T")


class Unsupported(Exception):
    """The store lacks an optional method (``runs``, ``last_seq``) the request needs."""


class RunSummary(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What ``GET /runs`` and ``GET /runs/{run_id}`` say about a run.

    The fields of ``segmentlog.RunInfo``; ``bytes`` and ``segments`` are ``None`` for stores
    other than ``SegmentLog``, where ``mtime`` is the last event's ``emitted_at``. ``damage``
    (left out when ``None``) says why a run in a listing could not be read.
    """

    run_id: uuid.UUID
    events: int
    first_seq: int | None
    last_seq: int | None
    bytes: int | None
    segments: int | None
    session_id: uuid.UUID | None
    terminal: bool
    mtime: float
    damage: str | None = None


class StoreReader:
    """Reads a store from async code; see the module docstring."""

    def __init__(self, store: Any, *, threads: int) -> None:
        if not hasattr(store, "list_after"):
            raise TypeError(
                f"{type(store).__name__} is not an event store: it has no list_after method"
            )
        self.store = store
        self.is_async = inspect.iscoroutinefunction(store.list_after)
        self.can_wait = not self.is_async and callable(getattr(store, "wait_for", None))
        self._limiter = anyio.CapacityLimiter(threads)
        self._wait_limiter = anyio.CapacityLimiter(threads)

    async def _call(self, name: str, *args: Any) -> Any:
        method: Callable[..., Any] | None = getattr(self.store, name, None)
        if method is None:
            raise Unsupported(f"{type(self.store).__name__} has no {name}() method")
        if self.is_async:
            return await method(*args)
        return await anyio.to_thread.run_sync(method, *args, limiter=self._limiter)

    async def list_after(self, run_id: uuid.UUID, after: int, limit: int) -> list[Envelope[Any]]:
        """The run's envelopes with ``seq > after``; raises ``NotFoundError`` for no events."""
        page: list[Envelope[Any]] = await self._call("list_after", run_id, after, limit)
        return page

    async def runs(self) -> list[uuid.UUID]:
        """Every run id, sorted by its canonical text (so pages are stable across stores)."""
        ids: list[uuid.UUID] = await self._call("runs")
        return sorted(ids, key=str)

    async def last_seq(self, run_id: uuid.UUID) -> int | None:
        """The run's last seq, or ``None`` when it has no events."""
        value: int | None = await self._call("last_seq", run_id)
        return value

    async def wait_for(self, run_id: uuid.UUID, after_seq: int, timeout: float) -> bool:
        """``store.wait_for`` on a thread of the waiting pool (only when ``can_wait``)."""
        result: bool = await anyio.to_thread.run_sync(
            self.store.wait_for, run_id, after_seq, timeout, limiter=self._wait_limiter
        )
        return result

    async def summary(self, run_id: uuid.UUID) -> RunSummary:
        """The run's summary; raises ``NotFoundError`` for a run with no events."""
        if self.is_async:
            return await self._summary_async(run_id)
        result: RunSummary = await anyio.to_thread.run_sync(
            self._summary_blocking, run_id, limiter=self._limiter
        )
        return result

    async def summaries(self, run_ids: list[uuid.UUID]) -> list[RunSummary]:
        """Summaries of ``run_ids`` (in one worker-thread call for a blocking store).

        Runs without events are left out; a damaged run is listed with its ``damage``.
        """
        if self.is_async:
            found = []
            for run_id in run_ids:
                try:
                    found.append(await self._summary_async(run_id))
                except NotFoundError:
                    continue
                except CorruptionError as exc:
                    found.append(_damaged(run_id, str(exc)))
            return found
        result: list[RunSummary] = await anyio.to_thread.run_sync(
            self._summaries_blocking, run_ids, limiter=self._limiter
        )
        return result

    def _summaries_blocking(self, run_ids: list[uuid.UUID]) -> list[RunSummary]:
        found = []
        for run_id in run_ids:
            try:
                found.append(self._summary_blocking(run_id))
            except NotFoundError:
                continue
            except CorruptionError as exc:
                found.append(_damaged(run_id, str(exc)))
        return found

    def _summary_blocking(self, run_id: uuid.UUID) -> RunSummary:
        run_info = getattr(self.store, "run_info", None)
        if run_info is not None:
            info = run_info(run_id)
            return RunSummary(**msgspec.structs.asdict(info))
        last_seq = getattr(self.store, "last_seq", None)
        if last_seq is None:
            raise Unsupported(f"{type(self.store).__name__} has no last_seq() method")
        last = last_seq(run_id)
        if not last:
            raise NotFoundError(run_id)
        return _derived(run_id, self.store.list_after(run_id, last - 1, 1))

    async def _summary_async(self, run_id: uuid.UUID) -> RunSummary:
        run_info = getattr(self.store, "run_info", None)
        if run_info is not None:
            info = await run_info(run_id)
            return RunSummary(**msgspec.structs.asdict(info))
        last = await self.last_seq(run_id)
        if not last:
            raise NotFoundError(run_id)
        return _derived(run_id, await self.store.list_after(run_id, last - 1, 1))


def _derived(run_id: uuid.UUID, tail: list[Envelope[Any]]) -> RunSummary:
    if not tail:  # the run vanished between the two calls (deleted)
        raise NotFoundError(run_id)
    env = tail[-1]
    return RunSummary(
        run_id=run_id,
        events=env.seq,
        first_seq=1,
        last_seq=env.seq,
        bytes=None,
        segments=None,
        session_id=env.session_id,
        terminal=env.is_terminal,
        mtime=env.emitted_at.timestamp(),
    )


def _damaged(run_id: uuid.UUID, reason: str) -> RunSummary:
    return RunSummary(
        run_id=run_id,
        events=0,
        first_seq=None,
        last_seq=None,
        bytes=None,
        segments=None,
        session_id=None,
        terminal=False,
        mtime=0.0,
        damage=reason,
    )
