"""Preparing an append: events in, seqs assigned and frames encoded and validated, no I/O.

Strategy and invariants
- ``prepare`` is the whole CPU side of an append, so a bad event is refused before a byte is
  written: envelopes get their ids, seqs and session, are encoded into the caller's buffer
  (``frames.FrameEncoder``) and, with ``validate_events``, decoded back (``schema``).
- It is pure: a failed preparation leaves the buffer exactly as it was, and nothing here
  knows a file, a lock or a policy. Frames of one preparation form one atomic batch: every
  frame but the last carries the CONTINUED bit.
- Imports keep their envelopes as they are, but only when their seqs continue the run.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .durability import Request
from .events import Envelope, new_event_id, utcnow
from .format import (
    FRAME_HEADER_SIZE,
    MAX_SEGMENT_OFFSET,
)
from .frames import (
    FrameEncoder,
)
from .schema import EnvelopeCodec

__all__ = ["Prepared", "Work", "check_import", "index_points", "make_envelopes", "prepare"]

E = TypeVar("E")


class Work(Generic[E]):
    """One caller's append: its events (with their idempotency keys and the run's expected
    last seq, if any), or envelopes to import as they are."""

    __slots__ = ("events", "expected_seq", "imported", "keys")

    def __init__(
        self,
        events: list[E],
        imported: list[Envelope[E]] | None = None,
        keys: list[str | None] | None = None,
        expected_seq: int | None = None,
    ) -> None:
        self.events = events
        self.imported = imported
        self.keys = keys
        self.expected_seq = expected_seq


class Prepared(Generic[E]):
    """A request's envelopes and their frames: in ``buf``, starting at offsets ``starts``.

    ``aliases`` are requests of the same group that retried one of its keys: they get their
    envelopes from this one once it is committed.
    """

    __slots__ = ("aliases", "buf", "envelopes", "request", "starts")

    def __init__(
        self, request: Request[list[Envelope[E]]], envelopes: list[Envelope[E]], buf: bytearray
    ) -> None:
        self.request = request
        self.envelopes = envelopes
        self.buf = buf
        self.starts: list[int] = []
        self.aliases: list[tuple[Request[list[Envelope[E]]], list[Envelope[E]]]] = []


def make_envelopes(
    codec: EnvelopeCodec[E],
    run_id: uuid.UUID,
    session: uuid.UUID | None,
    events: list[E],
    seq: int,
    keys: list[str | None] | None = None,
) -> list[Envelope[E]]:
    """Envelopes for ``events`` from ``seq`` on; a ``RunStarted`` sets the session."""
    session_of = codec.session_of
    out: list[Envelope[E]] = []
    for i, event in enumerate(events):
        started = session_of(event)
        if started is not None:
            session = started
        key = None if keys is None else keys[i]
        out.append(Envelope(new_event_id(), seq, run_id, session, event, utcnow(), key))
        seq += 1
    return out


def check_import(
    run_id: uuid.UUID, imported: list[Envelope[E]], expected: int
) -> list[Envelope[E]]:
    """``imported`` if its seqs continue the run at ``expected`` without a gap."""
    if imported[0].seq != expected:
        raise ValueError(
            f"run {run_id}: import of seq {imported[0].seq} refused; the run's next seq "
            f"is {expected} (import never creates gaps or overwrites)"
        )
    for prev, env in itertools.pairwise(imported):
        if env.seq != prev.seq + 1:
            raise ValueError(f"run {run_id}: import seqs jump from {prev.seq} to {env.seq}")
    return imported


def prepare(
    encoder: FrameEncoder,
    check: Callable[[bytes | bytearray, Envelope[Any]], None] | None,
    req: Request[list[Envelope[E]]],
    envelopes: list[Envelope[E]],
    mark: int,
    buf: bytearray,
) -> Prepared[E]:
    """Encode ``envelopes`` as one atomic batch of frames appended to ``buf``.

    ``mark`` is the segment offset known durable. Raises ``InvalidEventError``,
    ``RecordTooLargeError`` or ``ValueError`` for bad input, leaving ``buf`` as it was.
    """
    prepared = Prepared(req, envelopes, buf)
    encode, starts = encoder.encode, prepared.starts
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


def index_points(prepared: list[Prepared[Any]], start: int) -> list[tuple[int, int]]:
    """Index candidates: (seq, offset) of every frame of ``prepared`` written at ``start``."""
    return [
        (env.seq, start + off)
        for p in prepared
        for env, off in zip(p.envelopes, p.starts, strict=True)
    ]
