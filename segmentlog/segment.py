"""One segment file: create it safely, append frames to it, read and scan it.

Strategy and invariants
- A ``Segment`` owns one file and one end offset; it knows nothing of directories, runs or
  policies (the log decides when to sync, roll or truncate).
- A segment is created as ``<name>.tmp`` holding only its header, fsynced, renamed into place,
  and the directory fsynced: a segment file that exists under its final name always had a
  complete header written first.
- ``append`` writes a buffer of whole frames with as many ``write`` calls as the kernel needs;
  on any error it truncates the file back to where it was, so no half frame stays behind, and
  re-raises. The log then fails stop.
- ``scan`` walks frames from a known-good offset, verifying checksums and seq continuity, and
  describes what it found (``ScanResult``) without deciding what to do about damage; the
  recovery module decides. ``find_frames_after`` resynchronises past damage by searching for
  the frame magic and accepting only frames whose checksum verifies.
- Reads go through ``pread`` on descriptors the caller supplies, so readers never disturb the
  writer's file position.
"""

from __future__ import annotations

import contextlib
import struct
import uuid
from dataclasses import dataclass, field

from ._fs import FileSystem
from .codec import (
    FRAME_CONTINUED,
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    FRAME_MAGIC,
    MAX_SEGMENT_OFFSET,
    SEGMENT_HEADER_SIZE,
    FrameCorruption,
    FramedRecord,
    HeaderCorruption,
    NeedData,
    SegmentHeader,
    decode_segment_header,
    encode_segment_header,
    read_frame,
    walk_frames,
)
from .index import SparseIndex

__all__ = [
    "Damage",
    "ScanResult",
    "Segment",
    "find_frames_after",
    "index_name",
    "scan",
    "segment_name",
]

SEGMENT_SUFFIX = ".seg"
_NO_LIMIT = 1 << 64  # walk to the end of the buffer
_MARKS = struct.Struct("<I")  # a frame's durable/continued field ...
_MARKS_AT = 24  # ... at this offset in the frame header
INDEX_SUFFIX = ".idx"
TMP_SUFFIX = ".tmp"


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


@dataclass
class Damage:
    """Bytes at ``offset`` that do not form the expected frame."""

    offset: int
    reason: str
    #: True when the bytes simply end inside a frame (a short frame at end of file).
    short: bool
    #: The seq the damaged frame's header claims, when it could be read.
    claimed_seq: int | None = None


@dataclass
class ScanResult:
    """What a forward walk over a segment's frames found."""

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
    #: Frames walked (for statistics).
    frames: int = 0


class Segment:
    """A segment file of one run: its name, extent, descriptors and sparse index."""

    __slots__ = (
        "base_seq",
        "dir",
        "fd",
        "index",
        "index_fd",
        "last_seq",
        "path",
        "size",
        "synced",
    )

    def __init__(self, directory: str, base_seq: int, index: SparseIndex) -> None:
        self.dir = directory
        self.base_seq = base_seq
        self.path = f"{directory}/{segment_name(base_seq)}"
        self.size = SEGMENT_HEADER_SIZE
        self.last_seq = base_seq - 1
        self.synced = SEGMENT_HEADER_SIZE
        self.fd: int | None = None
        self.index_fd: int | None = None
        self.index = index

    @property
    def index_path(self) -> str:
        """Path of this segment's sparse index file."""
        return f"{self.dir}/{index_name(self.base_seq)}"

    @property
    def frames(self) -> int:
        """Number of frames in the segment."""
        return self.last_seq - self.base_seq + 1

    # --- creation ------------------------------------------------------------------------

    @staticmethod
    def initial_synced(durable: bool) -> int:
        """The durable mark of a segment just created (with or without its fsyncs)."""
        return SEGMENT_HEADER_SIZE if durable else 0

    @classmethod
    def create(
        cls,
        fs: FileSystem,
        directory: str,
        run_id: uuid.UUID,
        base_seq: int,
        index: SparseIndex,
        durable: bool,
    ) -> Segment:
        """Create a new, empty segment file safely (tmp, header, fsync, rename, dir fsync).

        With ``durable=False`` (fsync policy ``never``) the fsyncs are skipped.
        """
        seg = cls(directory, base_seq, index)
        tmp = seg.path + TMP_SUFFIX
        fd = fs.create_new(tmp)
        try:
            header = encode_segment_header(run_id, base_seq)
            written = 0
            while written < len(header):
                written += fs.write(fd, header[written:])
            if durable:
                fs.fdatasync(fd)
            fs.close(fd)
            fd = -1
            fs.rename(tmp, seg.path)
            if durable:
                fs.fsync_dir(directory)
        except BaseException:
            if fd >= 0:
                fs.close(fd)
            fs.remove_quietly(tmp)
            raise
        seg.synced = cls.initial_synced(durable)
        return seg

    # --- descriptors ---------------------------------------------------------------------

    def open_writer(self, fs: FileSystem) -> None:
        """Open the segment and its index for appending (no-op when already open)."""
        if self.fd is None:
            self.fd = fs.open_append(self.path)
        if self.index_fd is None:
            self.index_fd = fs.open_append(self.index_path, create=True)

    def close(self, fs: FileSystem) -> None:
        """Close the writer descriptors, if open."""
        fd, ifd = self.fd, self.index_fd
        self.fd = self.index_fd = None
        if fd is not None:
            fs.close(fd)
        if ifd is not None:
            fs.close(ifd)

    # --- writing -------------------------------------------------------------------------

    def append(self, fs: FileSystem, data: bytes | bytearray, last_seq: int) -> None:
        """Write whole frames at the end; on error cut the file back and re-raise."""
        fd = self.fd
        assert fd is not None, "open_writer first"
        start = self.size
        written = 0
        try:
            written = fs.write(fd, data)
            if written != len(data):
                with memoryview(data) as view:
                    while written < len(view):
                        written += fs.write(fd, view[written:])
        except BaseException:
            # Even a failed write may have landed a prefix: always cut back to the frame
            # boundary. If that fails too, recovery cuts the torn tail on reopen.
            with contextlib.suppress(OSError):
                fs.truncate(fd, start)
            raise
        self.size = start + written
        self.last_seq = last_seq

    def write_index(self, fs: FileSystem, entries: bytes) -> None:
        """Append encoded index entries (a cache: errors here are not fatal to data)."""
        if self.index_fd is not None and entries:
            fs.write(self.index_fd, entries)

    def room_for(self, nbytes: int, segment_bytes: int) -> bool:
        """True if ``nbytes`` more fit (an empty segment always takes one record)."""
        if self.last_seq < self.base_seq:
            return self.size + nbytes <= MAX_SEGMENT_OFFSET
        return self.size + nbytes <= segment_bytes

    def cut(self, fs: FileSystem, fd: int, end: int) -> None:
        """Truncate the segment file to ``end`` and forget index entries past it."""
        fs.truncate(fd, end)
        self.size = end
        self.index.truncate(end)


# --- reading ---------------------------------------------------------------------------


def read_header(fs: FileSystem, fd: int) -> SegmentHeader | HeaderCorruption | None:
    """Read and decode the header; None when the file is shorter than a header."""
    data = fs.pread(fd, SEGMENT_HEADER_SIZE, 0)
    result = decode_segment_header(data)
    if isinstance(result, NeedData):
        return None
    return result


def scan(
    buf: bytes,
    base_offset: int,
    start_seq: int,
    max_record_bytes: int,
    index: SparseIndex | None = None,
) -> ScanResult:
    """Walk frames in ``buf`` (which holds the file from ``base_offset`` to its end).

    Each frame must verify and carry the next seq (``start_seq`` first). Stops at the end or
    at the first damage. With ``index`` given, also computes the index points that are due
    (without changing the index).
    """
    starts: list[int] = []
    pos, next_seq, stop = walk_frames(
        buf, 0, start_seq, start_seq, _NO_LIMIT, max_record_bytes, None, starts
    )
    n = len(buf)
    damage: Damage | None = None
    if isinstance(stop, FrameCorruption):
        damage = Damage(base_offset + stop.offset, stop.reason, False, stop.seq)
    elif pos < n:  # NEED_DATA inside a frame: a short frame at the end
        claimed = FRAME_HEADER.unpack_from(buf, pos)[3] if n - pos >= FRAME_HEADER_SIZE else None
        damage = Damage(base_offset + pos, "frame cut short at end of file", True, claimed)
    # The last whole batch ends after the last frame that does not say "continued".
    i = len(starts) - 1
    while i >= 0 and _MARKS.unpack_from(buf, starts[i] + _MARKS_AT)[0] & FRAME_CONTINUED:
        i -= 1
    batch_end = (starts[i + 1] if i + 1 < len(starts) else pos) if i >= 0 else 0
    last_payload = bytes(buf[starts[i] + FRAME_HEADER_SIZE : batch_end]) if i >= 0 else None
    points: list[tuple[int, int]] = []
    if index is not None:
        last_point, interval = index.last_offset, index.interval
        for k, off in enumerate(starts):
            if base_offset + off - last_point >= interval:
                last_point = base_offset + off
                points.append((start_seq + k, last_point))
    return ScanResult(
        end=base_offset + pos,
        last_seq=next_seq - 1,
        batch_start=base_offset + batch_end,
        batch_start_seq=start_seq + i,
        last_payload=last_payload,
        index_points=points,
        damage=damage,
        frames=len(starts),
    )


def find_frames_after(
    buf: bytes, base_offset: int, after: int, min_seq: int, max_record_bytes: int
) -> list[FramedRecord]:
    """Every verifying frame that starts after absolute offset ``after``, with seq >= min_seq.

    Resynchronises by searching for the frame magic, so it finds frames behind damage whose
    length field is unreadable. Offsets in the result are absolute.
    """
    found: list[FramedRecord] = []
    pos = buf.find(FRAME_MAGIC, after - base_offset + 1)
    while pos != -1:
        record = read_frame(buf, pos, max_record_bytes)
        if isinstance(record, FramedRecord) and record.seq >= min_seq:
            found.append(
                record._replace(
                    offset=base_offset + record.offset, end=base_offset + record.end, payload=b""
                )
            )
            pos = buf.find(FRAME_MAGIC, record.end)
        else:
            pos = buf.find(FRAME_MAGIC, pos + 1)
    return found
