"""The event-store contract every backend implements.

Strategy and invariants
- ``EventStore`` is a structural Protocol: the memory stores, the segment engine and the
  PostgreSQL backend satisfy it without inheriting from anything.
- ``append`` returns the stored Envelope; if it raises, nothing was persisted.
- ``seq`` is per run, starts at 1 and has no gaps. ``list_after`` returns ``seq > after_seq``
  in order, at most ``limit``; ``after_seq`` of ``None`` or ``0`` means from the start.
- An unknown run is ``NotFoundError``; a negative ``after_seq`` or a ``limit`` below 1 is a
  ``ValueError`` (checked by ``check_page_args``, shared by every backend).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from .events import Envelope

__all__ = ["DEFAULT_PAGE_LIMIT", "EventStore", "check_page_args"]

#: The ``limit`` used by ``list_after`` when none is given.
DEFAULT_PAGE_LIMIT = 1000

E = TypeVar("E")


@runtime_checkable
class EventStore(Protocol[E]):
    """A durable, per-run, append-only sequence of events."""

    def append(self, event: E) -> Envelope[E]:
        """Store ``event`` and return its envelope; raises ``AppendError`` if not persisted."""
        ...

    def append_batch(self, events: Sequence[E]) -> list[Envelope[E]]:
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
