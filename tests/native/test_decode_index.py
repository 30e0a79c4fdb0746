"""The compiled decode_index keeps exactly the valid prefix the pure decoder keeps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from segmentlog.format import (
    FRAME_HEADER_SIZE,
    INDEX_ENTRY,
    INDEX_ENTRY_SIZE,
    SEGMENT_HEADER_SIZE,
)

from . import twins
from .twins import SETTINGS, U64_MAX

#: base_seq and segment_size values on both sides of every edge the decoder compares with.
edges = st.sampled_from(
    [
        -(1 << 70),
        -1,
        0,
        1,
        2,
        FRAME_HEADER_SIZE - 1,
        FRAME_HEADER_SIZE,
        SEGMENT_HEADER_SIZE + FRAME_HEADER_SIZE,
        U64_MAX - 1,
        U64_MAX,
        1 << 64,
        (1 << 64) + FRAME_HEADER_SIZE - 1,
        (1 << 64) + FRAME_HEADER_SIZE,
        (1 << 64) + FRAME_HEADER_SIZE + 1,
        1 << 70,
    ]
)
entries = st.lists(
    st.tuples(
        st.one_of(st.integers(0, 2000), st.integers(U64_MAX - 5, U64_MAX)),
        st.one_of(st.integers(0, 10_000), st.integers(U64_MAX - FRAME_HEADER_SIZE - 2, U64_MAX)),
    ),
    max_size=40,
)


def _index(points: list[tuple[int, int]]) -> bytes:
    return b"".join(INDEX_ENTRY.pack(seq, off) for seq, off in points)


@SETTINGS
@given(
    points=st.lists(st.tuples(st.integers(1, 5), st.integers(1, 300)), max_size=60),
    ops=twins.damage_ops,
    kind=twins.buffer_kinds,
    base_seq=st.one_of(st.integers(0, 4), edges),
    segment_size=st.one_of(st.integers(0, 20_000), edges),
)
def test_valid_and_damaged_indexes_decode_alike(
    points: list[tuple[int, int]], ops: list, kind: str, base_seq: int, segment_size: int
) -> None:
    # Strictly increasing entries, as the writer makes them, from base_seq 1 and offset 48.
    seq, off, valid = 0, SEGMENT_HEADER_SIZE - 1, []
    for dseq, doff in points:
        seq, off = seq + dseq, off + doff
        valid.append((seq, off))
    data = twins.damage(_index(valid), ops)
    twins.decode_index(twins.as_buffer(data, kind), base_seq, segment_size)
    twins.decode_index(data[: len(data) - 5], 1, off + FRAME_HEADER_SIZE)


@SETTINGS
@given(
    points=entries,
    tail=st.binary(max_size=INDEX_ENTRY_SIZE - 1),
    base_seq=edges,
    segment_size=edges,
)
def test_entries_at_the_edges_of_u64_decode_alike(
    points: list[tuple[int, int]], tail: bytes, base_seq: int, segment_size: int
) -> None:
    points.sort()
    twins.decode_index(_index(points) + tail, base_seq, segment_size)


@SETTINGS
@given(
    data=st.binary(max_size=400),
    base_seq=st.one_of(st.integers(0, 3), edges),
    segment_size=st.one_of(st.integers(0, 1 << 65), edges),
)
def test_random_bytes_decode_alike(data: bytes, base_seq: int, segment_size: int) -> None:
    twins.decode_index(data, base_seq, segment_size)


def test_a_large_index_decodes_alike() -> None:
    # Above the size where the compiled decoder releases the GIL.
    data = _index([(s, SEGMENT_HEADER_SIZE + 100 * s) for s in range(1, 20_000)])
    _kind, (seqs, _offsets, valid) = twins.decode_index(data, 1, 1 << 40)
    assert (len(seqs), valid) == (19_999, len(data))
    twins.decode_index(memoryview(data), 1, 1 << 20)


def test_bad_arguments() -> None:
    assert twins.decode_index("text", 1, 100)[1] is TypeError
    for args in [(b"", None, 1), (b"", 1, "1"), (b"", 1.0, 1)]:
        with pytest.raises(TypeError):
            twins.native.decode_index(*args)
