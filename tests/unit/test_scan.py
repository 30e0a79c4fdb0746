"""Unit tests of ``segmentlog.scan``: what a walk over a segment's bytes finds, and how it
classifies the first damage (short, gap, corrupt) and the preallocated zero tail."""

from __future__ import annotations

from segmentlog.format import (
    FRAME_HEADER_SIZE,
    FramedRecord,
)
from segmentlog.frames import (
    read_frame,
)
from segmentlog.index import SparseIndex
from segmentlog.scan import scan

from ._frames import MAX, H, frames

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
    result = scan(buf, H, 1, MAX, interval, index.last_offset)
    assert len(index) == 0
    expected = [(seq, H + offsets[seq - 1]) for seq in range(4, 40, 3)]
    assert result.index_points == expected
    for (_, a), (_, b) in zip(result.index_points, result.index_points[1:], strict=False):
        assert b - a >= interval


def test_scan_continues_an_existing_index_from_its_last_point() -> None:
    buf, offsets = frames(range(1, 20))
    size = offsets[1] - offsets[0]
    index = SparseIndex(1, 4 * size)
    index.extend([(5, H + offsets[4])])
    start = offsets[4]
    result = scan(buf[start:], H + start, 5, MAX, index.interval, index.last_offset)
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


def test_zeros_after_the_frames_are_a_clean_end_the_preallocated_tail() -> None:
    buf, _ = frames(range(1, 4))
    result = scan(buf + bytes(100), H, 1, MAX)
    assert result.damage is None
    assert result.end == H + len(buf)
    assert result.limit == H + len(buf) + 100
    assert result.last_seq == 3


def test_zeros_followed_by_more_bytes_are_a_gap() -> None:
    buf, offsets = frames(range(1, 6))
    holed = bytearray(buf)
    holed[offsets[2] : offsets[3]] = bytes(offsets[3] - offsets[2])
    result = scan(bytes(holed), H, 1, MAX)
    assert result.damage is not None
    assert result.damage.kind == "gap"
    assert result.damage.offset == H + offsets[2]
    assert result.last_seq == 2


def test_a_frame_torn_into_the_zeros_of_a_preallocated_tail_is_short() -> None:
    buf, offsets = frames(range(1, 4), delta="p" * 200)
    torn = bytearray(buf + bytes(4096))
    torn[offsets[2] + FRAME_HEADER_SIZE + 50 : len(buf)] = bytes(
        len(buf) - offsets[2] - FRAME_HEADER_SIZE - 50
    )
    result = scan(bytes(torn), H, 1, MAX)
    assert result.damage is not None
    assert result.damage.short
    assert result.damage.claimed_seq == 3
    assert result.last_seq == 2


def test_a_header_torn_into_zeros_is_short() -> None:
    buf, offsets = frames(range(1, 3))
    torn = buf[: offsets[1] + 2] + bytes(500)
    result = scan(torn, H, 1, MAX)
    assert result.damage is not None and result.damage.short


def test_scan_refuses_a_length_above_max_record_bytes() -> None:
    buf, _ = frames(range(1, 3), delta="y" * 300)
    result = scan(buf, H, 1, 200)
    assert result.damage is not None
    assert result.damage.offset == H
    assert "max_record_bytes" in result.damage.reason
    assert result.frames == 0
