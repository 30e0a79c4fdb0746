"""Unit tests of ``segmentlog.segment.Segment``: create in place, pwrite, preallocate, cut,
seal, trim, close; on a real directory (and a file system that fails a write).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from segmentlog._fs import OS_FS, FileSystem
from segmentlog.durability import FsyncTimer
from segmentlog.format import (
    SegmentHeader,
    decode_segment_header,
    segment_name,
)
from segmentlog.index import SparseIndex
from segmentlog.scan import scan
from segmentlog.segment import PREALLOCATE_MIN, Segment

from ._frames import MAX, RUN, H, frames

TIMER = FsyncTimer(10.0)


def test_create_makes_an_empty_file_whose_header_comes_with_the_first_frames(
    tmp_path: Path,
) -> None:
    seg = Segment.create(OS_FS, str(tmp_path), RUN, 17, 256)
    assert sorted(os.listdir(tmp_path)) == [segment_name(17)]
    assert (tmp_path / segment_name(17)).read_bytes() == b""
    assert (seg.size, seg.synced, seg.last_seq, seg.frames) == (H, 0, 16, 0)
    buf, _ = frames(range(17, 19))
    seg.append(OS_FS, buf, 18)
    seg.close(OS_FS)
    data = (tmp_path / segment_name(17)).read_bytes()
    assert decode_segment_header(data[:H]) == SegmentHeader(1, RUN, 17)
    assert data[H:] == buf
    assert seg.fd is None and seg.index_fd is None


def test_append_then_read_back_and_cut(tmp_path: Path) -> None:
    seg = Segment.create(OS_FS, str(tmp_path), RUN, 1, 64)
    try:
        buf, offsets = frames(range(1, 6))
        seg.append(OS_FS, buf, 5)
        assert (seg.size, seg.last_seq, seg.frames) == (H + len(buf), 5, 5)
        seg.write_index(OS_FS, seg.index.extend([(3, H + offsets[2])]))
        assert len(seg.index) == 1
        assert not os.path.exists(seg.index_path)  # a small segment keeps it in memory
        more, _ = frames(range(6, 40))
        seg.append(OS_FS, more, 39)
        assert seg.size >= seg.index_file_min
        seg.write_index(OS_FS, seg.index.extend([(20, seg.size - 100)]))
        assert os.path.getsize(seg.index_path) == 32  # written whole once it is worth it
        data = (tmp_path / segment_name(1)).read_bytes()
        result = scan(data[H:], H, 1, MAX)
        assert result.damage is None and result.last_seq == 39
        seg.cut(OS_FS, H + offsets[2], 2)
        assert (seg.size, seg.last_seq) == (H + offsets[2], 2)
        assert len(seg.index) == 0  # the points at seq 3 and 20 were at or past the cut
        assert os.path.getsize(seg.path) == H + offsets[2]
    finally:
        seg.close(OS_FS)
    assert seg.fd is None and seg.index_fd is None
    seg.close(OS_FS)  # idempotent


def test_append_reserves_space_ahead_and_close_with_trim_cuts_it(tmp_path: Path) -> None:
    seg = Segment.create(OS_FS, str(tmp_path), RUN, 1, 64)
    buf, _ = frames(range(1, 4))
    seg.append(OS_FS, buf, 3, preallocate_to=1 << 20)
    end = H + len(buf)
    assert seg.size == end
    assert seg.allocated >= end + PREALLOCATE_MIN - H
    assert os.path.getsize(seg.path) == seg.allocated
    data = (tmp_path / segment_name(1)).read_bytes()
    assert data[end:] == bytes(len(data) - end)  # zeros: a clean end
    assert scan(data[H:], H, 1, MAX).damage is None
    seg.close(OS_FS, trim=True)
    assert os.path.getsize(seg.path) == end


def test_preallocation_never_passes_its_limit(tmp_path: Path) -> None:
    seg = Segment.create(OS_FS, str(tmp_path), RUN, 1, 64)
    buf, _ = frames(range(1, 4))
    seg.append(OS_FS, buf, 3, preallocate_to=4096)
    assert os.path.getsize(seg.path) == 4096
    seg.close(OS_FS)


def test_seal_trims_and_makes_the_file_durable(tmp_path: Path) -> None:
    seg = Segment.create(OS_FS, str(tmp_path), RUN, 1, 64)
    buf, _ = frames(range(1, 4))
    seg.append(OS_FS, buf, 3, preallocate_to=1 << 20)
    seg.seal(OS_FS, TIMER)
    assert seg.synced == seg.size == os.path.getsize(seg.path)
    seg.close(OS_FS)


def test_room_for_always_takes_one_record_in_an_empty_segment(tmp_path: Path) -> None:
    seg = Segment(str(tmp_path), 1, SparseIndex(1, 64))
    assert seg.room_for(10_000, 4096)
    seg.size, seg.last_seq = 4000, 1
    assert seg.room_for(96, 4096)
    assert not seg.room_for(97, 4096)


class FailingSecondWrite(FileSystem):
    """Writes half of the second write's data, then fails the third write call."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> int:
        self.writes += 1
        if self.writes == 2:
            return super().pwrite(fd, bytes(data)[: len(data) // 2], offset)
        if self.writes == 3:
            raise OSError(28, "No space left on device")
        return super().pwrite(fd, data, offset)


def test_append_that_fails_midway_cuts_the_file_back(tmp_path: Path) -> None:
    fs = FailingSecondWrite()
    seg = Segment.create(fs, str(tmp_path), RUN, 1, 64)
    try:
        first, _ = frames(range(1, 3))
        seg.append(fs, first, 2)  # write 1: the header and two frames
        buf, _ = frames(range(3, 6))
        with pytest.raises(OSError, match="No space"):
            seg.append(fs, buf, 5, preallocate_to=1 << 20)  # half lands, then ENOSPC
        assert seg.size == H + len(first)
        assert seg.last_seq == 2
        assert os.path.getsize(seg.path) == H + len(first)
    finally:
        seg.close(fs)


def test_create_refuses_an_existing_file_and_leaves_it_alone(tmp_path: Path) -> None:
    """A segment is never created over an existing file: a view that does not know of the
    file is stale, and emptying the file would destroy another writer's frames."""
    first = Segment.create(OS_FS, str(tmp_path), RUN, 1, 256)
    assert first.fd is not None
    data, _ = frames(range(1, 4))
    OS_FS.pwrite(first.fd, first.header + data, 0)
    first.close(OS_FS)
    before = Path(first.path).read_bytes()
    with pytest.raises(FileExistsError):
        Segment.create(OS_FS, str(tmp_path), RUN, 1, 256)
    assert Path(first.path).read_bytes() == before
