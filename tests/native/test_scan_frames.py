"""The compiled scan_frames (the recovery scan) gives exactly the pure scan's FrameScan."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from segmentlog.format import (
    DEFAULT_MAX_RECORD_BYTES,
    SEGMENT_HEADER_SIZE,
)
from segmentlog.frames import (
    FrameScan,
)

from . import twins
from .twins import SETTINGS, U64_MAX

I64_MAX = (1 << 63) - 1

bases = st.one_of(
    st.sampled_from([0, SEGMENT_HEADER_SIZE, 1 << 31, 1 << 62]), st.integers(0, 1 << 40)
)
intervals = st.one_of(
    st.sampled_from([-(1 << 63), -10, 0, 1, 28, 100, 4096, 1 << 62, I64_MAX]),
    st.integers(-100, 10_000),
)


@SETTINGS
@given(
    frames=twins.frame_lists,
    first_seq=twins.first_seqs,
    ops=twins.damage_ops,
    kind=twins.buffer_kinds,
    base=bases,
    interval=intervals,
    data=st.data(),
)
def test_damaged_segments_scan_alike(
    frames: list[twins.Frame],
    first_seq: int,
    ops: list,
    kind: str,
    base: int,
    interval: int,
    data: st.DataObject,
) -> None:
    stream, _, _ = twins.build_stream(frames, first_seq)
    stream = twins.damage(stream, ops)
    seq = data.draw(
        st.one_of(
            st.just(first_seq),
            st.just(first_seq),
            st.integers(first_seq - 1, first_seq + 1),
            twins.odd_seqs,
        ),
        label="seq",
    )
    last_point = data.draw(
        st.one_of(
            st.just(base),
            st.integers(base - 5000, base + 5000),
            st.sampled_from([-(1 << 63), 0, I64_MAX]),
        ),
        label="last_point",
    )
    max_record = data.draw(twins.max_records, label="max_record")
    twins.scan(twins.as_buffer(stream, kind), base, seq, max_record, interval, last_point)


@SETTINGS
@given(frames=st.lists(twins.frames, max_size=6), first_seq=twins.first_seqs)
def test_a_segment_cut_at_every_offset_scans_alike(
    frames: list[twins.Frame], first_seq: int
) -> None:
    frames = [f for f in frames if f.size <= 300]
    stream, _, _ = twins.build_stream(frames, first_seq)
    for cut in range(len(stream) + 1):
        twins.scan(stream[:cut], SEGMENT_HEADER_SIZE, first_seq, 400, 60, SEGMENT_HEADER_SIZE)


@SETTINGS
@given(garbage=st.binary(max_size=300), seq=st.one_of(st.integers(0, 3), twins.odd_seqs))
def test_random_bytes_scan_alike(garbage: bytes, seq: int) -> None:
    twins.scan(garbage, 0, seq, DEFAULT_MAX_RECORD_BYTES, 0, 0)
    twins.scan(twins.FRAME_MAGIC + garbage, 7, seq, 100, 1, -3)


def test_batches_points_and_the_seq_after_the_last_u64() -> None:
    frames = [twins.Frame(size=30, continued=c) for c in (False, True, True, False, True)]
    stream, offsets, _ = twins.build_stream(frames, U64_MAX - 4)
    kind, scan = twins.scan(stream, 100, U64_MAX - 4, 1000, 50, 100)
    assert kind == "ok" and isinstance(scan, FrameScan)
    assert (scan.next_seq, scan.frames, scan.batch_seq) == (1 << 64, 5, U64_MAX - 1)
    assert scan.tail_start == 100 + offsets[3]
    assert scan.points == [(U64_MAX - 4 + i, 100 + offsets[i]) for i in range(1, 5)]
    # No whole batch: batch_seq is the seq before the first, even for seq 0.
    _, scan = twins.scan(stream[offsets[1] : offsets[3]], 7, U64_MAX - 3, 1000, 50, 0)
    assert (scan.frames, scan.batch_end, scan.batch_seq, scan.tail_start) == (2, 7, U64_MAX - 4, -1)
    _, scan = twins.scan(b"", 0, 0, 1000, 50, 0)
    assert (scan.batch_end, scan.batch_seq, scan.tail_start) == (0, -1, -1)


@pytest.mark.parametrize("seq", [-(1 << 70), -1, 1 << 64, 1 << 70])
def test_seqs_no_frame_can_hold(seq: int) -> None:
    stream, _, _ = twins.build_stream([twins.Frame(size=10)] * 2, 1)
    _kind, scan = twins.scan(stream, 48, seq, 100, 1, 0)
    assert (scan.next_seq, scan.batch_seq, scan.frames, scan.end) == (seq, seq - 1, 0, 48)


def test_bad_arguments() -> None:
    assert twins.scan(b"", -1, 1, 100, 1, 0) == ("raises", ValueError)
    for args in [("x", 0, 1, 1, 1, 0), (b"", 0, None, 1, 1, 0), (b"", 0.5, 1, 1, 1, 0)]:
        with pytest.raises(TypeError):
            twins.native.scan_frames(*args)
    # Offsets, the interval and the last point are 64-bit signed in the compiled scan.
    for args in [
        (b"x", I64_MAX, 1, 1, 1, 0),
        (b"", 1 << 63, 1, 1, 1, 0),
        (b"", 0, 1, 1, 1 << 63, 0),
        (b"", 0, 1, 1, 1, -(1 << 63) - 1),
    ]:
        with pytest.raises(OverflowError):
            twins.native.scan_frames(*args)
