"""The compiled seal_frame writes the same header bytes as the pure one, and FrameEncoder
produces byte-identical frames on both paths."""

from __future__ import annotations

import struct
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

import segmentlog.frames as frm
from segmentlog.events import Envelope, TextDelta
from segmentlog.format import FRAME_CONTINUED, FRAME_HEADER_SIZE, MAX_SEGMENT_OFFSET

from . import twins
from .twins import SETTINGS, U64_MAX

fields = st.one_of(
    st.integers(0, 1 << 32),
    st.sampled_from([-(1 << 70), -1, 0, (1 << 32) - 1, 1 << 32, U64_MAX, 1 << 64, 1 << 70, True]),
)


@SETTINGS
@given(
    prefix=st.binary(max_size=100),
    payload=st.one_of(st.binary(max_size=300), st.integers(60_000, 70_000).map(bytes)),
    seq=fields,
    marks=fields,
    slack=st.integers(-40, 40),
)
def test_sealed_bytes_are_identical(
    prefix: bytes, payload: bytes, seq: int, marks: int, slack: int
) -> None:
    buf = bytearray(prefix + bytes(FRAME_HEADER_SIZE) + payload)
    start = len(prefix) + slack  # negative or past len(buf) - 28 now and then
    twins.seal(buf, start, seq, marks)


@pytest.mark.parametrize("seq", [None, 1.0, "1", b"1"])
def test_fields_that_are_not_ints_raise_struct_error(seq: object) -> None:
    buf = bytearray(40)
    assert twins.seal(buf, 0, seq, 0) == ("raises", struct.error)
    assert twins.seal(buf, 0, 1, seq) == ("raises", struct.error)


def test_buffers_that_cannot_be_sealed() -> None:
    assert twins.seal(bytearray(40), 13, 1, 0) == ("raises", ValueError)
    for buf in (bytes(40), "x" * 40, None, 7):
        for module in (twins.native, None):
            with twins.on_path(module), pytest.raises(TypeError):
                frm.seal_frame(buf, 0, 1, 0)  # type: ignore[arg-type]


def test_a_writable_memoryview_seals_alike() -> None:
    frames = []
    for module in (twins.native, None):
        raw = bytearray(b"\xee" * 10 + bytes(FRAME_HEADER_SIZE) + b"payload")
        with twins.on_path(module):
            frm.seal_frame(memoryview(raw), 10, 5, 9)
        frames.append(raw)
    assert frames[0] == frames[1]


@SETTINGS
@given(
    deltas=st.lists(st.text(max_size=80), min_size=1, max_size=5),
    durable=st.integers(0, MAX_SEGMENT_OFFSET),
    continued=st.booleans(),
    first_seq=st.one_of(st.integers(1, 1000), st.just(U64_MAX)),
)
def test_frame_encoder_output_is_identical(
    deltas: list[str], durable: int, continued: bool, first_seq: int
) -> None:
    run = uuid.UUID(int=7)
    stamp = datetime(2024, 7, 1, tzinfo=UTC)
    streams = []
    for module in (twins.native, None):
        encoder = frm.FrameEncoder()
        buf = bytearray(b"head")
        with twins.on_path(module):
            for i, delta in enumerate(deltas):
                seq = min(first_seq + i, U64_MAX)
                env = Envelope(
                    event_id=uuid.UUID(int=i),
                    seq=seq,
                    run_id=run,
                    session_id=None,
                    event=TextDelta(run_id=run, timestamp=stamp, delta=delta),
                    emitted_at=stamp,
                )
                encoder.encode(buf, env, durable, continued)
        streams.append(bytes(buf))
    assert streams[0] == streams[1]
    marks = struct.unpack_from("<I", streams[0], 4 + 24)[0]
    assert marks == durable | (FRAME_CONTINUED if continued else 0)
