"""Sans-IO encoding and decoding of segment headers, record frames and index entries.

Strategy and invariants
- This module knows bytes, never files: the engine reads and writes, the codec only turns
  envelopes into bytes and bytes back into records, ``NEED_DATA`` or a corruption report.
- ``FORMAT.md`` beside this file is the normative description of every layout here; the
  constants below carry its names and ``tests/unit/test_format_doc.py`` checks they agree.
- All integers are little-endian. A frame's xxh3-64 checksum covers everything in the frame
  after the checksum field (length, seq, durable mark and payload), so a corrupt length is
  caught by the checksum rather than trusted.
- A length above ``max_record_bytes`` is reported as corruption before anything is allocated.
- ``read_frame`` gives the same answer whatever buffer the bytes arrive in; ``FrameDecoder``
  builds the incremental (feed bytes, pull records) form on top of it.
- The encoder and the decoder mirror each other: ``FrameEncoder.encode`` writes exactly the
  fields ``read_frame`` checks, in the same order.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, Final, Generic, NamedTuple, TypeVar

import msgspec
import xxhash

from .errors import FormatVersionError, InvalidEventError, RecordTooLargeError
from .events import AgentEvent, Envelope

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "FORMAT_VERSION",
    "FRAME_CONTINUED",
    "FRAME_HEADER",
    "FRAME_HEADER_SIZE",
    "FRAME_MAGIC",
    "INDEX_ENTRY",
    "INDEX_ENTRY_SIZE",
    "MAX_FRAME_LENGTH",
    "MAX_SEGMENT_OFFSET",
    "NEED_DATA",
    "SEGMENT_HEADER",
    "SEGMENT_HEADER_SIZE",
    "SEGMENT_MAGIC",
    "EnvelopeCodec",
    "FrameCorruption",
    "FrameDecoder",
    "FrameEncoder",
    "FramedRecord",
    "HeaderCorruption",
    "NeedData",
    "SegmentHeader",
    "decode_index",
    "decode_segment_header",
    "encode_index_entry",
    "encode_segment_header",
    "read_frame",
    "walk_frames",
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
#: magic, checksum, length, seq, durable (low 31 bits) | CONTINUED flag (bit 31).
FRAME_HEADER: Final = struct.Struct("<4sQIQI")
#: Bit 31 of the durable field: more frames of the same atomic batch follow this one.
FRAME_CONTINUED: Final = 0x8000_0000
#: Largest durable mark (and so the largest segment) the format can describe.
MAX_SEGMENT_OFFSET: Final = FRAME_CONTINUED - 1
FRAME_HEADER_SIZE: Final = FRAME_HEADER.size  # 28
#: The checksum covers the frame from this offset (the length field) to its end.
FRAME_CHECKSUM_START: Final = 12
_FRAME_CHECKSUM: Final = struct.Struct("<Q")  # at offset 4

#: Largest payload the format can describe (the length field is a u32).
MAX_FRAME_LENGTH: Final = 0xFFFF_FFFF
#: Default limit on one encoded envelope.
DEFAULT_MAX_RECORD_BYTES: Final = 8 * 1024 * 1024

#: A sparse index entry: seq, byte offset of that seq's frame in its segment.
INDEX_ENTRY: Final = struct.Struct("<QQ")
INDEX_ENTRY_SIZE: Final = INDEX_ENTRY.size  # 16

_xxh3 = xxhash.xxh3_64_intdigest
_MAX_U64 = (1 << 64) - 1
_ARRAY32 = struct.Struct(">BI")  # msgpack array32 header
_ENCODE = msgspec.msgpack.Encoder(uuid_format="bytes").encode


class NeedData:
    """The bytes end inside a frame or header: feed more, or at end of file, a torn tail."""

    _instance: NeedData | None = None

    def __new__(cls) -> NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


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


# --- segment header ---------------------------------------------------------------------


def encode_segment_header(run_id: uuid.UUID, base_seq: int) -> bytes:
    """Encode the 48-byte header that starts a segment whose first frame has ``base_seq``."""
    head = SEGMENT_HEADER.pack(
        SEGMENT_MAGIC, FORMAT_VERSION, SEGMENT_HEADER_SIZE, 0, run_id.bytes, base_seq
    )
    return head + SEGMENT_CHECKSUM.pack(_xxh3(head))


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
    if checksum != _xxh3(data[: SEGMENT_HEADER.size]):
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


def read_frame(
    buf: bytes | bytearray | memoryview, pos: int, max_record_bytes: int
) -> FramedRecord | NeedData | FrameCorruption:
    """Decode the frame starting at ``buf[pos]``.

    Returns the verified record, ``NEED_DATA`` when ``buf`` ends inside the frame, or a
    ``FrameCorruption`` when the magic, the length bound or the checksum is wrong. A length
    above ``max_record_bytes`` is reported before any payload is looked at.
    """
    avail = len(buf) - pos
    if avail < FRAME_HEADER_SIZE:
        if avail > 0 and bytes(buf[pos : pos + min(avail, 4)]) != FRAME_MAGIC[: min(avail, 4)]:
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
        if _xxh3(view[pos + FRAME_CHECKSUM_START : end]) != checksum:
            return FrameCorruption(pos, "checksum mismatch", seq)
        payload = view[pos + FRAME_HEADER_SIZE : end]
        if not isinstance(buf, bytes):
            payload = payload.tobytes()  # type: ignore[assignment]
    return FramedRecord(
        pos, seq, marks & MAX_SEGMENT_OFFSET, payload, end, bool(marks & FRAME_CONTINUED)
    )


def walk_frames(
    buf: bytes,
    pos: int,
    seq: int,
    first: int,
    last: int,
    max_record_bytes: int,
    out: list[bytes] | None,
    starts: list[int] | None = None,
) -> tuple[int, int, NeedData | FrameCorruption | None]:
    """Walk frames of ``buf`` (immutable) from ``pos``, expecting ``seq`` first.

    Frames with seqs before ``first`` are skipped by their headers alone (no checksum, no
    decode); frames from ``first`` to ``last`` are verified, their payloads appended to
    ``out`` and their offsets to ``starts`` (each when given). Returns
    ``(pos, next_seq, stop)``: ``stop`` is ``None`` once ``last`` was reached, ``NEED_DATA``
    when ``buf`` ends (at or inside a frame), or the corruption met. This is ``read_frame``
    unrolled for the read and recovery paths, which spend most of their time here.
    """
    unpack = FRAME_HEADER.unpack_from
    size = len(buf)
    while seq <= last:
        if size - pos < FRAME_HEADER_SIZE:
            if size > pos and buf[pos : pos + 4] != FRAME_MAGIC[: size - pos]:
                return pos, seq, FrameCorruption(pos, "bad frame magic", None)
            return pos, seq, NEED_DATA
        magic, checksum, length, frame_seq, _marks = unpack(buf, pos)
        if magic != FRAME_MAGIC:
            return pos, seq, FrameCorruption(pos, "bad frame magic", None)
        if length > max_record_bytes:
            reason = f"length field {length} exceeds max_record_bytes {max_record_bytes}"
            return pos, seq, FrameCorruption(pos, reason, frame_seq)
        end = pos + FRAME_HEADER_SIZE + length
        if end > size:
            return pos, seq, NEED_DATA
        if frame_seq != seq:
            return (
                pos,
                seq,
                FrameCorruption(pos, f"seq {frame_seq} where {seq} was expected", frame_seq),
            )
        if seq >= first:
            # Slicing bytes copies, yet for records of a few hundred bytes it is cheaper than
            # making a memoryview (measured: about half the cost per frame).
            if _xxh3(buf[pos + FRAME_CHECKSUM_START : end]) != checksum:
                return pos, seq, FrameCorruption(pos, "checksum mismatch", frame_seq)
            if out is not None:
                out.append(buf[pos + FRAME_HEADER_SIZE : end])
            if starts is not None:
                starts.append(pos)
        pos = end
        seq += 1
    return pos, seq, None


class FrameEncoder:
    """Encodes envelopes into frames appended to a ``bytearray``."""

    __slots__ = ("_encode_into", "max_record_bytes")

    def __init__(self, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> None:
        if not 0 < max_record_bytes <= MAX_FRAME_LENGTH:
            raise ValueError(f"max_record_bytes must be in 1..{MAX_FRAME_LENGTH}")
        self.max_record_bytes = max_record_bytes
        self._encode_into = msgspec.msgpack.Encoder(uuid_format="bytes").encode_into

    def encode(
        self, buf: bytearray, envelope: Envelope[Any], durable: int, continued: bool = False
    ) -> int:
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
        marks = durable | FRAME_CONTINUED if continued else durable
        FRAME_HEADER.pack_into(buf, start, FRAME_MAGIC, 0, length, seq, marks)
        # A bytearray slice (a copy) is cheaper than a memoryview for small records, and
        # leaves no export on ``buf``, which later frames grow.
        checksum = _xxh3(buf[start + FRAME_CHECKSUM_START :])
        _FRAME_CHECKSUM.pack_into(buf, start + 4, checksum)
        return FRAME_HEADER_SIZE + length


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

    def next_event(self) -> FramedRecord | NeedData | FrameCorruption:
        """Return the next record, ``NEED_DATA``, or the corruption that blocks progress."""
        result = read_frame(self._buf, self._pos, self.max_record_bytes)
        if isinstance(result, FramedRecord):
            self._pos = result.end
            return result._replace(offset=self._base + result.offset, end=self._base + result.end)
        if isinstance(result, FrameCorruption):
            return result._replace(offset=self._base + result.offset)
        return result

    def __iter__(self) -> Iterator[FramedRecord]:
        """Yield every complete record; stop at ``NEED_DATA`` or corruption."""
        while True:
            result = self.next_event()
            if not isinstance(result, FramedRecord):
                return
            yield result


# --- index ------------------------------------------------------------------------------


def encode_index_entry(seq: int, offset: int) -> bytes:
    """Encode one sparse index entry."""
    return INDEX_ENTRY.pack(seq, offset)


def decode_index(
    data: bytes | memoryview, base_seq: int, segment_size: int
) -> tuple[list[int], list[int], int]:
    """Decode the longest valid prefix of an index file.

    Entries must have strictly increasing seqs (from ``base_seq``) and offsets inside
    ``segment_size``. Returns ``(seqs, offsets, valid_bytes)``; bytes past ``valid_bytes`` are
    a torn or stale tail the caller should discard.
    """
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


# --- envelopes --------------------------------------------------------------------------

E = TypeVar("E")


def event_classes(event_type: Any) -> tuple[type, ...]:
    """The concrete classes a value of ``event_type`` (a Struct or a union of them) may have."""
    args = getattr(event_type, "__args__", None)
    classes = tuple(args) if args else (event_type,)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, msgspec.Struct)):
            raise TypeError(
                f"event_type must be a msgspec Struct or a union of Structs, not {event_type!r}"
            )
        if "run_id" not in cls.__struct_fields__:
            raise TypeError(f"event type {cls.__name__} has no run_id field")
    return classes


class EnvelopeCodec(Generic[E]):
    """Checks events against a log's ``event_type`` and turns payload bytes into Envelopes."""

    def __init__(self, event_type: Any = AgentEvent) -> None:
        self.event_type = event_type
        self.classes = event_classes(event_type)
        self._decode = msgspec.msgpack.Decoder(Envelope[event_type]).decode
        self._decode_list = msgspec.msgpack.Decoder(list[Envelope[event_type]]).decode
        self.session_starters = tuple(
            c for c in self.classes if getattr(c, "starts_session", False)
        )

    def run_id_of(self, event: object) -> uuid.UUID:
        """Return the event's run id, or raise ``InvalidEventError`` (nothing is written)."""
        if not isinstance(event, self.classes):
            names = ", ".join(c.__name__ for c in self.classes[:4])
            more = ", ..." if len(self.classes) > 4 else ""
            raise InvalidEventError(
                f"cannot append {type(event).__name__}: this log stores {names}{more}; "
                "pass one of those event types (or open the log with your own event_type)"
            )
        run_id = getattr(event, "run_id", None)
        if not isinstance(run_id, uuid.UUID):
            raise InvalidEventError(
                f"{type(event).__name__}.run_id must be a uuid.UUID, got {type(run_id).__name__}"
            )
        return run_id

    def session_of(self, event: object) -> uuid.UUID | None:
        """The session id an event starts (``RunStarted``), else ``None``."""
        if self.session_starters and isinstance(event, self.session_starters):
            session: uuid.UUID | None = getattr(event, "session_id", None)
            return session
        return None

    def check_payload(self, payload: bytes | bytearray | memoryview, envelope: Envelope[E]) -> None:
        """Raise ``InvalidEventError`` unless ``payload`` decodes back to ``envelope``'s event.

        msgspec does not check field types when a Struct is built, so an event with, say, an
        int where a str belongs would encode fine and then poison every read of its run.
        Decoding before writing catches it (and values, like sets, that do not round-trip).
        """
        try:
            decoded = self._decode(payload)
        except msgspec.ValidationError as exc:
            raise InvalidEventError(
                f"{type(envelope.event).__name__} has a field of the wrong type ({exc}); "
                "fix the value to match the event's declared field types"
            ) from exc
        if decoded.event != envelope.event:
            raise InvalidEventError(
                f"{type(envelope.event).__name__} holds a value that does not survive "
                "encoding unchanged (a set, tuple or other non-JSON value?); use JSON values "
                "(dict, list, str, int, float, bool, None)"
            )

    def check(self, envelope: Envelope[E]) -> None:
        """Encode ``envelope`` and ``check_payload`` it (for stores that keep objects)."""
        try:
            payload = _ENCODE(envelope)
        except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
            raise InvalidEventError(
                f"event could not be encoded ({exc}); events must be msgspec Structs of the "
                "log's event_type"
            ) from exc
        self.check_payload(payload, envelope)

    def decode(self, payload: bytes | memoryview) -> Envelope[E]:
        """Decode an envelope payload (raises ``msgspec.DecodeError`` on bad bytes)."""
        result: Envelope[E] = self._decode(payload)
        return result

    def decode_many(self, payloads: Sequence[bytes | memoryview]) -> list[Envelope[E]]:
        """Decode several payloads in order, in one msgspec call.

        Each payload is one complete msgpack value (its frame's checksum verified that), so
        an array32 header followed by the payloads is a valid msgpack array of them: one
        decode call instead of one per record (rejected: decoding each payload on its own,
        which costs a call per record on the read path's hottest loop).
        """
        if len(payloads) < 2:
            return [self._decode(p) for p in payloads]
        data = _ARRAY32.pack(0xDD, len(payloads)) + b"".join(payloads)
        result: list[Envelope[E]] = self._decode_list(data)
        return result
