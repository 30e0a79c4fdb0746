"""Events to rows and rows to Envelopes: every check and conversion that needs no server.

Strategy and invariants
- Every argument is checked, and every event checked, encoded and decoded again (a value
  msgspec cannot carry faithfully is refused), before anything is sent: a batch is refused
  whole, with segmentlog's typed errors, and touches no connection.
- ``prepare`` groups a batch by run, in run-id order (so two multi-run batches lock runs in
  the same order and cannot deadlock), and keeps each event's position in the caller's
  batch, so envelopes go back in input order whatever the grouping.
- The event id and ``emitted_at`` are minted here, on the client, so the client can look
  for its own rows by event id when a connection dies with an append in flight.
- The ``event`` column holds the msgpack-encoded event alone (msgspec,
  ``uuid_format="bytes"``, the encoding the segment engine uses inside its frames).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Generic, NamedTuple, TypeVar

import msgspec
from psycopg.rows import TupleRow

from ..errors import InvalidEventError, RecordTooLargeError
from ..events import Envelope, new_event_id, utcnow
from ..schema import EnvelopeCodec
from ..store import check_append_args, check_expected_run

__all__ = ["RowCodec", "RunBatch", "in_order"]

E = TypeVar("E")


class RunBatch(NamedTuple):
    """One run's part of an append_batch, encoded and ready to send."""

    run_id: uuid.UUID
    positions: list[int]  # where each event sits in the caller's sequence
    events: list[Any]
    event_ids: list[uuid.UUID]
    emitted_at: list[datetime]
    encoded: list[bytes]
    #: The session each event starts or inherits from earlier in this batch, else None.
    sessions: list[uuid.UUID | None]
    #: Each event's idempotency key, or None.
    keys: list[str | None]
    #: How far the batch's first terminal event sits before its last event, else None.
    terminal_back: int | None

    def arguments(self, expected_seq: int | None) -> tuple[Any, ...]:
        """The arguments of ``segmentlog_append`` for this run."""
        keys = self.keys if any(key is not None for key in self.keys) else None
        return (
            self.run_id,
            self.event_ids,
            self.sessions,
            self.emitted_at,
            self.encoded,
            self.terminal_back,
            keys,
            expected_seq,
        )


class RowCodec(Generic[E]):
    """Checks and encodes outgoing events, and rebuilds Envelopes from rows."""

    def __init__(self, event_type: Any, max_record_bytes: int) -> None:
        if max_record_bytes < 1:
            raise ValueError(f"max_record_bytes must be >= 1, got {max_record_bytes}")
        self.codec: EnvelopeCodec[E] = EnvelopeCodec(event_type)
        self.max_record_bytes = max_record_bytes
        self._encode = msgspec.msgpack.Encoder(uuid_format="bytes").encode
        self._decode_event = msgspec.msgpack.Decoder(event_type).decode

    def prepare(
        self,
        events: Iterable[E],
        keys: Sequence[str | None] | None,
        expected_seq: int | None,
    ) -> tuple[int, list[RunBatch]]:
        """Check everything, then encode; return the batch size and its runs' batches.

        Raises ``InvalidKeyError``, ``ValueError`` or ``TypeError`` for bad keys or
        ``expected_seq`` (``check_append_args``), ``InvalidEventError`` or
        ``RecordTooLargeError`` for an event, and ``ValueError`` for ``expected_seq`` with a
        batch over several runs.
        """
        events = list(events)
        checked = check_append_args(len(events), keys, expected_seq)
        event_keys = checked or [None] * len(events)
        by_run: dict[uuid.UUID, RunBatch] = {}
        for position, event in enumerate(events):
            run_id = self.codec.run_id_of(event)
            batch = by_run.get(run_id)
            if batch is None:
                batch = by_run[run_id] = RunBatch(run_id, [], [], [], [], [], [], [], None)
            started = self.codec.session_of(event)
            if started is None and batch.sessions:
                started = batch.sessions[-1]
            batch.positions.append(position)
            batch.events.append(event)
            batch.event_ids.append(new_event_id())
            batch.emitted_at.append(utcnow())
            batch.encoded.append(self.encode_event(event))
            batch.sessions.append(started)
            batch.keys.append(event_keys[position])
        check_expected_run(list(by_run), expected_seq)
        out = []
        for run_id in sorted(by_run):
            batch = by_run[run_id]
            terminal = next((i for i, e in enumerate(batch.events) if _is_terminal(e)), None)
            if terminal is not None:
                batch = batch._replace(terminal_back=len(batch.events) - 1 - terminal)
            out.append(batch)
        return len(events), out

    def encode_event(self, event: E) -> bytes:
        """The event's msgpack bytes, once they are known to decode back equal and fit."""
        # msgspec does not type-check fields at construction, so an event can hold a value
        # its schema forbids (an int for a str, a set for a list). Decoding the bytes once
        # more refuses such an event now, rather than storing a row no reader can decode.
        try:
            encoded = self._encode(event)
            faithful = self._decode_event(encoded) == event
        except (TypeError, ValueError, OverflowError, msgspec.MsgspecError) as exc:
            raise InvalidEventError(
                f"event could not be encoded ({exc}); events must be msgspec Structs of the "
                "store's event_type whose fields hold the types they declare"
            ) from exc
        if not faithful:
            raise InvalidEventError(
                f"{type(event).__name__} does not read back equal after encoding (a field "
                "holds a value its type cannot represent, e.g. a set); nothing was stored"
            )
        if len(encoded) > self.max_record_bytes:
            raise RecordTooLargeError(
                f"event of {len(encoded)} encoded bytes exceeds max_record_bytes="
                f"{self.max_record_bytes}; split the event or create the store with a larger "
                "max_record_bytes"
            )
        return encoded

    @staticmethod
    def appended(batch: RunBatch, last_seq: int, session: uuid.UUID | None) -> list[Envelope[E]]:
        """The envelopes the server stored for ``batch``, given its new last seq and the
        session in force before the append."""
        first = last_seq - len(batch.events) + 1
        return [
            Envelope(
                event_id=batch.event_ids[k],
                seq=first + k,
                run_id=batch.run_id,
                session_id=batch.sessions[k] or session,
                event=event,
                emitted_at=batch.emitted_at[k],
                key=batch.keys[k],
            )
            for k, event in enumerate(batch.events)
        ]

    def to_envelopes(self, run_id: uuid.UUID, rows: Iterable[TupleRow]) -> list[Envelope[E]]:
        """Envelopes from rows of ``seq, event_id, session_id, emitted_at (UTC), event, key``."""
        decode = self._decode_event
        return [
            Envelope(
                event_id=event_id,
                seq=seq,
                run_id=run_id,
                session_id=session_id,
                event=decode(event),
                emitted_at=emitted_at.replace(tzinfo=UTC),
                key=key,
            )
            for seq, event_id, session_id, emitted_at, event, key in rows
        ]


def in_order(n: int, parts: Iterable[tuple[RunBatch, list[Envelope[E]]]]) -> list[Envelope[E]]:
    """The envelopes of every run's batch, back in the caller's order."""
    out: list[Any] = [None] * n
    for batch, envelopes in parts:
        for position, envelope in zip(batch.positions, envelopes, strict=True):
            out[position] = envelope
    return out


def _is_terminal(event: object) -> bool:
    return bool(getattr(type(event), "terminal", False))
