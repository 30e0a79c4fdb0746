"""The on-disk format as bytes: constants, file names, segment header, run state, index entries.

Strategy and invariants
- Bytes only. Nothing here opens a file or knows a directory. Frames (encoding, reading and
  walking them) are ``frames.py``'s; this module holds every layout they and the rest of the
  engine share: constants, record types, the segment header, the state record, the index.
- ``FORMAT.md`` beside this file is normative; the constants carry its names, and
  ``tests/unit/test_format_doc.py`` checks that the two agree. Every byte offset and file-name
  rule the engine uses is defined here and nowhere else.
- All integers are little-endian. A frame's xxh3-64 checksum covers everything after the
  checksum field (length, seq, marks, payload), so a corrupt length is caught, not trusted, and
  a length above ``max_record_bytes`` is reported before anything is allocated.
- A zero byte where a frame must start is ``ZERO_FILL``: the preallocated, never-written tail
  of a segment (0x00 can never begin a frame, whose magic starts with 0xC1).
- ``decode_index`` and xxh3 have a compiled twin in ``segmentlog._native`` (as do the frame
  loops in ``frames.py``); the pure-Python versions are the reference, always importable and
  tested against it. ``SEGMENTLOG_PURE=1`` forces the pure path.
"""

from __future__ import annotations

import os
import struct
import uuid
from typing import Any, Final, NamedTuple

import xxhash

from .errors import FormatVersionError

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
    "segment_name",
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
