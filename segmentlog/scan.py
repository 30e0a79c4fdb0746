"""Pure walks over a segment's bytes that describe what they find, and decide nothing.

Strategy and invariants
- ``scan`` verifies frames from a known-good offset to the end of a buffer (the file's bytes
  from there) and describes the result: where the last whole batch ends, the last record's
  payload, the index points due, and the first damage, classified by shape:
  * ``short``: the bytes end inside a frame, or a frame is cut short by the zeros of a
    preallocated tail (a torn write);
  * ``gap``: zeros stand where a frame must start, but non-zero bytes follow later (sectors
    a power loss never wrote, or damage);
  * ``corrupt``: bad magic, an impossible length, a checksum or seq mismatch.
  Zeros from the last frame to the end are a clean end, not damage.
- ``examine`` walks a whole segment, resynchronising past each damage to find all of it;
  ``verify`` reports every finding and recovery judges the first one, so the two read the
  files by one route (``maintenance.py``, ``recovery.py``).
- Recovery and ``verify`` decide what damage means; nothing here raises for damage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .format import (
    FRAME_HEADER_SIZE,
    FRAME_MAGIC,
    SEGMENT_HEADER_SIZE,
    FrameCorruption,
    FramedRecord,
    HeaderCorruption,
    NeedData,
    SegmentHeader,
    ZeroFill,
    decode_segment_header,
    frame_length,
)
from .frames import read_frame, scan_frames

__all__ = ["Damage", "ScanResult", "SegmentExam", "examine", "find_frames_after", "scan"]


@dataclass
class Damage:
    """Bytes at ``offset`` that do not form the expected frame."""

    offset: int
    reason: str
    #: "short" (a torn write at the end), "gap" (zeros, then more bytes) or "corrupt".
    kind: str
    #: The seq the damaged frame's header claims, when it could be read.
    claimed_seq: int | None = None

    @property
    def short(self) -> bool:
        """True when the bytes simply end inside a frame (a torn write)."""
        return self.kind == "short"


@dataclass
class ScanResult:
    """What a forward walk over a segment's frames found. Offsets are absolute."""

    #: Offset after the last frame that verified and continued the seq chain.
    end: int
    #: Seq of that frame (``start_seq - 1`` if none verified).
    last_seq: int
    #: Offset where a trailing unfinished batch begins (== ``end`` when the last batch is whole).
    batch_start: int
    #: Last seq before that unfinished batch.
    batch_start_seq: int
    #: Payload of the last complete (batch-finished) frame, for session id and terminal state.
    last_payload: bytes | None
    #: Index points (seq, offset) due for frames walked (per the index interval).
    index_points: list[tuple[int, int]] = field(default_factory=list)
    #: The first damage met, or None when the walk reached the end cleanly.
    damage: Damage | None = None
    #: Frames walked.
    frames: int = 0
    #: Offset where the buffer ends (the file's size when the buffer reached its end).
    limit: int = 0


def scan(
    buf: bytes,
    base_offset: int,
    start_seq: int,
    max_record_bytes: int,
    interval: int = 1 << 62,
    last_point: int = 48,
) -> ScanResult:
    """Verify the frames of ``buf`` (a segment's bytes from ``base_offset`` to its end)."""
    found = scan_frames(buf, base_offset, start_seq, max_record_bytes, interval, last_point)
    damage = _classify(buf, base_offset, found.end, found.stop)
    payload = None
    if found.tail_start >= 0:
        pos = found.tail_start - base_offset
        payload = buf[pos + FRAME_HEADER_SIZE : found.batch_end - base_offset]
    return ScanResult(
        end=found.end,
        last_seq=found.next_seq - 1,
        batch_start=found.batch_end,
        batch_start_seq=found.batch_seq,
        last_payload=payload,
        index_points=found.points,
        damage=damage,
        frames=found.frames,
        limit=base_offset + len(buf),
    )


def _classify(
    buf: bytes, base: int, end: int, stop: NeedData | ZeroFill | FrameCorruption
) -> Damage | None:
    pos = end - base
    if isinstance(stop, NeedData):
        if pos >= len(buf):
            return None
        claimed = None
        if len(buf) - pos >= FRAME_HEADER_SIZE:
            claimed = int.from_bytes(buf[pos + 16 : pos + 24], "little")
        return Damage(end, "frame cut short at end of file", "short", claimed)
    data_end = len(buf.rstrip(b"\0"))
    if isinstance(stop, ZeroFill):
        if data_end <= pos:
            return None
        return Damage(end, "zeros where a frame must start, with more bytes after", "gap")
    # A frame whose bytes turn to zeros before its end and stay zero: a write torn short
    # inside a preallocated tail, not damage to bytes once written.
    torn = "frame cut short by the zeros of a preallocated tail"
    if stop.reason == "bad frame magic":
        if data_end - pos < len(FRAME_MAGIC) and buf[pos:data_end] == FRAME_MAGIC[: data_end - pos]:
            return Damage(end, torn, "short")
    elif data_end - pos < FRAME_HEADER_SIZE:
        # The magic is whole but the zeros start inside the header: its length and seq fields
        # were never written whole, so what they fail (a seq of 0, say) says nothing.
        return Damage(end, torn, "short")
    elif stop.reason == "checksum mismatch" and (
        data_end < pos + FRAME_HEADER_SIZE + frame_length(buf, pos)
    ):
        return Damage(end, torn, "short", stop.seq)
    return Damage(end, stop.reason, "corrupt", stop.seq)


@dataclass
class SegmentExam:
    """Everything a full walk of one segment found."""

    path: str
    base_seq: int
    #: The file's size.
    size: int
    #: The decoded header, or why it is bad (``None``: shorter than a header).
    header: SegmentHeader | HeaderCorruption | None
    #: The walk from the header: its frames, end and first damage.
    first: ScanResult | None
    #: Every damage, in order, each with the frames found after it by resynchronisation
    #: (the first entry is ``first.damage``).
    damages: list[tuple[Damage, list[FramedRecord]]]
    #: Seq of the last frame that verified anywhere in the file (resynchronised walks
    #: included), or ``base_seq - 1``.
    last_seq: int


def examine(
    data: bytes, path: str, base_seq: int, max_record_bytes: int, interval: int = 1 << 62
) -> SegmentExam:
    """Walk every frame of a whole segment file, resynchronising past each damage."""
    decoded = decode_segment_header(data)
    header: SegmentHeader | HeaderCorruption | None
    header = None if isinstance(decoded, NeedData) else decoded
    exam = SegmentExam(path, base_seq, len(data), header, None, [], base_seq - 1)
    if not isinstance(header, SegmentHeader):
        later = find_frames_after(data, 0, -1, base_seq, max_record_bytes)
        exam.last_seq = max((f.seq for f in later), default=base_seq - 1)
        return exam
    body = data[SEGMENT_HEADER_SIZE:]
    result = scan(body, SEGMENT_HEADER_SIZE, base_seq, max_record_bytes, interval)
    exam.first = result
    exam.last_seq = result.last_seq
    while result.damage is not None:
        damage = result.damage
        later = find_frames_after(data, 0, damage.offset, result.last_seq + 1, max_record_bytes)
        exam.damages.append((damage, later))
        if not later:
            break
        restart = later[0]
        result = scan(data[restart.offset :], restart.offset, restart.seq, max_record_bytes)
        exam.last_seq = max(exam.last_seq, result.last_seq)
    return exam


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
