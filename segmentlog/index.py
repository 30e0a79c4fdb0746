"""The sparse seq index of one segment: a disposable cache of (seq, offset) points.

Strategy and invariants
- A point is recorded for a frame when it starts at least ``interval`` bytes after the last
  point (the segment header's end counts as the first point, for the base seq). So a seek
  lands at most one interval (plus one frame) before the frame it wants.
- Every way points are added (frames just written, frames a scan verified) goes through one
  ``extend``; it returns the encoded entries so the owner of the file can persist them.
- The index file is a cache: it is never fsynced, it is validated when loaded (strictly
  increasing seqs and offsets, inside the segment), and whatever does not validate is dropped
  and rebuilt from the segment. The segment is the only source of truth.
- Entries live in two parallel lists so a lookup is one ``bisect``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable

from .format import INDEX_ENTRY, SEGMENT_HEADER_SIZE, decode_index

__all__ = ["SparseIndex"]


class SparseIndex:
    """In-memory form of a segment's sparse index."""

    __slots__ = ("base_seq", "interval", "last_offset", "offsets", "seqs")

    def __init__(self, base_seq: int, interval: int) -> None:
        self.base_seq = base_seq
        self.interval = interval
        self.seqs: list[int] = []
        self.offsets: list[int] = []
        self.last_offset = SEGMENT_HEADER_SIZE

    @classmethod
    def from_bytes(
        cls, data: bytes, base_seq: int, interval: int, segment_size: int
    ) -> tuple[SparseIndex, int]:
        """Load entries from an index file's bytes; returns the index and its valid length."""
        index = cls(base_seq, interval)
        seqs, offsets, valid = decode_index(data, base_seq, segment_size)
        index.seqs = seqs
        index.offsets = offsets
        if offsets:
            index.last_offset = offsets[-1]
        return index, valid

    def floor(self, seq: int) -> tuple[int, int]:
        """The indexed point at or before ``seq``: ``(seq_at_point, offset)``."""
        i = bisect_right(self.seqs, seq)
        if i == 0:
            return self.base_seq, SEGMENT_HEADER_SIZE
        return self.seqs[i - 1], self.offsets[i - 1]

    def due(self, offset: int) -> bool:
        """True when a frame starting at ``offset`` would become a point."""
        return offset - self.last_offset >= self.interval

    def extend(self, points: Iterable[tuple[int, int]], end: int | None = None) -> bytes:
        """Add every ``(seq, offset)`` that is due (in order), stopping at offset ``end``.

        Returns the encoded entries added, for the index file.
        """
        out = bytearray()
        last, interval = self.last_offset, self.interval
        for seq, offset in points:
            if end is not None and offset >= end:
                break
            if offset - last >= interval:
                self.seqs.append(seq)
                self.offsets.append(offset)
                last = offset
                out += INDEX_ENTRY.pack(seq, offset)
        self.last_offset = last
        return bytes(out)

    def truncate(self, end: int) -> None:
        """Forget entries for frames at or past ``end`` (after the segment was cut there)."""
        i = bisect_right(self.offsets, end - 1)
        del self.seqs[i:]
        del self.offsets[i:]
        self.last_offset = self.offsets[-1] if self.offsets else SEGMENT_HEADER_SIZE

    def drop_last(self) -> None:
        """Forget the last entry (it failed verification)."""
        self.seqs.pop()
        self.offsets.pop()
        self.last_offset = self.offsets[-1] if self.offsets else SEGMENT_HEADER_SIZE

    def to_bytes(self) -> bytes:
        """Encode every entry, for rewriting the index file."""
        return b"".join(
            INDEX_ENTRY.pack(s, o) for s, o in zip(self.seqs, self.offsets, strict=True)
        )

    def __len__(self) -> int:
        return len(self.seqs)
