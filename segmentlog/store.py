"""The event-store contract every backend implements.

Strategy and invariants
- ``EventStore`` is a structural Protocol: the memory stores, the segment engine and the
  PostgreSQL backend satisfy it without inheriting from anything.
- ``append`` returns the stored Envelope; if it raises, nothing was persisted.
- ``seq`` is per run, starts at 1 and has no gaps. ``list_after`` returns ``seq > after_seq``
  in order, at most ``limit``; ``after_seq`` of ``None`` or ``0`` means from the start.
- An unknown run is ``NotFoundError``; a negative ``after_seq`` or a ``limit`` below 1 is a
  ``ValueError`` (checked by ``check_page_args``, shared by every backend).
- Idempotency keys and ``expected_seq`` are checked by ``check_append_args`` (and
  ``check_expected_run``) before any backend touches storage, so every backend refuses the
  same bad input the same way. ``held_envelopes`` is the one statement of the keys-first
  rule: each backend looks up the keys it holds, and this decides what that means.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from .errors import IdempotencyConflictError, InvalidKeyError
from .events import Envelope

__all__ = [
    "DEFAULT_PAGE_LIMIT",
    "MAX_KEY_BYTES",
    "EventStore",
    "check_append_args",
    "check_expected_run",
    "check_key",
    "check_page_args",
    "held_envelopes",
]

#: The ``limit`` used by ``list_after`` when none is given.
DEFAULT_PAGE_LIMIT = 1000
#: Longest idempotency key, in bytes of UTF-8.
MAX_KEY_BYTES = 256

E = TypeVar("E")


@runtime_checkable
class EventStore(Protocol[E]):
    """A durable, per-run, append-only sequence of events."""

    def append(
        self, event: E, *, key: str | None = None, expected_seq: int | None = None
    ) -> Envelope[E]:
        """Store ``event`` and return its envelope; raises ``AppendError`` if not persisted.

        ``key``: an idempotency key, unique in the run (a retry returns the stored envelope).
        ``expected_seq``: store only if the run's last seq equals it (``SeqConflictError``).
        """
        ...

    def append_batch(
        self,
        events: Sequence[E],
        *,
        keys: Sequence[str | None] | None = None,
        expected_seq: int | None = None,
    ) -> list[Envelope[E]]:
        """Store several events atomically per run; envelopes come back in input order."""
        ...

    def list_after(
        self, run_id: uuid.UUID, after_seq: int | None = None, limit: int = DEFAULT_PAGE_LIMIT
    ) -> list[Envelope[E]]:
        """Return the run's envelopes with ``seq > after_seq``, in order, at most ``limit``."""
        ...


def check_page_args(run_id: Any, after_seq: int | None, limit: int) -> int:
    """Validate ``list_after`` arguments; return ``after_seq`` with ``None`` mapped to 0."""
    if not isinstance(run_id, uuid.UUID):
        raise TypeError(f"run_id must be a uuid.UUID, got {type(run_id).__name__}")
    if after_seq is None:
        after_seq = 0
    elif isinstance(after_seq, bool) or not isinstance(after_seq, int):
        raise TypeError(f"after_seq must be an int or None, got {type(after_seq).__name__}")
    elif after_seq < 0:
        raise ValueError(f"after_seq must be >= 0 (seqs start at 1), got {after_seq}")
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int, got {type(limit).__name__}")
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    return after_seq


def check_key(key: object) -> str:
    """Return ``key`` if it is a valid idempotency key, else raise ``InvalidKeyError``."""
    if not isinstance(key, str):
        raise InvalidKeyError(f"an idempotency key must be a str, got {type(key).__name__}")
    if not key:
        raise InvalidKeyError("an idempotency key must not be empty; pass None for no key")
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        raise InvalidKeyError(
            f"an idempotency key is at most {MAX_KEY_BYTES} bytes of UTF-8, got {size}; "
            "use a shorter key (a hash of a long one, for example)"
        )
    return key


def check_append_args(
    count: int, keys: Sequence[str | None] | None, expected_seq: int | None
) -> list[str | None] | None:
    """Validate the keys and ``expected_seq`` of an append of ``count`` events.

    Returns the keys as a list (``None`` when no event has a key). Raises ``InvalidKeyError``
    for a bad key, ``ValueError`` when ``keys`` has the wrong length or repeats a key, and
    ``TypeError``/``ValueError`` for an ``expected_seq`` that is not an int >= 0.
    """
    if expected_seq is not None:
        if isinstance(expected_seq, bool) or not isinstance(expected_seq, int):
            raise TypeError(
                f"expected_seq must be an int or None, got {type(expected_seq).__name__}"
            )
        if expected_seq < 0:
            raise ValueError(
                f"expected_seq must be >= 0 (0: the run must not exist yet), got {expected_seq}"
            )
    if keys is None:
        return None
    if isinstance(keys, str):
        raise TypeError("keys must be a sequence of str or None, one per event, not a str")
    out = list(keys)
    if len(out) != count:
        raise ValueError(f"keys has {len(out)} entries for {count} events; give one per event")
    seen: set[str] = set()
    for key in out:
        if key is None:
            continue
        check_key(key)
        if key in seen:
            raise ValueError(f"key {key!r} appears twice in one batch; each key names one event")
        seen.add(key)
    return out if seen else None


def check_expected_run(run_ids: Sequence[uuid.UUID], expected_seq: int | None) -> None:
    """Raise ``ValueError`` when ``expected_seq`` is given for a batch over several runs.

    ``run_ids`` are the batch's events' run ids (repeats allowed). ``expected_seq`` is one
    run's last seq, so a conditional batch must stay within one run.
    """
    if expected_seq is not None and len(set(run_ids)) > 1:
        raise ValueError(
            f"expected_seq is one run's last seq, but this batch's events belong to "
            f"{len(set(run_ids))} runs; append each run's events in a conditional batch of "
            "its own"
        )


def held_envelopes(
    events: Sequence[E], keys: Sequence[str | None], stored: Sequence[Envelope[E] | None]
) -> list[Envelope[E]] | None:
    """Decide a keyed batch by the keys its runs already hold (the keys-first rule).

    ``stored[i]`` is the envelope that the run of ``events[i]`` holds under ``keys[i]``, or
    ``None`` when that event has no key or its key is new. Returns ``None`` when no key is
    held: the batch is appended as usual. Returns the stored envelopes, in input order, when
    every event's key is held by an equal event (msgspec ``==``): nothing is to be written.

    Raises ``IdempotencyConflictError`` (and nothing is to be written) otherwise: first for the
    first held key, in input order, whose stored event differs from the given one; else, for a
    batch that mixes held keys with new keys or unkeyed events, naming its first held key.
    Both errors carry the held key's ``seq``.
    """
    held = [(i, envelope) for i, envelope in enumerate(stored) if envelope is not None]
    if not held:
        return None
    for i, envelope in held:
        if envelope.event != events[i]:
            key = keys[i]
            assert key is not None
            raise IdempotencyConflictError(
                f"run {envelope.run_id}: key {key!r} already holds seq {envelope.seq}, which "
                "was appended with a different event; nothing was written. Use a new key for "
                "a new event, or retry with exactly the event first appended under this key",
                run_id=envelope.run_id,
                key=key,
                seq=envelope.seq,
            )
    if len(held) < len(stored):
        i, envelope = held[0]
        key = keys[i]
        assert key is not None
        raise IdempotencyConflictError(
            f"run {envelope.run_id}: the batch mixes key {key!r}, which already holds seq "
            f"{envelope.seq}, with {len(stored) - len(held)} event(s) whose keys are new or "
            "missing; nothing was written. Retry a batch exactly as it was first appended, "
            "and append new events in a batch of their own",
            run_id=envelope.run_id,
            key=key,
            seq=envelope.seq,
        )
    return [envelope for _, envelope in held]
