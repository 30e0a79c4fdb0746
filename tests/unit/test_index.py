"""Unit tests of ``segmentlog.index.SparseIndex``: floor, extend, truncate, drop_last, bytes.

The index is a cache of (seq, offset) points, one at least every ``interval`` bytes; these
tests drive it with plain numbers, no files.
"""

from __future__ import annotations

import pytest

from segmentlog.format import (
    INDEX_ENTRY_SIZE,
    SEGMENT_HEADER_SIZE,
    encode_index_entry,
)
from segmentlog.index import SparseIndex

H = SEGMENT_HEADER_SIZE


def index_with_points(*points: tuple[int, int], base: int = 1, interval: int = 100) -> SparseIndex:
    index = SparseIndex(base, interval)
    for seq, offset in points:
        assert index.extend([(seq, offset)])
    return index


def test_empty_index_floors_every_seq_to_the_segment_header() -> None:
    index = SparseIndex(base_seq=41, interval=100)
    assert len(index) == 0
    assert index.last_offset == H
    assert index.floor(41) == (41, H)
    assert index.floor(10_000) == (41, H)


def test_extend_records_a_point_only_once_an_interval_has_passed() -> None:
    index = SparseIndex(1, 100)
    assert index.extend([(2, H + 99)]) == b""
    entry = index.extend([(3, H + 100)])
    assert entry == encode_index_entry(3, H + 100)
    assert len(entry) == INDEX_ENTRY_SIZE
    assert index.extend([(4, H + 150)]) == b""
    assert index.extend([(5, H + 199)]) == b""
    assert index.extend([(6, H + 200)]) == encode_index_entry(6, H + 200)
    assert index.seqs == [3, 6]
    assert index.offsets == [H + 100, H + 200]
    assert index.last_offset == H + 200
    assert len(index) == 2


def test_extend_measures_the_interval_from_the_last_point_not_a_fixed_grid() -> None:
    index = SparseIndex(1, 100)
    assert index.extend([(2, H + 170)])
    assert index.extend([(3, H + 250)]) == b""  # only 80 bytes after the last point
    assert index.extend([(4, H + 270)])


def test_floor_returns_the_point_at_or_before_the_seq() -> None:
    index = index_with_points((10, 1000), (20, 2000), (30, 3000))
    assert index.floor(1) == (1, H)
    assert index.floor(9) == (1, H)
    assert index.floor(10) == (10, 1000)
    assert index.floor(19) == (10, 1000)
    assert index.floor(20) == (20, 2000)
    assert index.floor(29) == (20, 2000)
    assert index.floor(30) == (30, 3000)
    assert index.floor(10**12) == (30, 3000)


def test_truncate_forgets_points_at_or_past_the_cut() -> None:
    index = index_with_points((10, 1000), (20, 2000), (30, 3000))
    index.truncate(3000)
    assert index.seqs == [10, 20]
    assert index.offsets == [1000, 2000]
    assert index.last_offset == 2000
    index.truncate(2001)  # the frame at 2000 starts before the cut: kept
    assert index.seqs == [10, 20]
    index.truncate(1500)
    assert index.seqs == [10]
    assert index.last_offset == 1000
    index.truncate(H)
    assert len(index) == 0
    assert index.last_offset == H
    assert index.floor(25) == (1, H)


def test_truncate_then_observe_records_points_again_from_the_new_last_point() -> None:
    index = index_with_points((10, 1000), (20, 2000))
    index.truncate(1500)
    assert index.extend([(15, 1099)]) == b""
    assert index.extend([(16, 1100)]) == encode_index_entry(16, 1100)
    assert index.seqs == [10, 16]


def test_drop_last_forgets_one_point() -> None:
    index = index_with_points((10, 1000), (20, 2000))
    index.drop_last()
    assert index.seqs == [10]
    assert index.last_offset == 1000
    index.drop_last()
    assert len(index) == 0
    assert index.last_offset == H


def test_to_bytes_and_from_bytes_round_trip() -> None:
    index = index_with_points((10, 1000), (20, 2000), (30, 3000), base=5)
    data = index.to_bytes()
    assert data == b"".join(
        encode_index_entry(s, o) for s, o in [(10, 1000), (20, 2000), (30, 3000)]
    )
    loaded, valid = SparseIndex.from_bytes(data, base_seq=5, interval=100, segment_size=4000)
    assert valid == len(data)
    assert loaded.seqs == [10, 20, 30]
    assert loaded.offsets == [1000, 2000, 3000]
    assert loaded.last_offset == 3000
    assert loaded.base_seq == 5
    assert loaded.interval == 100
    assert loaded.floor(25) == (20, 2000)


def test_from_bytes_of_an_empty_file_is_an_empty_index() -> None:
    loaded, valid = SparseIndex.from_bytes(b"", base_seq=1, interval=100, segment_size=10_000)
    assert valid == 0
    assert len(loaded) == 0
    assert loaded.last_offset == H


def test_from_bytes_keeps_the_whole_entries_before_a_torn_tail() -> None:
    data = encode_index_entry(10, 1000) + encode_index_entry(20, 2000)
    loaded, valid = SparseIndex.from_bytes(data + b"\x01\x02\x03", 1, 100, 10_000)
    assert valid == 2 * INDEX_ENTRY_SIZE
    assert loaded.seqs == [10, 20]


@pytest.mark.parametrize(
    ("entries", "kept"),
    [
        pytest.param([(10, 1000), (10, 2000)], 1, id="repeated-seq"),
        pytest.param([(10, 1000), (9, 2000)], 1, id="decreasing-seq"),
        pytest.param([(10, 1000), (20, 1000)], 1, id="repeated-offset"),
        pytest.param([(10, 1000), (20, 900)], 1, id="decreasing-offset"),
        pytest.param([(10, 1000), (20, 9990)], 1, id="frame-header-past-segment-end"),
        pytest.param([(0, 1000)], 0, id="seq-below-base"),
        pytest.param([(10, H - 1)], 0, id="offset-inside-segment-header"),
        pytest.param([(10, 1000), (20, 2000), (30, 3000)], 3, id="all-valid"),
    ],
)
def test_from_bytes_stops_at_the_first_entry_that_does_not_validate(
    entries: list[tuple[int, int]], kept: int
) -> None:
    data = b"".join(encode_index_entry(s, o) for s, o in entries)
    loaded, valid = SparseIndex.from_bytes(data, base_seq=1, interval=100, segment_size=10_000)
    assert valid == kept * INDEX_ENTRY_SIZE
    assert list(zip(loaded.seqs, loaded.offsets, strict=True)) == entries[:kept]


def test_from_bytes_of_garbage_is_an_empty_index_with_no_valid_bytes() -> None:
    loaded, valid = SparseIndex.from_bytes(b"\xff" * 40, 1, 100, 10_000)
    assert valid == 0
    assert len(loaded) == 0
