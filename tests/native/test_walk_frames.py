"""The compiled walk_frames gives exactly what the pure walker gives, for every input.

Each test builds frame streams, damages them (truncation, bit flips, zero fill, garbage),
then compares both paths' ``walk_frames`` through ``twins.walk``: returned position, next seq,
stop (kind, offset, reason, claimed seq) and the bytes appended to ``out``.
"""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

import segmentlog.frames as frm
from segmentlog.format import (
    DEFAULT_MAX_RECORD_BYTES,
    FRAME_HEADER_SIZE,
    NEED_DATA,
    ZERO_FILL,
    FrameCorruption,
)

from . import twins
from .twins import NO_LIMIT, SETTINGS, U64_MAX


def _positions(stream: bytes, offsets: list[int]) -> st.SearchStrategy[int]:
    return st.one_of(
        st.just(0),
        st.sampled_from([0, *offsets, len(stream)]),
        st.integers(0, len(stream) + 30),
        st.just(1 << 70),
    )


@SETTINGS
@given(
    frames=twins.frame_lists,
    first_seq=twins.first_seqs,
    ops=twins.damage_ops,
    kind=twins.buffer_kinds,
    data=st.data(),
)
def test_damaged_streams_walk_alike(
    frames: list[twins.Frame], first_seq: int, ops: list, kind: str, data: st.DataObject
) -> None:
    stream, offsets, seqs = twins.build_stream(frames, first_seq)
    stream = twins.damage(stream, ops)
    pos = data.draw(_positions(stream, offsets), label="pos")
    at = offsets.index(pos) if pos in offsets else 0
    expected = seqs[at] if seqs else first_seq
    seq = data.draw(
        st.one_of(
            st.just(expected), st.just(expected), st.integers(expected - 2, expected + 2),
            twins.odd_seqs,
        ),
        label="seq",
    )  # fmt: skip
    first = data.draw(
        st.one_of(st.integers(expected - 2, expected + 12), twins.odd_seqs), label="first"
    )
    last = data.draw(
        st.one_of(st.just(NO_LIMIT), st.integers(expected - 2, expected + 12), twins.odd_seqs),
        label="last",
    )
    max_record = data.draw(twins.max_records, label="max_record")
    out = data.draw(st.sampled_from([None, bytearray(), bytearray(b"prefix")]), label="out")
    twins.walk(twins.as_buffer(stream, kind), pos, seq, first, last, max_record, out)


@SETTINGS
@given(frames=st.lists(twins.frames, max_size=6), first_seq=twins.first_seqs, data=st.data())
def test_a_stream_cut_at_every_offset_walks_alike(
    frames: list[twins.Frame], first_seq: int, data: st.DataObject
) -> None:
    frames = [f for f in frames if f.size <= 300]
    stream, _offsets, _seqs = twins.build_stream(frames, first_seq)
    first = data.draw(st.integers(first_seq, first_seq + 4), label="first")
    for cut in range(len(stream) + 1):
        piece = stream[:cut]
        twins.walk(piece, 0, first_seq, first, NO_LIMIT, DEFAULT_MAX_RECORD_BYTES, bytearray())
        twins.walk(piece, 0, first_seq, first_seq, first_seq + 2, 300, None)


@SETTINGS
@given(frames=st.lists(twins.frames, max_size=6), first_seq=twins.first_seqs, data=st.data())
def test_every_single_bit_flip_walks_alike(
    frames: list[twins.Frame], first_seq: int, data: st.DataObject
) -> None:
    frames = [f for f in frames if f.size <= 100][:3]
    stream, _, _ = twins.build_stream(frames, first_seq)
    bit = data.draw(st.integers(0, 7), label="bit")
    for at in range(len(stream)):
        flipped = bytearray(stream)
        flipped[at] ^= 1 << bit
        twins.walk(bytes(flipped), 0, first_seq, first_seq, NO_LIMIT, 200, bytearray())


@SETTINGS
@given(
    garbage=st.binary(max_size=300),
    pos=st.integers(0, 310),
    seq=st.one_of(st.integers(0, 5), twins.odd_seqs),
    first=st.one_of(st.integers(0, 5), twins.odd_seqs),
    last=st.one_of(st.integers(0, 5), twins.odd_seqs, st.just(NO_LIMIT)),
    max_record=twins.max_records,
)
def test_random_bytes_walk_alike(
    garbage: bytes, pos: int, seq: int, first: int, last: int, max_record: int
) -> None:
    twins.walk(garbage, pos, seq, first, last, max_record, bytearray())
    twins.walk(twins.FRAME_MAGIC + garbage, pos, seq, first, last, max_record, None)


def _stream(n: int, first_seq: int = 1, size: int = 40) -> tuple[bytes, list[int]]:
    stream, offsets, _ = twins.build_stream([twins.Frame(size=size)] * n, first_seq)
    return stream, offsets


def test_seqs_up_to_the_last_u64_and_past_it() -> None:
    stream, offsets = _stream(4, U64_MAX - 2)  # seqs 2**64 - 3 .. 2**64 - 1; the 4th is dropped
    assert len(offsets) == 3
    tail = stream + stream[offsets[0] : offsets[1]]  # one more frame whose seq cannot follow
    for last in (U64_MAX, NO_LIMIT, 1 << 70, U64_MAX - 1):
        for buf in (stream, tail):
            result = twins.walk(buf, 0, U64_MAX - 2, 0, last, 100, bytearray())
            assert result[0] == "ok"
    _, (pos, next_seq, stop) = twins.walk(tail, 0, U64_MAX - 2, 0, NO_LIMIT, 100, None)
    assert (pos, next_seq) == (len(stream), 1 << 64)
    assert isinstance(stop, FrameCorruption) and stop.seq == U64_MAX - 2
    _, (pos, next_seq, stop) = twins.walk(tail, 0, U64_MAX - 2, 0, U64_MAX, 100, None)
    assert (pos, next_seq, stop) == (len(stream), 1 << 64, None)


@pytest.mark.parametrize("seq", [-(1 << 70), -1, 1 << 64, 1 << 70])
@pytest.mark.parametrize("last", [-(1 << 71), -2, 0, U64_MAX, NO_LIMIT, 1 << 71])
def test_seqs_no_frame_can_hold(seq: int, last: int) -> None:
    stream, _ = _stream(2)
    for buf in (stream, stream[:10], b"", b"\0" * 40, b"garbage" * 9):
        kind, (pos, next_seq, _stop) = twins.walk(buf, 0, seq, 0, last, 100, bytearray())
        assert kind == "ok" and (pos, next_seq) == (0, seq)


def test_positions_past_the_end() -> None:
    stream, _ = _stream(2)
    for pos in (len(stream), len(stream) + 1, 1 << 62, 1 << 63, 1 << 64, 1 << 90):
        assert twins.walk(stream, pos, 1, 1, NO_LIMIT, 100, None) == ("ok", (pos, 1, NEED_DATA))
        assert twins.walk(stream, pos, 5, 1, 4, 100, None) == ("ok", (pos, 5, None))


def test_the_stops_name_what_they_met() -> None:
    stream, offsets = _stream(3)
    out = bytearray()
    assert twins.walk(stream + b"\0" * 50, 0, 1, 1, NO_LIMIT, 100, out)[1][2] is ZERO_FILL
    bad = twins.walk(stream + b"\xc1SLx" + bytes(30), 0, 1, 1, NO_LIMIT, 100, out)[1][2]
    assert bad == FrameCorruption(len(stream), "bad frame magic", None)
    long = twins.walk(stream, 0, 1, 1, NO_LIMIT, 10, out)[1][2]
    length = offsets[1] - FRAME_HEADER_SIZE
    assert long == FrameCorruption(0, f"length field {length} exceeds max_record_bytes 10", 1)
    seq = twins.walk(stream, offsets[1], 7, 1, NO_LIMIT, 100, out)[1][2]
    assert seq == FrameCorruption(offsets[1], "seq 2 where 7 was expected", 2)
    flipped = bytearray(stream)
    flipped[offsets[2] + 40] ^= 1
    sum_ = twins.walk(bytes(flipped), 0, 1, 1, NO_LIMIT, 100, out)[1][2]
    assert sum_ == FrameCorruption(offsets[2], "checksum mismatch", 3)


@pytest.mark.parametrize(
    "args",
    [
        ("text", 0, 1, 1, 2, 100),
        (b"", -1, 1, 1, 2, 100),
        (b"", -(1 << 70), 1, 1, 2, 100),
        (b"", None, 1, 1, 2, 100),
        (b"", 0, None, 1, 2, 100),
        (b"", 0, 1, "1", 2, 100),
        (b"", 0, 1, 1, 2.5, 100),
        (b"", 0, 1, 1, 2, None),
    ],
)
def test_arguments_of_the_wrong_type_or_sign_raise(args: tuple) -> None:
    # Only ints (or __index__) are taken: the pure code may compare a float or a str without
    # raising, and is not mirrored there.
    with pytest.raises((TypeError, ValueError)) as compiled:
        twins.native.walk_frames(*args, None)
    if compiled.type is ValueError:  # a negative position: the reference agrees
        assert twins.walk(*args, None)[1] is ValueError
    with pytest.raises(TypeError):
        twins.native.walk_frames(b"", 0, 1, 1, 2, 100, memoryview(bytearray(4)))
    with pytest.raises(TypeError):
        twins.native.walk_frames(b"", 0, 1, 1, 2)


def test_an_exported_out_cannot_grow_on_either_path() -> None:
    stream, _ = _stream(3)
    for module in (twins.native, None):
        out = bytearray(b"x")
        with memoryview(out), twins.on_path(module):
            with pytest.raises(BufferError):
                frm.walk_frames(stream, 0, 1, 1, NO_LIMIT, 100, out)
            # Nothing to append (every frame is before first) never resizes, so never fails.
            assert frm.walk_frames(stream, 0, 1, 9, NO_LIMIT, 100, out)[2] is NEED_DATA
        assert out == b"x"


def test_large_buffers_walk_alike_and_from_many_threads_at_once() -> None:
    # Above the size where the compiled walker releases the GIL.
    stream, _offsets = _stream(3000, size=100)
    expected = twins.walk(stream, 0, 1, 1, NO_LIMIT, 1000, bytearray())
    twins.walk(memoryview(stream), 0, 1, 500, 2500, 1000, bytearray())
    twins.walk(bytearray(stream), 0, 1, 500, 2500, 1000, bytearray())
    results: list[tuple] = []

    def reader() -> None:
        for _ in range(20):
            out = bytearray()
            results.append((twins.native.walk_frames(stream, 0, 1, 1, NO_LIMIT, 1000, out), out))

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert expected[1][2] is NEED_DATA
    first = results[0]
    assert first[0][:3] == (len(stream), 3001, 1) and all(r == first for r in results)
