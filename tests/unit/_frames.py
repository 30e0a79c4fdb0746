"""Frames built by hand for the format, scan and segment unit tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from segmentlog.events import Envelope, TextDelta
from segmentlog.format import SEGMENT_HEADER_SIZE
from segmentlog.frames import FrameEncoder

RUN = uuid.UUID("00000000-0000-4000-8000-0000000000aa")
TS = datetime(2025, 1, 1, tzinfo=UTC)
MAX = 1 << 20
H = SEGMENT_HEADER_SIZE


def envelope(seq: int, delta: str = "x") -> Envelope[TextDelta]:
    """A small envelope of ``RUN`` with ``seq`` (its event id is the seq)."""
    event = TextDelta(run_id=RUN, delta=delta, timestamp=TS)
    return Envelope(uuid.UUID(int=seq), seq, RUN, None, event, TS)


def frames(
    seqs: range | list[int], *, continued: bool = False, delta: str = "x"
) -> tuple[bytes, list[int]]:
    """Frames for ``seqs`` and each frame's offset in the returned buffer.

    With ``continued`` every frame says "more of this batch follows" (an unfinished batch).
    """
    buf = bytearray()
    offsets = []
    enc = FrameEncoder(MAX)
    for seq in seqs:
        offsets.append(len(buf))
        enc.encode(buf, envelope(seq, delta), 0, continued)
    return bytes(buf), offsets
