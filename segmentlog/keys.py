"""The idempotency keys a run holds: built lazily from its frames, kept current after that.

Strategy and invariants
- Keys live in the records themselves (``Envelope.key``), so they survive reopen, crash
  recovery and other processes with no extra file to keep consistent. A run's key index is
  built on its first keyed append (or conditional append with keys) by walking its frames and
  decoding only ``seq`` and ``key`` of each record (a two-field Struct; msgspec skips the
  rest), then kept current by every commit of this process and every catch-up with other
  processes' frames. Recovery that rebuilds a run's view drops the index, to be built again.
- Memory: one entry per keyed record, ``key -> seq`` (about 100 bytes each with a short
  key). First use reads and decodes the run once: under a second for a run of a million
  events.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from ._fs import FileSystem
from .errors import SeqConflictError
from .events import Envelope
from .format import (
    SEGMENT_HEADER_SIZE,
)
from .frames import (
    walk_frames,
)
from .schema import PAGE_HEADER_SIZE, new_page
from .segment import Segment
from .store import held_envelopes

__all__ = ["KeyIndex", "decide", "keys_of"]

#: Records decoded per call while building an index (bounds the memory of one step).
_PAGE = 16384


class _Keyed(msgspec.Struct):
    """The two fields of an envelope a key index needs."""

    seq: int
    key: str | None = None


_DECODE = msgspec.msgpack.Decoder(list[_Keyed]).decode


class KeyIndex:
    """Key -> seq of the record that holds it, for one run."""

    __slots__ = ("seqs",)

    def __init__(self) -> None:
        #: Every key the run holds, with its record's seq.
        self.seqs: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.seqs)

    def add_all(self, pairs: Iterable[tuple[int, str | None]]) -> None:
        """Note every ``(seq, key)`` whose key is not None."""
        self.seqs.update((key, seq) for seq, key in pairs if key is not None)

    @classmethod
    def build(
        cls, fs: FileSystem, segments: list[tuple[Segment, int, int]], max_record_bytes: int
    ) -> KeyIndex:
        """Walk every frame of the run (``(segment, size, last_seq)``) and index its keys."""
        index = cls()
        for seg, size, last in segments:
            if last < seg.base_seq:
                continue
            fd = fs.open_read(seg.path)
            try:
                data = fs.pread(fd, size - SEGMENT_HEADER_SIZE, SEGMENT_HEADER_SIZE)
            finally:
                fs.close(fd)
            pos, seq = 0, seg.base_seq
            while seq <= last:
                page = new_page()
                upto = min(last, seq + _PAGE - 1)
                pos, next_seq, _ = walk_frames(data, pos, seq, seq, upto, max_record_bytes, page)
                index.add_all(keys_of(page, next_seq - seq))
                if next_seq <= upto:
                    break  # damage: the reader reports it; index what verified
                seq = next_seq
        return index


def keys_of(page: bytearray, count: int) -> list[tuple[int, str | None]]:
    """``(seq, key)`` of the ``count`` payloads in a page buffer (``schema.new_page``)."""
    if not count:
        return []
    page[0:PAGE_HEADER_SIZE] = b"\xdd" + count.to_bytes(4, "big")
    return [(r.seq, r.key) for r in _DECODE(page)]


def decide(
    run_id: uuid.UUID,
    events: list[Any],
    keys: list[str | None] | None,
    expected_seq: int | None,
    last_seq: int,
    stored: Callable[[str], Envelope[Any] | None],
) -> list[Envelope[Any]] | None:
    """Apply a conditional append's rules to one run; None means: append it.

    Keys first (``store.held_envelopes``): when the run holds every key for an equal event,
    the stored envelopes are returned and nothing is to be written; a held key with another
    event, or a mix of held and new keys, raises ``IdempotencyConflictError``. Then
    ``expected_seq`` against the run's ``last_seq`` (``SeqConflictError``).
    """
    if keys is not None:
        held = held_envelopes(events, keys, [None if k is None else stored(k) for k in keys])
        if held is not None:
            return held
    if expected_seq is not None and expected_seq != last_seq:
        raise SeqConflictError(run_id, expected_seq, last_seq)
    return None
