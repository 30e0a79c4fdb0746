"""Hypothesis properties of the frame codec.

- However a stream is split into chunks, FrameDecoder yields the same records and ends in the
  same state as when it gets the stream in one piece.
- No input, random or damaged, ever yields a record whose checksum does not verify; damage to
  a stream of frames never yields a record that differs from the frame written there.
- A stream cut at any point decodes to the frames wholly before the cut, then NEED_DATA.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime
from typing import Any

import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segmentlog.events import (
    AgentEvent,
    CompactionCircuitOpened,
    Envelope,
    RunFailed,
    TextDelta,
    ToolCall,
    ToolCallCompleted,
)
from segmentlog.format import (
    DEFAULT_MAX_RECORD_BYTES,
    FRAME_CHECKSUM_START,
    FRAME_CONTINUED,
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    FRAME_MAGIC,
    MAX_SEGMENT_OFFSET,
    NEED_DATA,
    ZERO_FILL,
    FrameCorruption,
    FramedRecord,
    NeedData,
)
from segmentlog.frames import (
    FrameDecoder,
    FrameEncoder,
    read_frame,
)
from segmentlog.schema import EnvelopeCodec

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

RUN = uuid.UUID("0190a8c4-1e00-7000-8000-00000000a11d")

aware_datetimes = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
texts = st.text(max_size=40)
json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.binary(max_size=12).map(lambda b: FRAME_MAGIC + b),  # magic inside payloads
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
events = st.one_of(
    st.builds(TextDelta, run_id=st.just(RUN), timestamp=aware_datetimes, delta=texts),
    st.builds(RunFailed, run_id=st.just(RUN), timestamp=aware_datetimes, error=texts),
    st.builds(
        CompactionCircuitOpened,
        run_id=st.just(RUN),
        timestamp=aware_datetimes,
        consecutive_failures=st.integers(0, 2**63 - 1),
    ),
    st.builds(
        ToolCallCompleted,
        run_id=st.just(RUN),
        timestamp=aware_datetimes,
        call=st.builds(ToolCall, id=texts, name=texts, arguments=json_like),
    ),
)
frame_specs = st.tuples(
    events, st.integers(0, MAX_SEGMENT_OFFSET), st.booleans(), st.uuids(), aware_datetimes
)


def encode_stream(specs: list[tuple[Any, int, bool, uuid.UUID, datetime]]) -> list[bytes]:
    """Encode one frame per spec, with seqs 1, 2, ...; returns each frame's bytes."""
    encoder = FrameEncoder()
    frames = []
    for seq, (event, durable, continued, event_id, emitted_at) in enumerate(specs, start=1):
        buf = bytearray()
        env = Envelope(
            event_id=event_id,
            seq=seq,
            run_id=RUN,
            session_id=None,
            event=event,
            emitted_at=emitted_at,
        )
        encoder.encode(buf, env, durable, continued)
        frames.append(bytes(buf))
    return frames


def as_tuple(record: FramedRecord) -> tuple[int, int, int, bytes, int, bool]:
    return (
        record.offset,
        record.seq,
        record.durable,
        bytes(record.payload),
        record.end,
        record.continued,
    )


Outcome = tuple[list[tuple[int, int, int, bytes, int, bool]], NeedData | FrameCorruption]


def decode_chunks(chunks: list[bytes], offset: int) -> Outcome:
    """Feed ``chunks`` one by one, pulling every record after each; then the final state."""
    decoder = FrameDecoder(offset=offset)
    records = []
    for chunk in chunks:
        decoder.feed(chunk)
        while isinstance(result := decoder.next_event(), FramedRecord):
            records.append(as_tuple(result))
    final = decoder.next_event()
    assert not isinstance(final, FramedRecord)
    return records, final


def expected_records(frames: list[bytes], offset: int) -> list[tuple[int, ...]]:
    out = []
    pos = offset
    for seq, frame in enumerate(frames, start=1):
        durable_field = FRAME_HEADER.unpack_from(frame)[4]
        out.append(
            (
                pos,
                seq,
                durable_field & MAX_SEGMENT_OFFSET,
                frame[FRAME_HEADER_SIZE:],
                pos + len(frame),
                bool(durable_field & FRAME_CONTINUED),
            )
        )
        pos += len(frame)
    return out


@SETTINGS
@given(
    specs=st.lists(frame_specs, max_size=6),
    tail=st.binary(max_size=40),
    offset=st.integers(0, 2**40),
    data=st.data(),
)
def test_any_split_of_a_stream_gives_the_same_records_as_one_piece(
    specs: list[Any], tail: bytes, offset: int, data: st.DataObject
) -> None:
    frames = encode_stream(specs)
    stream = b"".join(frames) + tail
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8), label="cuts"))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]

    whole = decode_chunks([stream], offset)
    split = decode_chunks(chunks, offset)
    assert split == whole
    records, final = whole
    assert records == expected_records(frames, offset)
    end = offset + len(stream) - len(tail)
    if not tail:
        assert final is NEED_DATA
    elif tail[0] == 0:
        assert final is ZERO_FILL  # a zero byte where a frame must start: the preallocated tail
    else:
        assert final is NEED_DATA or (isinstance(final, FrameCorruption) and final.offset == end)


def verify_record_against_bytes(buf: bytes, pos: int, record: FramedRecord) -> None:
    magic, checksum, length, seq, durable_field = FRAME_HEADER.unpack_from(buf, pos)
    assert magic == FRAME_MAGIC
    assert record.end == pos + FRAME_HEADER_SIZE + length <= len(buf)
    assert xxhash.xxh3_64_intdigest(buf[pos + FRAME_CHECKSUM_START : record.end]) == checksum
    assert bytes(record.payload) == buf[pos + FRAME_HEADER_SIZE : record.end]
    assert record.seq == seq
    assert record.durable == durable_field & MAX_SEGMENT_OFFSET
    assert record.continued == bool(durable_field & FRAME_CONTINUED)


pieces = st.one_of(
    st.binary(max_size=64),
    st.just(FRAME_MAGIC),
    st.builds(
        lambda length, seq, durable, body: (
            FRAME_HEADER.pack(FRAME_MAGIC, 0, length, seq, durable) + body
        ),
        st.integers(0, 64),
        st.integers(0, 2**64 - 1),
        st.integers(0, 2**32 - 1),
        st.binary(max_size=64),
    ),
)


@SETTINGS
@given(parts=st.lists(pieces, max_size=8), max_record=st.integers(1, 128))
def test_random_bytes_never_decode_to_a_record_whose_checksum_fails(
    parts: list[bytes], max_record: int
) -> None:
    buf = b"".join(parts)
    for pos in range(len(buf) + 1):
        result = read_frame(buf, pos, max_record)
        if isinstance(result, FramedRecord):
            verify_record_against_bytes(buf, pos, result)
            assert result.end - pos - FRAME_HEADER_SIZE <= max_record
        elif isinstance(result, FrameCorruption):
            assert result.offset == pos


@SETTINGS
@given(specs=st.lists(frame_specs, min_size=1, max_size=5), data=st.data())
def test_damage_never_decodes_to_a_record_other_than_the_one_written_there(
    specs: list[Any], data: st.DataObject
) -> None:
    frames = encode_stream(specs)
    stream = bytearray(b"".join(frames))
    positions = data.draw(
        st.lists(st.integers(0, len(stream) - 1), min_size=1, max_size=4, unique=True),
        label="positions",
    )
    for position in positions:
        stream[position] ^= data.draw(st.integers(1, 255), label="xor")
    damaged = bytes(stream)
    originals = {r[0]: r for r in expected_records(frames, 0)}

    records, final = decode_chunks([damaged], 0)
    for record in records:
        assert record == originals[record[0]]
        assert not any(record[0] <= p < record[4] for p in positions)
    first_damaged = min(positions)
    damaged_frame_start = max(start for start in originals if start <= first_damaged)
    assert len(records) == list(originals).index(damaged_frame_start)
    assert final in (NEED_DATA, ZERO_FILL) or final.offset == damaged_frame_start

    # Resynchronising anywhere only ever finds frames exactly as written.
    for pos in range(len(damaged)):
        result = read_frame(damaged, pos, DEFAULT_MAX_RECORD_BYTES)
        if isinstance(result, FramedRecord):
            assert as_tuple(result) == originals[pos]


@SETTINGS
@given(specs=st.lists(frame_specs, max_size=6), data=st.data())
def test_truncation_gives_a_prefix_of_the_records_then_need_data(
    specs: list[Any], data: st.DataObject
) -> None:
    frames = encode_stream(specs)
    stream = b"".join(frames)
    cut = data.draw(st.integers(0, len(stream)), label="cut")
    records, final = decode_chunks([stream[:cut]], 0)
    expected = [r for r in expected_records(frames, 0) if r[4] <= cut]
    assert records == expected
    assert final is NEED_DATA


@SETTINGS
@given(specs=st.lists(frame_specs, min_size=1, max_size=4))
def test_decoded_payloads_are_the_envelopes_that_were_written(specs: list[Any]) -> None:
    frames = encode_stream(specs)
    codec: EnvelopeCodec[AgentEvent] = EnvelopeCodec()
    records, _ = decode_chunks([b"".join(frames)], 0)
    for (event, _durable, _continued, event_id, emitted_at), record in zip(
        specs, records, strict=True
    ):
        env = codec.decode(record[3])
        assert (env.event_id, env.seq, env.run_id) == (event_id, record[1], RUN)
        assert env.emitted_at == emitted_at
        assert env.event == event
