"""In-memory stores: ``MemoryEventStore`` for tests and development, ``FailingEventStore``.

Strategy and invariants
- One lock guards all state, so appends from many threads get gapless seqs per run.
- The session id of a run is taken from its ``RunStarted`` (the RunStarted envelope carries it
  too) and attached to every later envelope of the run.
- Events are checked with the same ``EnvelopeCodec`` the segment engine uses, so both stores
  refuse the same inputs with the same errors.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from .errors import AppendError, NotFoundError
from .events import AgentEvent, Envelope, new_event_id, utcnow
from .schema import EnvelopeCodec
from .store import DEFAULT_PAGE_LIMIT, check_page_args

__all__ = ["FailingEventStore", "MemoryEventStore"]

E = TypeVar("E")


class MemoryEventStore(Generic[E]):
    """A thread-safe, non-durable event store held in a dict of lists."""

    def __init__(self, event_type: Any = AgentEvent) -> None:
        self._codec: EnvelopeCodec[E] = EnvelopeCodec(event_type)
        self._lock = threading.Lock()
        self._events: dict[uuid.UUID, list[Envelope[E]]] = {}
        self._sessions: dict[uuid.UUID, uuid.UUID | None] = {}

    def append(self, event: E) -> Envelope[E]:
        """Store ``event``; raises ``InvalidEventError`` for a wrong event type."""
        return self.append_batch([event])[0]

    def append_batch(self, events: Sequence[E]) -> list[Envelope[E]]:
        """Store every event or none; envelopes come back in input order."""
        events = list(events)
        run_ids = [self._codec.run_id_of(event) for event in events]
        out: list[Envelope[E]] = []
        with self._lock:
            pending: dict[uuid.UUID, list[Envelope[E]]] = {}
            started: dict[uuid.UUID, uuid.UUID | None] = {}
            for event, run_id in zip(events, run_ids, strict=True):
                session = self._codec.session_of(event)
                if session is not None:
                    started[run_id] = session
                stored = self._events.get(run_id, ())
                queued = pending.setdefault(run_id, [])
                envelope = Envelope(
                    event_id=new_event_id(),
                    seq=len(stored) + len(queued) + 1,
                    run_id=run_id,
                    session_id=started.get(run_id, self._sessions.get(run_id)),
                    event=event,
                    emitted_at=utcnow(),
                )
                self._codec.check(envelope)
                queued.append(envelope)
                out.append(envelope)
            for run_id, queued in pending.items():
                self._events.setdefault(run_id, []).extend(queued)
            self._sessions.update(started)
        return out

    def list_after(
        self, run_id: uuid.UUID, after_seq: int | None = None, limit: int = DEFAULT_PAGE_LIMIT
    ) -> list[Envelope[E]]:
        """Return envelopes with ``seq > after_seq``; raises ``NotFoundError`` for a new run."""
        after = check_page_args(run_id, after_seq, limit)
        with self._lock:
            stored = self._events.get(run_id)
            if stored is None:
                raise NotFoundError(run_id)
            return stored[after : after + limit]

    def runs(self) -> list[uuid.UUID]:
        """The ids of every run with at least one event."""
        with self._lock:
            return list(self._events)

    def last_seq(self, run_id: uuid.UUID) -> int | None:
        """The run's last seq, or ``None`` for a run with no events."""
        with self._lock:
            stored = self._events.get(run_id)
            return len(stored) if stored else None


class FailingEventStore(Generic[E]):
    """A store whose appends always fail: for testing what callers do when persistence fails."""

    def append(self, event: E) -> Envelope[E]:
        """Always raises ``AppendError``."""
        raise AppendError("FailingEventStore always rejects appends (by design, for tests)")

    def append_batch(self, events: Sequence[E]) -> list[Envelope[E]]:
        """Always raises ``AppendError``."""
        raise AppendError("FailingEventStore always rejects appends (by design, for tests)")

    def list_after(
        self, run_id: uuid.UUID, after_seq: int | None = None, limit: int = DEFAULT_PAGE_LIMIT
    ) -> list[Envelope[E]]:
        """Always raises ``NotFoundError`` (after checking the arguments)."""
        check_page_args(run_id, after_seq, limit)
        raise NotFoundError(run_id)
