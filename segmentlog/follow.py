"""Following a run: ``wait_for`` (block until a seq is acknowledged) and ``subscribe``.

Strategy and invariants
- ``subscribe`` is built only on a store's ``list_after`` and ``wait_for``: it replays from a
  cursor (the last seq yielded) page by page, then waits and reads on, so replay and live
  delivery are the same loop, with no gap and no duplicate at the seam, and a consumer that
  falls behind holds one page, never an unbounded buffer.
- A writer's ``wait_for`` sleeps on ``AppendSignal``, which commits notify once their appends
  are visible (so a waiter never sees a failed append). Notifying costs nothing while nobody
  waits. A read-only log has no writer to notify it: it polls the files. A multiprocess
  writer is woken by its own appends and polls for the other processes'.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .errors import NotFoundError
from .events import Envelope
from .store import DEFAULT_PAGE_LIMIT, check_page_args

__all__ = ["READ_ONLY_POLL_SECONDS", "AppendSignal", "poll_until", "subscribe"]

E = TypeVar("E")

#: How often a read-only log looks at the files while waiting.
READ_ONLY_POLL_SECONDS = 0.02


class AppendSignal:
    """Wakes ``wait_for`` callers when appends become visible."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiters = 0

    def notify(self) -> None:
        """Wake every waiter (nothing to do while nobody waits)."""
        if self._waiters:
            with self._cond:
                self._cond.notify_all()

    def wait(
        self,
        ready: Callable[[], bool],
        timeout: float | None,
        closed: Callable[[], bool],
        poll: Callable[[], bool] | None = None,
    ) -> bool:
        """Block until ``ready()``; False on timeout or once ``closed()``.

        ``poll`` (a multiprocess writer: did another process append?) is also checked every
        ``READ_ONLY_POLL_SECONDS``, outside the signal's lock, since it may wait for a run
        lock that another process holds across an fsync.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        step = 0.5 if poll is None else READ_ONLY_POLL_SECONDS
        while True:
            if poll is not None and poll():
                return True
            with self._cond:
                self._waiters += 1
                try:
                    if ready():
                        return True
                    if closed():
                        return False
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(step if remaining is None else min(step, remaining))
                finally:
                    self._waiters -= 1


def poll_until(
    ready: Callable[[], bool], timeout: float | None, closed: Callable[[], bool]
) -> bool:
    """Poll ``ready()`` every ``READ_ONLY_POLL_SECONDS``; False on timeout or once closed."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if ready():
            return True
        if closed():
            return False
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return False
        time.sleep(
            READ_ONLY_POLL_SECONDS if remaining is None else min(READ_ONLY_POLL_SECONDS, remaining)
        )


def subscribe(
    store: Any, run_id: uuid.UUID, after_seq: int | None, poll_interval: float
) -> Iterator[Envelope[Any]]:
    """Replay the run after ``after_seq``, then follow it until a terminal event.

    ``store`` has ``list_after`` and ``wait_for`` (and ``closed``, checked between waits).
    """
    cursor = check_page_args(run_id, after_seq, 1)
    while True:
        try:
            page = store.list_after(run_id, cursor, DEFAULT_PAGE_LIMIT)
        except NotFoundError:
            page = []
        for env in page:
            yield env
            cursor = env.seq
            if env.is_terminal:
                return
        if not page:
            store.wait_for(run_id, cursor, poll_interval)
