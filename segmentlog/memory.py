"""In-memory stores: ``MemoryEventStore`` for tests and development, ``FailingEventStore``.

Strategy and invariants
- One lock guards all state, so appends from many threads get gapless seqs per run, and a
  key's lookup and its append are one step: concurrent retries of a key store it once.
- The session id of a run is taken from its ``RunStarted`` (the RunStarted envelope carries it
  too) and attached to every later envelope of the run.
- Every argument and every event is checked before the lock is taken, with the same
  ``check_append_args`` and ``EnvelopeCodec`` the other backends use, so all stores refuse the
  same inputs with the same errors; ``FailingEventStore`` checks them too before refusing.
- Idempotency keys are per run (``_keys[run_id][key]`` is the stored envelope); the
  keys-first rule is ``segmentlog.store.held_envelopes``, shared with the other backends.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Generic, NamedTuple, TypeVar

from .errors import AppendError, NotFoundError, SeqConflictError
from .events import AgentEvent, Envelope, new_event_id, utcnow
from .schema import EnvelopeCodec
from .store import (
    DEFAULT_PAGE_LIMIT,
    check_append_args,
    check_expected_run,
    check_page_args,
    held_envelopes,
)

__all__ = ["FailingEventStore", "MemoryEventStore"]

E = TypeVar("E")

_NO_ID = uuid.UUID(int=0)
_NO_TIME = datetime(1970, 1, 1, tzinfo=UTC)


class _Checked(NamedTuple, Generic[E]):
    """An append's arguments, all checked."""

    events: list[E]
    run_ids: list[uuid.UUID]
    keys: list[str | None] | None


def _check(
    codec: EnvelopeCodec[E],
    events: Sequence[E],
    keys: Sequence[str | None] | None,
    expected_seq: int | None,
) -> _Checked[E]:
    """Check an append's arguments in the order every backend does; raise the first error."""
    events = list(events)
    checked_keys = check_append_args(len(events), keys, expected_seq)
    run_ids = []
    for event in events:
        run_id = codec.run_id_of(event)
        codec.check(Envelope(_NO_ID, 1, run_id, None, event, _NO_TIME))
        run_ids.append(run_id)
    check_expected_run(run_ids, expected_seq)
    return _Checked(events, run_ids, checked_keys)


class MemoryEventStore(Generic[E]):
    """A thread-safe, non-durable event store held in a dict of lists."""

    def __init__(self, event_type: Any = AgentEvent) -> None:
        self._codec: EnvelopeCodec[E] = EnvelopeCodec(event_type)
        self._lock = threading.Lock()
        self._events: dict[uuid.UUID, list[Envelope[E]]] = {}
        self._sessions: dict[uuid.UUID, uuid.UUID | None] = {}
        self._keys: dict[uuid.UUID, dict[str, Envelope[E]]] = {}

    def append(
        self, event: E, *, key: str | None = None, expected_seq: int | None = None
    ) -> Envelope[E]:
        """Store ``event``: ``append_batch([event], keys=[key], expected_seq=expected_seq)``."""
        return self.append_batch([event], keys=[key], expected_seq=expected_seq)[0]

    def append_batch(
        self,
        events: Sequence[E],
        *,
        keys: Sequence[str | None] | None = None,
        expected_seq: int | None = None,
    ) -> list[Envelope[E]]:
        """Store every event or none; envelopes come back in input order.

        ``keys`` are idempotency keys (one per event, or None): when the runs hold every key
        for an equal event, the stored envelopes come back and nothing is written. With
        ``expected_seq``, the batch (of one run) is stored only if the run's last seq equals
        it (0: no events yet). Raises ``InvalidEventError``, ``InvalidKeyError``,
        ``ValueError``/``TypeError`` for bad arguments, ``IdempotencyConflictError`` and
        ``SeqConflictError``; in each case nothing was stored.
        """
        checked = _check(self._codec, events, keys, expected_seq)
        with self._lock:
            if checked.keys is not None:
                held = held_envelopes(checked.events, checked.keys, self._held(checked))
                if held is not None:
                    return held
            if expected_seq is not None and checked.run_ids:
                run_id = checked.run_ids[0]
                actual = len(self._events.get(run_id, ()))
                if actual != expected_seq:
                    raise SeqConflictError(run_id, expected_seq, actual)
            return self._append(checked)

    def _held(self, checked: _Checked[E]) -> list[Envelope[E] | None]:
        assert checked.keys is not None
        return [
            None if key is None else self._keys.get(run_id, {}).get(key)
            for run_id, key in zip(checked.run_ids, checked.keys, strict=True)
        ]

    def _append(self, checked: _Checked[E]) -> list[Envelope[E]]:
        keys = checked.keys or [None] * len(checked.events)
        out: list[Envelope[E]] = []
        pending: dict[uuid.UUID, list[Envelope[E]]] = {}
        started: dict[uuid.UUID, uuid.UUID | None] = {}
        for event, run_id, key in zip(checked.events, checked.run_ids, keys, strict=True):
            session = self._codec.session_of(event)
            if session is not None:
                started[run_id] = session
            queued = pending.setdefault(run_id, [])
            envelope = Envelope(
                event_id=new_event_id(),
                seq=len(self._events.get(run_id, ())) + len(queued) + 1,
                run_id=run_id,
                session_id=started.get(run_id, self._sessions.get(run_id)),
                event=event,
                emitted_at=utcnow(),
                key=key,
            )
            queued.append(envelope)
            out.append(envelope)
        for run_id, queued in pending.items():
            self._events.setdefault(run_id, []).extend(queued)
            held = self._keys.setdefault(run_id, {})
            held.update((e.key, e) for e in queued if e.key is not None)
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
    """A store whose appends always fail: for testing what callers do when persistence fails.

    Arguments are still checked first, as every store checks them, so bad input gets the
    same typed errors here as anywhere (``event_type`` as for ``MemoryEventStore``).
    """

    def __init__(self, event_type: Any = AgentEvent) -> None:
        self._codec: EnvelopeCodec[E] = EnvelopeCodec(event_type)

    def append(
        self, event: E, *, key: str | None = None, expected_seq: int | None = None
    ) -> Envelope[E]:
        """Always raises ``AppendError`` (after checking the arguments)."""
        return self.append_batch([event], keys=[key], expected_seq=expected_seq)[0]

    def append_batch(
        self,
        events: Sequence[E],
        *,
        keys: Sequence[str | None] | None = None,
        expected_seq: int | None = None,
    ) -> list[Envelope[E]]:
        """Always raises ``AppendError`` (after checking the arguments)."""
        _check(self._codec, events, keys, expected_seq)
        raise AppendError("FailingEventStore always rejects appends (by design, for tests)")

    def list_after(
        self, run_id: uuid.UUID, after_seq: int | None = None, limit: int = DEFAULT_PAGE_LIMIT
    ) -> list[Envelope[E]]:
        """Always raises ``NotFoundError`` (after checking the arguments)."""
        check_page_args(run_id, after_seq, limit)
        raise NotFoundError(run_id)
