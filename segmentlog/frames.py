"""Frames: encode them, read one, walk and scan many; the hot loops of the engine.

Strategy and invariants
- Bytes only, sans-IO: these functions turn envelopes into frames and bytes back into
  records, ``NEED_DATA``, ``ZERO_FILL`` or a corruption report, and give the same answer
  however the input is split (``FrameDecoder`` is the incremental form). Layouts and
  constants are ``format.py``'s (FORMAT.md section 4.2).
- A frame's xxh3-64 checksum covers everything after the checksum field (length, seq, marks,
  payload), so a corrupt length is caught, not trusted, and a length above
  ``max_record_bytes`` is reported before anything is allocated. A zero byte where a frame
  must start is ``ZERO_FILL``: the preallocated, never-written tail.
- Encoder and decoder mirror each other: ``FrameEncoder.encode`` writes exactly the fields
  ``read_frame`` checks, in the same order.
- The hot loops (``walk_frames``, ``scan_frames``, ``seal_frame``) have a compiled twin in
  ``segmentlog._native``; the pure-Python versions here are the reference, always
  importable and tested against it (``tests/native``). ``SEGMENTLOG_PURE=1`` forces them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple, TypeAlias

import msgspec

from .errors import InvalidEventError, RecordTooLargeError
from .format import (
    _U64,
    DEFAULT_MAX_RECORD_BYTES,
    FRAME_CHECKSUM_AT,
    FRAME_CHECKSUM_START,
    FRAME_CONTINUED,
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    FRAME_MAGIC,
    MAX_FRAME_LENGTH,
    MAX_SEGMENT_OFFSET,
    NEED_DATA,
    ZERO_FILL,
    FrameCorruption,
    FramedRecord,
    NeedData,
    ZeroFill,
    _native,
    xxh3_64,
)

__all__ = [
    "FrameDecoder",
    "FrameEncoder",
    "FrameScan",
    "WalkStop",
    "read_frame",
    "scan_frames",
    "seal_frame",
    "walk_frames",
]

_MAX_U64 = (1 << 64) - 1


def read_frame(
    buf: bytes | bytearray | memoryview, pos: int, max_record_bytes: int
) -> FramedRecord | NeedData | ZeroFill | FrameCorruption:
    """Decode the frame starting at ``buf[pos]``.

    Returns the verified record, ``NEED_DATA`` when ``buf`` ends inside the frame,
    ``ZERO_FILL`` when a zero byte stands where the frame must start, or a
    ``FrameCorruption`` when the magic, the length bound or the checksum is wrong. A length
    above ``max_record_bytes`` is reported before any payload is looked at.
    """
    avail = len(buf) - pos
    if avail <= 0:
        return NEED_DATA
    if buf[pos] == 0:
        return ZERO_FILL
    if avail < FRAME_HEADER_SIZE:
        if bytes(buf[pos : pos + min(avail, 4)]) != FRAME_MAGIC[: min(avail, 4)]:
            return FrameCorruption(pos, "bad frame magic", None)
        return NEED_DATA
    magic, checksum, length, seq, marks = FRAME_HEADER.unpack_from(buf, pos)
    if magic != FRAME_MAGIC:
        return FrameCorruption(pos, "bad frame magic", None)
    if length > max_record_bytes:
        return FrameCorruption(
            pos, f"length field {length} exceeds max_record_bytes {max_record_bytes}", seq
        )
    end = pos + FRAME_HEADER_SIZE + length
    if end > len(buf):
        return NEED_DATA
    with memoryview(buf) as view:
        if xxh3_64(view[pos + FRAME_CHECKSUM_START : end]) != checksum:
            return FrameCorruption(pos, "checksum mismatch", seq)
        payload = view[pos + FRAME_HEADER_SIZE : end]
        if not isinstance(buf, bytes):
            payload = payload.tobytes()  # type: ignore[assignment]
    return FramedRecord(
        pos, seq, marks & MAX_SEGMENT_OFFSET, payload, end, bool(marks & FRAME_CONTINUED)
    )


#: Why a walk stopped, as the compiled walker reports it (0: it reached ``last``).
_DONE, _NEED, _ZERO, _BAD_MAGIC, _TOO_LONG, _CHECKSUM, _SEQ = range(7)

WalkStop: TypeAlias = NeedData | ZeroFill | FrameCorruption | None


def _stop(
    code: int, pos: int, claimed: int, length: int, seq: int, max_record_bytes: int
) -> WalkStop:
    """Turn the compiled walker's stop code into the objects the pure walker returns."""
    if code == _DONE:
        return None
    if code == _NEED:
        return NEED_DATA
    if code == _ZERO:
        return ZERO_FILL
    if code == _BAD_MAGIC:
        return FrameCorruption(pos, "bad frame magic", None)
    if code == _TOO_LONG:
        reason = f"length field {length} exceeds max_record_bytes {max_record_bytes}"
        return FrameCorruption(pos, reason, claimed)
    if code == _CHECKSUM:
        return FrameCorruption(pos, "checksum mismatch", claimed)
    return FrameCorruption(pos, f"seq {claimed} where {seq} was expected", claimed)


def _walk_frames_py(
    buf: bytes,
    pos: int,
    seq: int,
    first: int,
    last: int,
    max_record_bytes: int,
    out: bytearray | None,
) -> tuple[int, int, WalkStop]:
    if pos < 0:  # struct and slices would count it from the end of ``buf``
        raise ValueError(f"pos must be >= 0, not {pos}")
    unpack = FRAME_HEADER.unpack_from
    size = len(buf)
    while seq <= last:
        avail = size - pos
        if avail < FRAME_HEADER_SIZE:
            if avail <= 0:
                return pos, seq, NEED_DATA
            if buf[pos] == 0:
                return pos, seq, ZERO_FILL
            if buf[pos : pos + 4] != FRAME_MAGIC[:avail]:
                return pos, seq, FrameCorruption(pos, "bad frame magic", None)
            return pos, seq, NEED_DATA
        magic, checksum, length, frame_seq, _marks = unpack(buf, pos)
        if magic != FRAME_MAGIC:
            if buf[pos] == 0:
                return pos, seq, ZERO_FILL
            return pos, seq, FrameCorruption(pos, "bad frame magic", None)
        if length > max_record_bytes:
            reason = f"length field {length} exceeds max_record_bytes {max_record_bytes}"
            return pos, seq, FrameCorruption(pos, reason, frame_seq)
        end = pos + FRAME_HEADER_SIZE + length
        if end > size:
            return pos, seq, NEED_DATA
        if frame_seq != seq:
            reason = f"seq {frame_seq} where {seq} was expected"
            return pos, seq, FrameCorruption(pos, reason, frame_seq)
        if seq >= first:
            # Slicing bytes copies, yet for records of a few hundred bytes it is cheaper than
            # making a memoryview (measured: about half the cost per frame).
            if xxh3_64(buf[pos + FRAME_CHECKSUM_START : end]) != checksum:
                return pos, seq, FrameCorruption(pos, "checksum mismatch", frame_seq)
            if out is not None:
                out += buf[pos + FRAME_HEADER_SIZE : end]
        pos = end
        seq += 1
    return pos, seq, None


def walk_frames(
    buf: bytes,
    pos: int,
    seq: int,
    first: int,
    last: int,
    max_record_bytes: int,
    out: bytearray | None = None,
) -> tuple[int, int, WalkStop]:
    """Walk the frames of ``buf`` from ``pos``, expecting ``seq`` first.

    Frames with seqs before ``first`` are skipped by their headers alone (no checksum, no
    copy); frames from ``first`` to ``last`` are verified and their payloads appended to
    ``out`` (when given), back to back. Returns ``(pos, next_seq, stop)``: ``stop`` is
    ``None`` once ``last`` was passed, ``NEED_DATA`` when ``buf`` ends (at or inside a frame),
    ``ZERO_FILL`` at a zero byte, or the corruption met at ``pos``. On every stop but
    ``None``, ``out`` holds exactly the payloads of seqs ``first .. next_seq - 1``.

    Raises ``ValueError`` for a negative ``pos``.
    """
    if _native is None:
        return _walk_frames_py(buf, pos, seq, first, last, max_record_bytes, out)
    pos, next_seq, code, claimed, length = _native.walk_frames(
        buf, pos, seq, first, last, max_record_bytes, out
    )
    return pos, next_seq, _stop(code, pos, claimed, length, next_seq, max_record_bytes)


class FrameScan(NamedTuple):
    """What ``scan_frames`` found walking to the end of a buffer. Offsets are absolute."""

    #: Offset after the last frame that verified and continued the seq chain.
    end: int
    #: Seq the next frame would have (one past the last verified frame).
    next_seq: int
    #: Why the walk stopped at ``end``: ``NEED_DATA`` (the buffer ends there, or inside a
    #: frame), ``ZERO_FILL`` or a ``FrameCorruption`` (whose offset is absolute).
    stop: NeedData | ZeroFill | FrameCorruption
    #: Offset after the last verified frame whose CONTINUED bit is clear (the end of the last
    #: whole batch), or the scan's start offset when there is none.
    batch_end: int
    #: Seq of that frame (``start_seq - 1`` when there is none).
    batch_seq: int
    #: Offset of that frame, or -1 when there is none.
    tail_start: int
    #: Frames verified.
    frames: int
    #: ``(seq, offset)`` index points due: each frame starting at least ``interval`` bytes
    #: after the previous point (the first previous point being ``last_point``).
    points: list[tuple[int, int]]


def _scan_frames_py(
    buf: bytes, base: int, seq: int, max_record_bytes: int, interval: int, last_point: int
) -> FrameScan:
    if base < 0:
        raise ValueError(f"base must be >= 0, not {base}")
    unpack = FRAME_HEADER.unpack_from
    size = len(buf)
    start_seq = seq
    pos = 0
    batch_end, batch_seq, tail_start = base, seq - 1, -1
    points: list[tuple[int, int]] = []
    stop: NeedData | ZeroFill | FrameCorruption
    while True:
        avail = size - pos
        if avail < FRAME_HEADER_SIZE:
            if avail <= 0:
                stop = NEED_DATA
            elif buf[pos] == 0:
                stop = ZERO_FILL
            elif buf[pos : pos + 4] != FRAME_MAGIC[:avail]:
                stop = FrameCorruption(base + pos, "bad frame magic", None)
            else:
                stop = NEED_DATA
            break
        magic, checksum, length, frame_seq, marks = unpack(buf, pos)
        if magic != FRAME_MAGIC:
            if buf[pos] == 0:
                stop = ZERO_FILL
            else:
                stop = FrameCorruption(base + pos, "bad frame magic", None)
            break
        if length > max_record_bytes:
            reason = f"length field {length} exceeds max_record_bytes {max_record_bytes}"
            stop = FrameCorruption(base + pos, reason, frame_seq)
            break
        end = pos + FRAME_HEADER_SIZE + length
        if end > size:
            stop = NEED_DATA
            break
        if frame_seq != seq:
            reason = f"seq {frame_seq} where {seq} was expected"
            stop = FrameCorruption(base + pos, reason, frame_seq)
            break
        if xxh3_64(buf[pos + FRAME_CHECKSUM_START : end]) != checksum:
            stop = FrameCorruption(base + pos, "checksum mismatch", frame_seq)
            break
        if base + pos - last_point >= interval:
            last_point = base + pos
            points.append((seq, last_point))
        if not marks & FRAME_CONTINUED:
            batch_end, batch_seq, tail_start = base + end, seq, base + pos
        pos = end
        seq += 1
    return FrameScan(
        base + pos, seq, stop, batch_end, batch_seq, tail_start, seq - start_seq, points
    )


def scan_frames(
    buf: bytes, base: int, seq: int, max_record_bytes: int, interval: int, last_point: int
) -> FrameScan:
    """Verify every frame of ``buf`` (the bytes of a segment from absolute offset ``base``),
    expecting ``seq`` first, until the buffer ends or a frame does not verify.

    This is the recovery scan: it describes what it finds and decides nothing. Raises
    ``ValueError`` for a negative ``base``.
    """
    if _native is None:
        return _scan_frames_py(buf, base, seq, max_record_bytes, interval, last_point)
    end, next_seq, code, claimed, length, batch_end, batch_seq, tail_start, frames, points = (
        _native.scan_frames(buf, base, seq, max_record_bytes, interval, last_point)
    )
    stop = _stop(code, end, claimed, length, next_seq, max_record_bytes)
    assert stop is not None
    return FrameScan(end, next_seq, stop, batch_end, batch_seq, tail_start, frames, points)


class FrameEncoder:
    """Encodes envelopes into frames appended to a ``bytearray``."""

    __slots__ = ("_encode_into", "max_record_bytes")

    def __init__(self, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> None:
        if not 0 < max_record_bytes <= MAX_FRAME_LENGTH:
            raise ValueError(f"max_record_bytes must be in 1..{MAX_FRAME_LENGTH}")
        self.max_record_bytes = max_record_bytes
        self._encode_into = msgspec.msgpack.Encoder(uuid_format="bytes").encode_into

    def encode(self, buf: bytearray, envelope: Any, durable: int, continued: bool = False) -> int:
        """Append ``envelope``'s frame to ``buf``; return the frame's size in bytes.

        ``durable`` is the segment offset known to be on stable storage; ``continued`` marks a
        frame that more frames of the same atomic batch follow.

        Raises ``RecordTooLargeError`` (leaving ``buf`` as it was) when the payload exceeds
        ``max_record_bytes``, and ``InvalidEventError`` when msgspec cannot encode the event.
        """
        seq = envelope.seq
        if not (0 <= durable <= MAX_SEGMENT_OFFSET and 0 < seq <= _MAX_U64):
            raise ValueError(
                f"durable mark {durable} outside 0..{MAX_SEGMENT_OFFSET} or seq {seq} outside "
                f"1..{_MAX_U64}"
            )
        start = len(buf)
        try:
            self._encode_into(envelope, buf, start + FRAME_HEADER_SIZE)
        except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
            del buf[start:]
            raise InvalidEventError(
                f"event could not be encoded ({exc}); events must be msgspec Structs of the "
                "log's event_type"
            ) from exc
        length = len(buf) - start - FRAME_HEADER_SIZE
        if length > self.max_record_bytes:
            del buf[start:]
            raise RecordTooLargeError(
                f"record of {length} bytes exceeds max_record_bytes={self.max_record_bytes}; "
                "split the event or open the log with a larger max_record_bytes"
            )
        seal_frame(buf, start, seq, durable | FRAME_CONTINUED if continued else durable)
        return FRAME_HEADER_SIZE + length


def _seal_frame_py(buf: bytearray, start: int, seq: int, marks: int) -> None:
    length = len(buf) - start - FRAME_HEADER_SIZE
    if start < 0 or length < 0:  # pack_into would count a negative start from the end
        raise ValueError(f"frame start {start} outside 0..len(buf) - {FRAME_HEADER_SIZE}")
    FRAME_HEADER.pack_into(buf, start, FRAME_MAGIC, 0, length, seq, marks)
    # A bytearray slice (a copy) is cheaper than a memoryview for small records, and leaves
    # no export on ``buf``, which later frames grow.
    _U64.pack_into(buf, start + FRAME_CHECKSUM_AT, xxh3_64(buf[start + FRAME_CHECKSUM_START :]))


#: Write the header and checksum of the frame whose payload fills ``buf[start + 28:]``.
seal_frame: Any = _native.seal_frame if _native is not None else _seal_frame_py


class FrameDecoder:
    """Incremental frame decoder: ``feed`` bytes, pull records with ``next_event``.

    It gives the same sequence of results however the input is split. After a corruption
    report the decoder stays on the bad frame and keeps reporting it (the caller decides what
    to do: raise, truncate, or resynchronise with a fresh decoder).
    """

    def __init__(self, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, offset: int = 0) -> None:
        self.max_record_bytes = max_record_bytes
        self._buf = bytearray()
        self._pos = 0
        self._base = offset  # absolute offset of self._buf[0]

    @property
    def offset(self) -> int:
        """Absolute offset of the next undecoded byte."""
        return self._base + self._pos

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet decoded."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes that follow everything fed so far."""
        if self._pos and self._pos * 2 >= len(self._buf):
            del self._buf[: self._pos]
            self._base += self._pos
            self._pos = 0
        self._buf += data

    def next_event(self) -> FramedRecord | NeedData | ZeroFill | FrameCorruption:
        """Return the next record, ``NEED_DATA``, ``ZERO_FILL``, or the blocking corruption."""
        result = read_frame(self._buf, self._pos, self.max_record_bytes)
        if isinstance(result, FramedRecord):
            self._pos = result.end
            return result._replace(offset=self._base + result.offset, end=self._base + result.end)
        if isinstance(result, FrameCorruption):
            return result._replace(offset=self._base + result.offset)
        return result

    def __iter__(self) -> Iterator[FramedRecord]:
        """Yield every complete record; stop at ``NEED_DATA``, ``ZERO_FILL`` or corruption."""
        while True:
            result = self.next_event()
            if not isinstance(result, FramedRecord):
                return
            yield result
