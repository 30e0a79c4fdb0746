"""The on-disk format as bytes: constants, segment header, frames, index entries, file names.

Strategy and invariants
- Bytes only. Nothing here opens a file or knows a directory: the engine reads and writes,
  this module turns envelopes into frames and bytes back into records, ``NEED_DATA``,
  ``ZERO_FILL`` or a corruption report, and gives the same answer however input is split.
- ``FORMAT.md`` beside this file is normative; the constants carry its names, and
  ``tests/unit/test_format_doc.py`` checks that the two agree. Every byte offset and file-name
  rule the engine uses is defined here and nowhere else.
- All integers are little-endian. A frame's xxh3-64 checksum covers everything after the
  checksum field (length, seq, marks, payload), so a corrupt length is caught, not trusted, and
  a length above ``max_record_bytes`` is reported before anything is allocated.
- A zero byte where a frame must start is ``ZERO_FILL``: the preallocated, never-written tail
  of a segment (0x00 can never begin a frame, whose magic starts with 0xC1).
- Encoder and decoder mirror each other: ``FrameEncoder.encode`` writes exactly the fields
  ``read_frame`` checks, in the same order.
- The hot loops (``walk_frames``, ``scan_frames``, ``decode_index``, the frame header and
  checksum, xxh3) have a compiled twin in ``segmentlog._native``; the pure-Python versions
  here are the reference, always importable and tested against it. ``SEGMENTLOG_PURE=1``
  forces the pure path.
"""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Iterator
from typing import Any, Final, NamedTuple

import msgspec
import xxhash

from .errors import FormatVersionError, InvalidEventError, RecordTooLargeError

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "FORMAT_VERSION",
    "FRAME_CHECKSUM_AT",
    "FRAME_CHECKSUM_START",
    "FRAME_CONTINUED",
    "FRAME_HEADER",
    "FRAME_HEADER_SIZE",
    "FRAME_LENGTH_AT",
    "FRAME_MAGIC",
    "FRAME_MARKS_AT",
    "FRAME_SEQ_AT",
    "INDEX_ENTRY",
    "INDEX_ENTRY_SIZE",
    "INDEX_SUFFIX",
    "MAX_FRAME_LENGTH",
    "MAX_SEGMENT_OFFSET",
    "NATIVE",
    "NEED_DATA",
    "SEGMENT_CHECKSUM",
    "SEGMENT_HEADER",
    "SEGMENT_HEADER_SIZE",
    "SEGMENT_MAGIC",
    "SEGMENT_SUFFIX",
    "STATE_BUSY_AT",
    "STATE_CHECKSUM",
    "STATE_DELETED",
    "STATE_FILE_SIZE",
    "STATE_FRAMES_ACKED",
    "STATE_MAGIC",
    "STATE_NAME",
    "STATE_RECORD",
    "STATE_RECORD_SIZE",
    "STATE_VERSION",
    "TMP_SUFFIX",
    "ZERO_FILL",
    "FrameCorruption",
    "FrameDecoder",
    "FrameEncoder",
    "FrameScan",
    "FramedRecord",
    "HeaderCorruption",
    "NeedData",
    "RunState",
    "SegmentHeader",
    "ZeroFill",
    "decode_index",
    "decode_run_state",
    "decode_segment_header",
    "encode_index_entry",
    "encode_run_state",
    "encode_segment_header",
    "index_name",
    "parse_segment_name",
    "read_frame",
    "scan_frames",
    "segment_name",
    "walk_frames",
    "xxh3_64",
]

#: On-disk format version written into every segment header.
FORMAT_VERSION: Final = 1

#: First 8 bytes of every segment file.
SEGMENT_MAGIC: Final = b"\x89SGLOG\r\n"
#: magic, format_version, header_size, flags, run_id (16 bytes), base_seq, then the checksum.
SEGMENT_HEADER: Final = struct.Struct("<8sHHI16sQ")
SEGMENT_CHECKSUM: Final = struct.Struct("<Q")
SEGMENT_HEADER_SIZE: Final = SEGMENT_HEADER.size + SEGMENT_CHECKSUM.size  # 48

#: First 4 bytes of every frame. 0xC1 is the one byte msgpack never uses as a type byte.
FRAME_MAGIC: Final = b"\xc1SLF"
#: magic, checksum, length, seq, marks: durable (low 31 bits) | CONTINUED flag (bit 31).
FRAME_HEADER: Final = struct.Struct("<4sQIQI")
FRAME_HEADER_SIZE: Final = FRAME_HEADER.size  # 28
#: Offsets of the frame header's fields (FORMAT.md section 4.2).
FRAME_CHECKSUM_AT: Final = 4
FRAME_LENGTH_AT: Final = 12
FRAME_SEQ_AT: Final = 16
FRAME_MARKS_AT: Final = 24
#: The checksum covers the frame from this offset (the length field) to its end.
FRAME_CHECKSUM_START: Final = FRAME_LENGTH_AT
#: Bit 31 of the marks field: more frames of the same atomic batch follow this one.
FRAME_CONTINUED: Final = 0x8000_0000
#: Largest durable mark (and so the largest segment) the format can describe.
MAX_SEGMENT_OFFSET: Final = FRAME_CONTINUED - 1

#: Largest payload the format can describe (the length field is a u32).
MAX_FRAME_LENGTH: Final = 0xFFFF_FFFF
#: Default limit on one encoded envelope.
DEFAULT_MAX_RECORD_BYTES: Final = 8 * 1024 * 1024

#: A sparse index entry: seq, byte offset of that seq's frame in its segment.
INDEX_ENTRY: Final = struct.Struct("<QQ")
INDEX_ENTRY_SIZE: Final = INDEX_ENTRY.size  # 16

#: File-name suffixes inside a run directory (FORMAT.md section 2).
SEGMENT_SUFFIX: Final = ".seg"
INDEX_SUFFIX: Final = ".idx"
TMP_SUFFIX: Final = ".tmp"

#: The run's shared state file (FORMAT.md section 7): writers' watermark and tail.
STATE_NAME: Final = "STATE"
STATE_MAGIC: Final = b"SLST"
STATE_VERSION: Final = 1
#: magic, version, flags, boot id (16 bytes), epoch, active base seq, data end, acked seq.
STATE_RECORD: Final = struct.Struct("<4sHH16sQQQQ")
STATE_CHECKSUM: Final = struct.Struct("<Q")
STATE_RECORD_SIZE: Final = STATE_RECORD.size + STATE_CHECKSUM.size  # 64
#: Offset of the busy byte: set while a writer is between its first write and its update.
STATE_BUSY_AT: Final = STATE_RECORD_SIZE
#: Size of the state file (the record, the busy byte, zeros).
STATE_FILE_SIZE: Final = 128
#: Flags: the run was deleted (every holder must reload); the writer acknowledges frames as
#: it writes them (``acked`` is not maintained: readers trust complete frames).
STATE_DELETED: Final = 0x1
STATE_FRAMES_ACKED: Final = 0x2

_U64: Final = struct.Struct("<Q")
_U32: Final = struct.Struct("<I")
_MAX_U64: Final = (1 << 64) - 1

_native: Any
try:
    if os.environ.get("SEGMENTLOG_PURE", "") not in ("", "0"):
        raise ImportError("SEGMENTLOG_PURE is set")
    from . import _native  # type: ignore[attr-defined,no-redef]
except ImportError:
    _native = None

#: True when the compiled hot loops (``segmentlog._native``) are in use.
NATIVE: Final[bool] = _native is not None

#: xxh3-64 (seed 0) of a bytes-like object, as an int.
xxh3_64 = _native.xxh3_64 if _native is not None else xxhash.xxh3_64_intdigest


class NeedData:
    """The bytes end inside a frame or header: feed more, or at end of file, a torn tail."""

    _instance: NeedData | None = None

    def __new__(cls) -> NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"


class ZeroFill:
    """A zero byte where a frame must start: the preallocated, never-written tail."""

    _instance: ZeroFill | None = None

    def __new__(cls) -> ZeroFill:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ZERO_FILL"


NEED_DATA: Final = NeedData()
ZERO_FILL: Final = ZeroFill()


class FramedRecord(NamedTuple):
    """One verified frame. ``payload`` is the encoded envelope; ``end`` the offset after it.

    ``continued`` is True when later frames of the same atomic batch follow this one.
    """

    offset: int
    seq: int
    durable: int
    payload: bytes | memoryview
    end: int
    continued: bool = False


class FrameCorruption(NamedTuple):
    """A frame at ``offset`` failed verification. ``seq`` is the header's claim, if readable."""

    offset: int
    reason: str
    seq: int | None


class SegmentHeader(NamedTuple):
    """The decoded header of a segment file."""

    version: int
    run_id: uuid.UUID
    base_seq: int


class HeaderCorruption(NamedTuple):
    """A segment header failed verification."""

    reason: str


class RunState(NamedTuple):
    """A run's shared state record (see ``STATE_RECORD``)."""

    flags: int
    #: The boot the record was written in: a record from another boot may be stale.
    boot: bytes
    #: Identifies the run's incarnation: a new run (after a deletion) gets a new epoch.
    epoch: int
    #: Base seq of the active segment, offset after its last acknowledged frame, and the
    #: last acknowledged seq.
    base: int
    end: int
    acked: int


# --- file names -------------------------------------------------------------------------


def segment_name(base_seq: int) -> str:
    """File name of the segment whose first seq is ``base_seq``."""
    return f"{base_seq:020d}{SEGMENT_SUFFIX}"


def index_name(base_seq: int) -> str:
    """File name of the sparse index beside segment ``base_seq``."""
    return f"{base_seq:020d}{INDEX_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    """The base seq a segment file name stands for, or None for any other name."""
    if len(name) != 20 + len(SEGMENT_SUFFIX) or not name.endswith(SEGMENT_SUFFIX):
        return None
    digits = name[:20]
    if not digits.isdigit() or not digits.isascii():
        return None
    base = int(digits)
    return base if base >= 1 else None


# --- segment header ---------------------------------------------------------------------


def encode_segment_header(run_id: uuid.UUID, base_seq: int) -> bytes:
    """Encode the 48-byte header that starts a segment whose first frame has ``base_seq``."""
    head = SEGMENT_HEADER.pack(
        SEGMENT_MAGIC, FORMAT_VERSION, SEGMENT_HEADER_SIZE, 0, run_id.bytes, base_seq
    )
    return head + SEGMENT_CHECKSUM.pack(xxh3_64(head))


def decode_segment_header(data: bytes | memoryview) -> SegmentHeader | NeedData | HeaderCorruption:
    """Decode a segment header from the start of ``data``.

    Raises ``FormatVersionError`` for a valid header of a newer format version.
    """
    if len(data) < SEGMENT_HEADER_SIZE:
        if bytes(data[: len(SEGMENT_MAGIC)]) != SEGMENT_MAGIC[: len(data)]:
            return HeaderCorruption("bad segment magic")
        return NEED_DATA
    magic, version, header_size, _flags, run_bytes, base_seq = SEGMENT_HEADER.unpack_from(data)
    if magic != SEGMENT_MAGIC:
        return HeaderCorruption("bad segment magic")
    (checksum,) = SEGMENT_CHECKSUM.unpack_from(data, SEGMENT_HEADER.size)
    if checksum != xxh3_64(data[: SEGMENT_HEADER.size]):
        return HeaderCorruption("segment header checksum mismatch")
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"segment written by format version {version}; this segmentlog reads up to "
            f"{FORMAT_VERSION}. Upgrade segmentlog to read it."
        )
    if version < 1 or header_size != SEGMENT_HEADER_SIZE:
        return HeaderCorruption(f"unsupported header (version {version}, size {header_size})")
    return SegmentHeader(version, uuid.UUID(bytes=bytes(run_bytes)), base_seq)


# --- frames -----------------------------------------------------------------------------


def frame_length(buf: bytes | bytearray | memoryview, pos: int) -> int:
    """The length field of the frame header at ``buf[pos]`` (unverified)."""
    length: int = _U32.unpack_from(buf, pos + FRAME_LENGTH_AT)[0]
    return length


def frame_marks(buf: bytes | bytearray | memoryview, pos: int) -> int:
    """The marks field (durable mark | CONTINUED) of the frame header at ``buf[pos]``."""
    marks: int = _U32.unpack_from(buf, pos + FRAME_MARKS_AT)[0]
    return marks


def frame_checksum(buf: bytes | bytearray | memoryview, pos: int) -> bytes:
    """The raw checksum field of the frame at ``buf[pos]`` (identifies a frame cheaply)."""
    return bytes(buf[pos + FRAME_CHECKSUM_AT : pos + FRAME_CHECKSUM_AT + 8])


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

WalkStop = NeedData | ZeroFill | FrameCorruption | None


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
seal_frame = _native.seal_frame if _native is not None else _seal_frame_py


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


def find_frames_after(
    buf: bytes, base: int, after: int, min_seq: int, max_record_bytes: int
) -> list[FramedRecord]:
    """Every verifying frame that starts after absolute offset ``after``, with seq >= min_seq.

    Resynchronises by searching for the frame magic, so it finds frames behind damage whose
    length field is unreadable. Offsets in the result are absolute; payloads are dropped.
    """
    found: list[FramedRecord] = []
    pos = buf.find(FRAME_MAGIC, max(0, after - base + 1))
    while pos != -1:
        record = read_frame(buf, pos, max_record_bytes)
        if isinstance(record, FramedRecord) and record.seq >= min_seq:
            found.append(
                record._replace(offset=base + record.offset, end=base + record.end, payload=b"")
            )
            pos = buf.find(FRAME_MAGIC, record.end)
        else:
            pos = buf.find(FRAME_MAGIC, pos + 1)
    return found


# --- run state --------------------------------------------------------------------------


def encode_run_state(state: RunState) -> bytes:
    """Encode the 64-byte state record."""
    boot = state.boot.ljust(16, b"\0")[:16]
    head = STATE_RECORD.pack(
        STATE_MAGIC,
        STATE_VERSION,
        state.flags,
        boot,
        state.epoch,
        state.base,
        state.end,
        state.acked,
    )
    return head + STATE_CHECKSUM.pack(xxh3_64(head))


def decode_run_state(data: bytes | bytearray | memoryview) -> RunState | None:
    """Decode a state record; None when it is short, of another format, or fails its checksum
    (a torn read, or damage: the record is a cache that recovery can rebuild)."""
    if len(data) < STATE_RECORD_SIZE:
        return None
    magic, version, flags, boot, epoch, base, end, acked = STATE_RECORD.unpack_from(data)
    (checksum,) = STATE_CHECKSUM.unpack_from(data, STATE_RECORD.size)
    if magic != STATE_MAGIC or version != STATE_VERSION:
        return None
    if checksum != xxh3_64(bytes(data[: STATE_RECORD.size])):
        return None
    return RunState(flags, bytes(boot), epoch, base, end, acked)


# --- index ------------------------------------------------------------------------------


def encode_index_entry(seq: int, offset: int) -> bytes:
    """Encode one sparse index entry."""
    return INDEX_ENTRY.pack(seq, offset)


def _decode_index_py(
    data: bytes | memoryview, base_seq: int, segment_size: int
) -> tuple[list[int], list[int], int]:
    seqs: list[int] = []
    offsets: list[int] = []
    last_seq = base_seq - 1
    last_off = SEGMENT_HEADER_SIZE - 1
    count = len(data) // INDEX_ENTRY_SIZE
    for seq, off in INDEX_ENTRY.iter_unpack(data[: count * INDEX_ENTRY_SIZE]):
        if seq <= last_seq or off <= last_off or off + FRAME_HEADER_SIZE > segment_size:
            break
        seqs.append(seq)
        offsets.append(off)
        last_seq, last_off = seq, off
    return seqs, offsets, len(seqs) * INDEX_ENTRY_SIZE


def decode_index(
    data: bytes | memoryview, base_seq: int, segment_size: int
) -> tuple[list[int], list[int], int]:
    """Decode the longest valid prefix of an index file.

    Entries must have strictly increasing seqs (from ``base_seq``) and offsets inside
    ``segment_size``. Returns ``(seqs, offsets, valid_bytes)``; bytes past ``valid_bytes`` are
    a torn or stale tail the caller should discard.
    """
    if _native is None:
        return _decode_index_py(data, base_seq, segment_size)
    result: tuple[list[int], list[int], int] = _native.decode_index(data, base_seq, segment_size)
    return result
