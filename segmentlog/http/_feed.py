"""Following runs for SSE clients: one follower per run, shared by all its streams.

Strategy and invariants
- Each SSE frame is encoded once (``encode_frame``: ``id: <seq>``, ``event: <type>``,
  ``data: <envelope JSON>``) and the same bytes go to every client. msgspec's JSON never
  contains a raw newline, so ``data`` is always one line.
- ``RunFeed`` is created when the first stream of a run starts and dropped when the last one
  ends. It holds a bounded, gapless window of the newest frames (``cache_size``), seqs
  ``first_seq .. last``, and a flag once the run's terminal event is in it.
- No background task and no thread per client: a stream that has caught up with ``last``
  either waits for ``changed`` or, if nobody is fetching, becomes the *leader* for one step:
  it waits for new events (``SegmentLog.wait_for`` on one worker thread, at most
  ``wait_step`` seconds; other stores: one ``list_after`` poll, then a ``poll_interval``
  sleep), appends what it read to the window and sets ``changed``, always, in ``finally``.
  If the leader's client goes away, the next waiter leads. So each followed run costs at
  most one store call at a time, however many clients follow it.
- A stream behind the window (a resume from an old seq, or a slow reader the window has
  moved past) reads its own pages straight from the store; memory stays bounded by the window
  plus one page per stream, never an unbounded queue. Every read is ``seq > cursor`` from
  the last seq the stream sent, so there is no gap and no duplicate between store pages,
  window slices and live frames.
- Each page read from the store is checked to be gapless and to start right after the cursor
  it was asked for; a store that breaks this is reported (``RuntimeError``), never papered
  over, because a silent gap is the one thing a resumable stream must not produce.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec

from ..errors import NotFoundError
from ..events import Envelope
from ._reader import StoreReader

__all__ = ["FeedRegistry", "Frame", "RunFeed", "encode_frame", "event_name"]

_encode = msgspec.json.Encoder().encode


class Frame(msgspec.Struct, frozen=True):
    """One encoded SSE message for one envelope."""

    seq: int
    data: bytes
    terminal: bool


def event_name(cls: type) -> str:
    """The SSE ``event:`` name of events of class ``cls``: its msgspec tag, else its name."""
    config = getattr(cls, "__struct_config__", None)
    tag = getattr(config, "tag", None)
    name = cls.__name__ if tag is None else str(tag)
    return name.replace("\r", " ").replace("\n", " ")


def encode_frame(env: Envelope[Any]) -> Frame:
    """The SSE message for ``env``."""
    data = b"id: %d\r\nevent: %s\r\ndata: %s\r\n\r\n" % (
        env.seq,
        event_name(type(env.event)).encode("utf-8"),
        _encode(env),
    )
    return Frame(env.seq, data, env.is_terminal)


def _check_page(run_id: uuid.UUID, after: int, page: list[Envelope[Any]]) -> None:
    for expected, env in enumerate(page, after + 1):
        if env.seq != expected:
            raise RuntimeError(
                f"the store returned seq {env.seq} of run {run_id} where seq {expected} "
                "was due; refusing to stream a gap"
            )


class RunFeed:
    """The shared follower of one run; see the module docstring."""

    def __init__(
        self,
        reader: StoreReader,
        run_id: uuid.UUID,
        *,
        last: int,
        cache_size: int,
        page_size: int,
        wait_step: float,
        poll_interval: float,
    ) -> None:
        self.run_id = run_id
        self.users = 0
        self._reader = reader
        self._frames: list[Frame] = []
        self._first = last + 1  # seq of _frames[0]
        self._last = last  # highest seq known to be stored
        self._done = False  # the terminal frame is in the window
        self._leading = False
        self._changed = anyio.Event()
        self._cache_size = cache_size
        self._page_size = page_size
        self._wait_step = wait_step
        self._poll_interval = poll_interval

    async def frames_after(self, cursor: int, stop: anyio.Event) -> list[Frame]:
        """Frames with ``seq > cursor``, waiting until there is at least one.

        Returns ``[]`` when the stream should end: ``stop`` is set (the server is shutting
        down), or the run's terminal event is at or before ``cursor``.
        """
        while not stop.is_set():
            if cursor < self._last:
                if self._first <= cursor + 1:  # inside the window
                    start = cursor + 1 - self._first
                    return self._frames[start : start + self._page_size]
                return await self._read_store(cursor)
            if self._done:  # nothing can follow the terminal event
                break
            if self._leading:
                changed = self._changed
                with anyio.move_on_after(self._wait_step):
                    await changed.wait()
            else:
                await self._lead()
        return []

    async def _read_store(self, cursor: int) -> list[Frame]:
        try:
            page = await self._reader.list_after(self.run_id, cursor, self._page_size)
        except NotFoundError:
            page = []
        _check_page(self.run_id, cursor, page)
        return [encode_frame(env) for env in page]

    async def _lead(self) -> None:
        self._leading = True
        try:
            after = self._last
            if self._reader.can_wait and not await self._reader.wait_for(
                self.run_id, after, self._wait_step
            ):
                return
            try:
                page = await self._reader.list_after(self.run_id, after, self._page_size)
            except NotFoundError:
                page = []
            if not page:
                if not self._reader.can_wait:
                    await anyio.sleep(self._poll_interval)
                return
            if after != self._last:  # cannot happen: only the leader moves _last
                return
            _check_page(self.run_id, after, page)
            self._append([encode_frame(env) for env in page])
        finally:
            self._leading = False
            changed, self._changed = self._changed, anyio.Event()
            changed.set()

    def _append(self, frames: list[Frame]) -> None:
        self._frames.extend(frames)
        self._last = frames[-1].seq
        self._done = self._done or any(frame.terminal for frame in frames)
        excess = len(self._frames) - self._cache_size
        if excess > 0:
            del self._frames[:excess]
            self._first += excess


class FeedRegistry:
    """The ``RunFeed`` of every run that has at least one open stream."""

    def __init__(
        self,
        reader: StoreReader,
        *,
        cache_size: int,
        page_size: int,
        wait_step: float,
        poll_interval: float,
    ) -> None:
        self._reader = reader
        self._feeds: dict[uuid.UUID, RunFeed] = {}
        self._options: dict[str, Any] = {
            "cache_size": cache_size,
            "page_size": page_size,
            "wait_step": wait_step,
            "poll_interval": poll_interval,
        }
        #: Streams open right now (for operators and tests).
        self.streams = 0

    @property
    def followed_runs(self) -> int:
        """How many runs have a feed (at least one open stream)."""
        return len(self._feeds)

    @asynccontextmanager
    async def follow(self, run_id: uuid.UUID, last: int) -> AsyncIterator[RunFeed]:
        """The run's feed for the duration of one stream (``last``: its seq now, if new)."""
        feed = self._feeds.get(run_id)
        if feed is None:
            feed = RunFeed(self._reader, run_id, last=last, **self._options)
            self._feeds[run_id] = feed
        feed.users += 1
        self.streams += 1
        try:
            yield feed
        finally:
            self.streams -= 1
            feed.users -= 1
            if feed.users == 0 and self._feeds.get(run_id) is feed:
                del self._feeds[run_id]
