"""Unit tests of ``segmentlog.segment``: names, ``scan`` and ``find_frames_after`` on hand-made
buffers, and the ``Segment`` file operations on a real directory.

Buffers are built with the codec's ``FrameEncoder`` and then damaged by hand (flip a byte, cut
the tail, skip a seq), so each test states one scenario of what a scan can meet.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from segmentlog import Envelope, TextDelta
from segmentlog._fs import OS_FS, FileSystem
from segmentlog.codec import (
    FRAME_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    FramedRecord,
    FrameEncoder,
    SegmentHeader,
    decode_segment_header,
    read_frame,
)
from segmentlog.index import SparseIndex
from segmentlog.segment import (
    Segment,
    find_frames_after,
    index_name,
    parse_segment_name,
    scan,
    segment_name,
)

RUN = uuid.UUID("00000000-0000-4000-8000-0000000000aa")
TS = datetime(2025, 1, 1, tzinfo=UTC)
MAX = 1 << 20
H = SEGMENT_HEADER_SIZE


def envelope(seq: int, delta: str = "x") -> Envelope[TextDelta]:
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
    seqs = list(seqs)
    for seq in seqs:
        offsets.append(len(buf))
        enc.encode(buf, envelope(seq, delta), 0, continued)
    return bytes(buf), offsets


# --- names ------------------------------------------------------------------------------


def test_segment_and_index_names_are_twenty_digit_base_seqs() -> None:
    assert segment_name(1) == "00000000000000000001.seg"
    assert index_name(1) == "00000000000000000001.idx"
    assert segment_name(123_456_789) == "00000000000123456789.seg"
    assert sorted([segment_name(10), segment_name(9), segment_name(100)]) == [
        segment_name(9),
        segment_name(10),
        segment_name(100),
    ]


@pytest.mark.parametrize(
    ("name", "base"),
    [
        ("00000000000000000001.seg", 1),
        ("00000000000000004097.seg", 4097),
        ("00000000000000000000.seg", None),
        ("00000000000000000001.idx", None),
        ("00000000000000000001.seg.tmp", None),
        ("0000000000000000001.seg", None),
        ("0000000000000000000x.seg", None),
        ("0000000000000000000\u0661.seg", None),
        ("LOCK", None),
    ],
)
def test_parse_segment_name_accepts_only_segment_file_names(name: str, base: int | None) -> None:
    assert parse_segment_name(name) == base


# --- scan -------------------------------------------------------------------------------


def test_scan_of_clean_frames_reaches_the_end() -> None:
    buf, offsets = frames(range(5, 15))
    result = scan(buf, H, 5, MAX)
    assert result.damage is None
    assert result.end == H + len(buf)
    assert result.last_seq == 14
    assert result.batch_start == result.end
    assert result.batch_start_seq == 14
    assert result.frames == 10
    last = read_frame(buf, offsets[-1], MAX)
    assert isinstance(last, FramedRecord)
    assert result.last_payload == bytes(last.payload)


def test_scan_of_nothing_is_clean_with_no_frames() -> None:
    result = scan(b"", H, 7, MAX)
    assert result.damage is None
    assert (result.end, result.last_seq, result.frames, result.last_payload) == (H, 6, 0, None)


def test_scan_computes_the_index_points_due_without_changing_the_index() -> None:
    buf, offsets = frames(range(1, 40))
    frame_size = offsets[1] - offsets[0]
    interval = 3 * frame_size
    index = SparseIndex(1, interval)
    result = scan(buf, H, 1, MAX, index)
    assert len(index) == 0
    expected = [(seq, H + offsets[seq - 1]) for seq in range(4, 40, 3)]
    assert result.index_points == expected
    for (_, a), (_, b) in zip(result.index_points, result.index_points[1:], strict=False):
        assert b - a >= interval


def test_scan_continues_an_existing_index_from_its_last_point() -> None:
    buf, offsets = frames(range(1, 20))
    size = offsets[1] - offsets[0]
    index = SparseIndex(1, 4 * size)
    index.observe(5, H + offsets[4])
    start = offsets[4]
    result = scan(buf[start:], H + start, 5, MAX, index)
    assert result.index_points[0] == (9, H + offsets[8])


def test_scan_reports_an_unfinished_batch_at_the_end() -> None:
    whole, _ = frames(range(1, 4))
    # A batch whose frames 4..6 all say "continued": its last frame never reached the file.
    batch, _ = frames([4, 5, 6], continued=True)
    buf = whole + batch
    result = scan(buf, H, 1, MAX)
    assert result.damage is None
    assert result.last_seq == 6
    assert result.end == H + len(buf)
    assert result.batch_start == H + len(whole)
    assert result.batch_start_seq == 3


def test_scan_of_a_frame_cut_short_reports_short_damage_with_its_claimed_seq() -> None:
    buf, offsets = frames(range(1, 6))
    cut = buf[: offsets[4] + FRAME_HEADER_SIZE + 2]
    result = scan(cut, H, 1, MAX)
    assert result.damage is not None
    assert result.damage.short
    assert result.damage.offset == H + offsets[4]
    assert result.damage.claimed_seq == 5
    assert result.last_seq == 4
    assert result.end == H + offsets[4]


def test_scan_of_a_header_cut_short_reports_short_damage_without_a_seq() -> None:
    buf, offsets = frames(range(1, 3))
    result = scan(buf[: offsets[1] + 10], H, 1, MAX)
    assert result.damage is not None
    assert result.damage.short
    assert result.damage.claimed_seq is None
    assert result.last_seq == 1


def test_scan_stops_at_a_flipped_payload_byte_and_calls_it_corruption() -> None:
    buf, offsets = frames(range(1, 6))
    damaged = bytearray(buf)
    damaged[offsets[2] + FRAME_HEADER_SIZE + 3] ^= 0x40
    result = scan(bytes(damaged), H, 1, MAX)
    assert result.damage is not None
    assert not result.damage.short
    assert result.damage.offset == H + offsets[2]
    assert "checksum" in result.damage.reason
    assert result.damage.claimed_seq == 3
    assert result.last_seq == 2
    assert result.end == H + offsets[2]


def test_scan_stops_at_a_seq_that_does_not_follow() -> None:
    a, _ = frames(range(1, 4))
    b, _ = frames(range(5, 7))
    result = scan(a + b, H, 1, MAX)
    assert result.damage is not None
    assert result.damage.offset == H + len(a)
    assert "seq 5 where 4 was expected" in result.damage.reason
    assert result.damage.claimed_seq == 5
    assert result.last_seq == 3


def test_scan_stops_at_zeros_after_the_frames() -> None:
    buf, _ = frames(range(1, 4))
    result = scan(buf + bytes(100), H, 1, MAX)
    assert result.damage is not None
    assert not result.damage.short
    assert result.damage.offset == H + len(buf)
    assert result.last_seq == 3


def test_scan_refuses_a_length_above_max_record_bytes() -> None:
    buf, _ = frames(range(1, 3), delta="y" * 300)
    result = scan(buf, H, 1, 200)
    assert result.damage is not None
    assert result.damage.offset == H
    assert "max_record_bytes" in result.damage.reason
    assert result.frames == 0


# --- find_frames_after ------------------------------------------------------------------


def test_find_frames_after_resynchronises_past_damage() -> None:
    buf, offsets = frames(range(1, 11))
    damaged = bytearray(buf)
    damaged[offsets[3] + 13] ^= 0xFF  # the length field of seq 4: the scan cannot step over it
    found = find_frames_after(bytes(damaged), H, H + offsets[3] - 1, 1, MAX)
    assert [f.seq for f in found] == list(range(5, 11))
    assert [f.offset for f in found] == [H + o for o in offsets[4:]]
    assert all(f.payload == b"" for f in found)
    assert found[-1].end == H + len(buf)


def test_find_frames_after_starts_strictly_after_the_offset() -> None:
    buf, offsets = frames(range(1, 6))
    found = find_frames_after(buf, 0, offsets[1], 1, MAX)
    assert [f.seq for f in found] == [3, 4, 5]
    found = find_frames_after(buf, 0, offsets[1] - 1, 1, MAX)
    assert [f.seq for f in found] == [2, 3, 4, 5]
    found = find_frames_after(buf, 0, -1, 1, MAX)
    assert [f.seq for f in found] == [1, 2, 3, 4, 5]


def test_find_frames_after_ignores_frames_below_min_seq() -> None:
    buf, _ = frames([1, 2, 3, 1, 2, 7, 8])
    found = find_frames_after(buf, 0, -1, 3, MAX)
    assert [f.seq for f in found] == [3, 7, 8]


def test_find_frames_after_finds_nothing_in_garbage() -> None:
    assert find_frames_after(b"\xc1SLF" + bytes(60), 0, -1, 1, MAX) == []
    assert find_frames_after(b"", 0, -1, 1, MAX) == []


def test_find_frames_after_keeps_the_durable_mark() -> None:
    buf = bytearray()
    enc = FrameEncoder(MAX)
    enc.encode(buf, envelope(1), 1234)
    found = find_frames_after(bytes(buf), 0, -1, 1, MAX)
    assert [(f.seq, f.durable, f.continued) for f in found] == [(1, 1234, False)]


# --- Segment on a real directory --------------------------------------------------------


def test_create_writes_only_a_header_under_the_final_name(tmp_path: Path) -> None:
    seg = Segment.create(OS_FS, str(tmp_path), RUN, 17, SparseIndex(17, 256), durable=True)
    assert sorted(os.listdir(tmp_path)) == [segment_name(17)]
    data = (tmp_path / segment_name(17)).read_bytes()
    assert len(data) == H
    assert decode_segment_header(data) == SegmentHeader(1, RUN, 17)
    assert (seg.size, seg.synced, seg.last_seq, seg.frames) == (H, H, 16, 0)
    assert seg.fd is None and seg.index_fd is None


def test_create_without_durability_marks_nothing_synced(tmp_path: Path) -> None:
    seg = Segment.create(OS_FS, str(tmp_path), RUN, 1, SparseIndex(1, 256), durable=False)
    assert seg.synced == 0
    assert seg.size == H


def test_append_then_read_back_and_cut(tmp_path: Path) -> None:
    seg = Segment.create(OS_FS, str(tmp_path), RUN, 1, SparseIndex(1, 64), durable=False)
    seg.open_writer(OS_FS)
    try:
        buf, offsets = frames(range(1, 6))
        seg.append(OS_FS, buf, 5)
        assert (seg.size, seg.last_seq, seg.frames) == (H + len(buf), 5, 5)
        seg.index.observe(3, H + offsets[2])
        seg.write_index(OS_FS, seg.index.to_bytes())
        assert os.path.getsize(seg.index_path) == 16
        data = (tmp_path / segment_name(1)).read_bytes()
        result = scan(data[H:], H, 1, MAX)
        assert result.damage is None and result.last_seq == 5
        assert seg.fd is not None
        seg.cut(OS_FS, seg.fd, H + offsets[2])
        assert seg.size == H + offsets[2]
        assert len(seg.index) == 0  # the point at seq 3 was at the cut
        assert os.path.getsize(seg.path) == H + offsets[2]
    finally:
        seg.close(OS_FS)
    assert seg.fd is None and seg.index_fd is None
    seg.close(OS_FS)  # idempotent


def test_room_for_always_takes_one_record_in_an_empty_segment(tmp_path: Path) -> None:
    seg = Segment(str(tmp_path), 1, SparseIndex(1, 64))
    assert seg.room_for(10_000, 4096)
    seg.size, seg.last_seq = 4000, 1
    assert seg.room_for(96, 4096)
    assert not seg.room_for(97, 4096)


class FailingSecondWrite(FileSystem):
    """Writes half of the second write's data, then fails the third write call."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, fd: int, data: bytes | bytearray | memoryview) -> int:
        self.writes += 1
        if self.writes == 2:
            return super().write(fd, bytes(data)[: len(data) // 2])
        if self.writes == 3:
            raise OSError(28, "No space left on device")
        return super().write(fd, data)


def test_append_that_fails_midway_cuts_the_file_back(tmp_path: Path) -> None:
    fs = FailingSecondWrite()
    seg = Segment.create(fs, str(tmp_path), RUN, 1, SparseIndex(1, 64), durable=False)
    seg.open_writer(fs)
    try:
        buf, _ = frames(range(1, 4))
        with pytest.raises(OSError, match="No space"):
            seg.append(fs, buf, 3)
        assert seg.size == H
        assert seg.last_seq == 0
        assert os.path.getsize(seg.path) == H
    finally:
        seg.close(fs)
