"""Unit tests for segmentlog.codec: bytes in, records / NEED_DATA / corruption out."""

from __future__ import annotations

import struct
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
import xxhash

from segmentlog.errors import (
    FormatVersionError,
    InvalidEventError,
    RecordTooLargeError,
    SchemaMismatchError,
)
from segmentlog.events import (
    AgentEvent,
    AssistantMessageCommitted,
    CacheMetrics,
    CompactionCircuitOpened,
    ContextBuilt,
    DoomLoopDetected,
    Envelope,
    Failure,
    FinishReason,
    ModelStarted,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunStarted,
    Success,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallCompleted,
    ToolCallDelta,
    ToolCallStarted,
    ToolExecutionFinished,
    ToolExecutionStarted,
    ToolMessageCommitted,
    UsageRecorded,
)
from segmentlog.format import (
    DEFAULT_MAX_RECORD_BYTES,
    FORMAT_VERSION,
    FRAME_CHECKSUM_START,
    FRAME_CONTINUED,
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    FRAME_MAGIC,
    INDEX_ENTRY_SIZE,
    MAX_FRAME_LENGTH,
    MAX_SEGMENT_OFFSET,
    NEED_DATA,
    SEGMENT_HEADER,
    SEGMENT_HEADER_SIZE,
    SEGMENT_MAGIC,
    ZERO_FILL,
    FrameCorruption,
    FramedRecord,
    HeaderCorruption,
    NeedData,
    SegmentHeader,
    decode_index,
    decode_segment_header,
    encode_index_entry,
    encode_segment_header,
    index_name,
    parse_segment_name,
    segment_name,
)
from segmentlog.frames import (
    FrameDecoder,
    FrameEncoder,
    read_frame,
)
from segmentlog.scan import find_frames_after
from segmentlog.schema import EnvelopeCodec, event_classes, new_page

from ._frames import MAX, H
from ._frames import envelope as seg_envelope
from ._frames import frames as seg_frames

RUN = uuid.UUID("0190a8c4-1e00-7000-8000-00000000a11d")
SESSION = uuid.UUID("0190a8c4-1e00-7000-8000-0000000005e5")
WHEN = datetime(2024, 7, 1, 12, 0, 0, 123456, tzinfo=UTC)
IST = timezone(timedelta(hours=5, minutes=30))


# --- building events and frames ---------------------------------------------------------


def every_variant() -> list[Any]:
    """One instance of each of the 18 AgentEvent variants, with awkward but legal values."""
    common: dict[str, Any] = {"run_id": RUN, "timestamp": WHEN}
    return [
        RunStarted(**common, session_id=SESSION, provider="anthropic", model="claude-x"),
        ContextBuilt(**common, message_count=0),
        ModelStarted(
            run_id=RUN, timestamp=WHEN.astimezone(IST), provider="p", model="m", iteration=2**63 - 1
        ),
        TextDelta(**common, delta="héllo ✓ 🚀 \x00 \u2028"),
        ToolCallStarted(**common, call_id="call-1", tool_name="search"),
        ToolCallDelta(**common, call_id="call-1", delta='{"q": "x'),
        ToolCallCompleted(
            **common,
            call=ToolCall(
                id="call-1",
                name="search",
                arguments={
                    "q": "x",
                    "list": [1, 2.5, None, True, "", {"nested": []}],
                    "u64": 2**64 - 1,
                    "i64": -(2**63),
                    "raw": b"\xc1SLF\x00",
                },
            ),
        ),
        ToolExecutionStarted(**common, call_id="call-1", tool_name="search"),
        ToolExecutionFinished(
            **common,
            call_id="call-1",
            tool_name="search",
            result=Success(output={"rows": [[1, "a"], [2, "b"]]}),
            duration_ms=17,
        ),
        AssistantMessageCommitted(**common, message_id=uuid.UUID(int=1)),
        ToolMessageCommitted(**common, message_id=uuid.UUID(int=2**128 - 1)),
        UsageRecorded(
            **common,
            usage=TokenUsage(
                input_tokens=10, output_tokens=20, total_tokens=30, cache_read_input_tokens=5
            ),
        ),
        CacheMetrics(
            **common,
            cache_creation_input_tokens=1,
            cache_read_input_tokens=2,
            cached_input_tokens=3,
        ),
        RunCompleted(**common, finish_reason=FinishReason.STOP, iterations=4),
        RunFailed(**common, error="boom\n" * 3),
        RunCancelled(**common),
        DoomLoopDetected(**common, description=""),
        CompactionCircuitOpened(**common, consecutive_failures=3),
    ]


VARIANTS = every_variant()


def envelope(event: Any, seq: int = 1, session_id: uuid.UUID | None = SESSION) -> Envelope[Any]:
    return Envelope(
        event_id=uuid.UUID(int=0x0190A8C41E00_7000_8000_000000000000 + seq),
        seq=seq,
        run_id=event.run_id,
        session_id=session_id,
        event=event,
        emitted_at=WHEN + timedelta(microseconds=seq % 1_000_000),
    )


def frame_of(env: Envelope[Any], durable: int = 0, continued: bool = False) -> bytes:
    buf = bytearray()
    FrameEncoder().encode(buf, env, durable, continued)
    return bytes(buf)


def stream_of(count: int) -> tuple[bytes, list[bytes]]:
    frames = [
        frame_of(envelope(TextDelta(run_id=RUN, delta=f"d{i}" * i), seq=i + 1))
        for i in range(count)
    ]
    return b"".join(frames), frames


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


CODEC: EnvelopeCodec[AgentEvent] = EnvelopeCodec()


def test_the_helper_builds_each_of_the_18_variants_once() -> None:
    assert len(VARIANTS) == 18
    assert {type(v) for v in VARIANTS} == set(AgentEvent.__args__)


# --- segment header ---------------------------------------------------------------------


def test_segment_header_round_trips() -> None:
    for base_seq in (1, 2, 2**64 - 1):
        data = encode_segment_header(RUN, base_seq)
        assert len(data) == SEGMENT_HEADER_SIZE == 48
        assert decode_segment_header(data) == SegmentHeader(FORMAT_VERSION, RUN, base_seq)


def test_segment_header_layout_is_magic_version_size_flags_run_seq_checksum() -> None:
    data = encode_segment_header(RUN, 7)
    magic, version, size, flags, run_bytes, base_seq = SEGMENT_HEADER.unpack_from(data)
    assert (magic, version, size, flags, run_bytes, base_seq) == (
        SEGMENT_MAGIC,
        FORMAT_VERSION,
        48,
        0,
        RUN.bytes,
        7,
    )
    assert data[16:32] == RUN.bytes  # big-endian UUID bytes, as uuid.UUID.bytes
    assert data[40:] == struct.pack("<Q", xxhash.xxh3_64_intdigest(data[:40]))


def test_segment_header_decodes_from_a_memoryview_with_frames_after_it() -> None:
    data = encode_segment_header(RUN, 5) + frame_of(envelope(VARIANTS[0]))
    assert decode_segment_header(memoryview(data)) == SegmentHeader(FORMAT_VERSION, RUN, 5)


def test_segment_header_with_bad_magic_is_corruption() -> None:
    good = encode_segment_header(RUN, 1)
    for bit in range(len(SEGMENT_MAGIC) * 8):
        assert decode_segment_header(flip(good, bit)) == HeaderCorruption("bad segment magic")


def test_segment_header_with_any_bit_flipped_after_the_magic_is_a_checksum_mismatch() -> None:
    good = encode_segment_header(RUN, 1)
    for bit in range(len(SEGMENT_MAGIC) * 8, SEGMENT_HEADER_SIZE * 8):
        result = decode_segment_header(flip(good, bit))
        assert result == HeaderCorruption("segment header checksum mismatch"), bit


def test_truncated_segment_header_needs_data() -> None:
    good = encode_segment_header(RUN, 1)
    for cut in range(SEGMENT_HEADER_SIZE):
        assert decode_segment_header(good[:cut]) is NEED_DATA, cut


def test_short_file_that_is_not_a_magic_prefix_is_bad_magic_not_need_data() -> None:
    assert decode_segment_header(b'{"not": ') == HeaderCorruption("bad segment magic")
    assert decode_segment_header(SEGMENT_MAGIC[:3] + b"x") == HeaderCorruption("bad segment magic")


def rechecksummed_header(version: int = FORMAT_VERSION, size: int = 48, flags: int = 0) -> bytes:
    head = SEGMENT_HEADER.pack(SEGMENT_MAGIC, version, size, flags, RUN.bytes, 1)
    return head + struct.pack("<Q", xxhash.xxh3_64_intdigest(head))


def test_newer_format_version_raises_format_version_error() -> None:
    with pytest.raises(FormatVersionError, match="Upgrade segmentlog"):
        decode_segment_header(rechecksummed_header(version=FORMAT_VERSION + 1))


def test_damaged_version_field_is_corruption_not_a_newer_format() -> None:
    data = bytearray(encode_segment_header(RUN, 1))
    data[8:10] = struct.pack("<H", FORMAT_VERSION + 1)  # checksum not updated
    assert decode_segment_header(bytes(data)) == HeaderCorruption(
        "segment header checksum mismatch"
    )


def test_version_zero_or_another_header_size_is_corruption() -> None:
    for data in (rechecksummed_header(version=0), rechecksummed_header(size=64)):
        result = decode_segment_header(data)
        assert isinstance(result, HeaderCorruption)
        assert result.reason.startswith("unsupported header")


def test_header_flags_are_ignored_by_version_1_readers() -> None:
    assert decode_segment_header(rechecksummed_header(flags=0xFFFF_FFFF)) == SegmentHeader(
        FORMAT_VERSION, RUN, 1
    )


# --- frames: round trips ----------------------------------------------------------------


@pytest.mark.parametrize("event", VARIANTS, ids=[type(v).__name__ for v in VARIANTS])
def test_every_variant_round_trips_byte_exactly(event: Any) -> None:
    env = envelope(event, seq=42)
    first = frame_of(env, durable=4096)
    record = read_frame(first, 0, DEFAULT_MAX_RECORD_BYTES)
    assert isinstance(record, FramedRecord)
    assert (record.offset, record.seq, record.durable, record.end) == (0, 42, 4096, len(first))
    decoded = CODEC.decode(record.payload)
    assert decoded == env
    assert type(decoded.event) is type(event)
    assert frame_of(decoded, durable=4096) == first


def test_failure_result_and_missing_session_round_trip_byte_exactly() -> None:
    event = ToolExecutionFinished(
        run_id=RUN,
        timestamp=WHEN,
        call_id="c",
        tool_name="t",
        result=Failure(error="no"),
        duration_ms=0,
    )
    env = envelope(event, session_id=None)
    first = frame_of(env)
    record = read_frame(first, 0, DEFAULT_MAX_RECORD_BYTES)
    assert isinstance(record, FramedRecord)
    decoded = CODEC.decode(record.payload)
    assert decoded == env
    assert decoded.session_id is None
    assert isinstance(decoded.event.result, Failure)
    assert frame_of(decoded) == first


def test_non_utc_timestamp_comes_back_as_the_same_instant_in_utc() -> None:
    event = VARIANTS[2]
    assert event.timestamp.utcoffset() == timedelta(hours=5, minutes=30)
    record = read_frame(frame_of(envelope(event)), 0, DEFAULT_MAX_RECORD_BYTES)
    assert isinstance(record, FramedRecord)
    decoded = CODEC.decode(record.payload).event
    assert decoded.timestamp == event.timestamp
    assert decoded.timestamp.utcoffset() == timedelta(0)


def test_frame_header_fields_are_laid_out_as_documented() -> None:
    env = envelope(VARIANTS[3], seq=9)
    data = frame_of(env, durable=1234)
    magic, checksum, length, seq, durable = FRAME_HEADER.unpack_from(data)
    assert magic == FRAME_MAGIC == b"\xc1SLF"
    assert length == len(data) - FRAME_HEADER_SIZE
    assert (seq, durable) == (9, 1234)
    assert checksum == xxhash.xxh3_64_intdigest(data[FRAME_CHECKSUM_START:])
    assert data[FRAME_HEADER_SIZE:] == msgspec.msgpack.Encoder(uuid_format="bytes").encode(env)


def test_encode_appends_to_the_buffer_and_returns_the_frame_size() -> None:
    buf = bytearray(b"existing")
    size = FrameEncoder().encode(buf, envelope(VARIANTS[0]), 0)
    assert buf[:8] == b"existing"
    assert size == len(buf) - 8
    record = read_frame(buf, 8, DEFAULT_MAX_RECORD_BYTES)
    assert isinstance(record, FramedRecord)
    assert (record.offset, record.end) == (8, len(buf))


def test_continued_flag_round_trips_beside_the_durable_mark() -> None:
    for continued in (False, True):
        data = frame_of(envelope(VARIANTS[0]), durable=MAX_SEGMENT_OFFSET, continued=continued)
        record = read_frame(data, 0, DEFAULT_MAX_RECORD_BYTES)
        assert isinstance(record, FramedRecord)
        assert (record.durable, record.continued) == (MAX_SEGMENT_OFFSET, continued)
        raw_durable = FRAME_HEADER.unpack_from(data)[4]
        assert raw_durable == MAX_SEGMENT_OFFSET | (FRAME_CONTINUED if continued else 0)


def test_read_frame_gives_the_same_record_from_bytes_bytearray_and_memoryview() -> None:
    data = b"\x00" * 5 + frame_of(envelope(VARIANTS[6]))
    results = [
        read_frame(b, 5, DEFAULT_MAX_RECORD_BYTES)
        for b in (data, bytearray(data), memoryview(data))
    ]
    assert all(isinstance(r, FramedRecord) for r in results)
    payloads = {bytes(r.payload) for r in results if isinstance(r, FramedRecord)}
    assert len(payloads) == 1
    assert {r._replace(payload=b"") for r in results if isinstance(r, FramedRecord)} == {
        FramedRecord(5, 1, 0, b"", len(data), False)
    }


def test_payload_read_from_bytes_is_a_view_that_stays_valid() -> None:
    data = frame_of(envelope(VARIANTS[0]))
    record = read_frame(data, 0, DEFAULT_MAX_RECORD_BYTES)
    assert isinstance(record, FramedRecord)
    assert isinstance(record.payload, memoryview)  # zero-copy for immutable input
    assert bytes(record.payload) == data[FRAME_HEADER_SIZE:]
    assert CODEC.decode(record.payload) == envelope(VARIANTS[0])


def test_payload_read_from_a_bytearray_is_a_copy_independent_of_the_buffer() -> None:
    buf = bytearray(frame_of(envelope(VARIANTS[0])))
    record = read_frame(buf, 0, DEFAULT_MAX_RECORD_BYTES)
    assert isinstance(record, FramedRecord)
    assert isinstance(record.payload, bytes)
    buf.clear()  # the buffer can still be resized: no export is left behind
    assert CODEC.decode(record.payload) == envelope(VARIANTS[0])


# --- frames: truncation and damage ------------------------------------------------------


def test_frame_truncated_at_every_byte_needs_data() -> None:
    data = frame_of(envelope(VARIANTS[8]))
    for cut in range(len(data)):
        assert read_frame(data[:cut], 0, DEFAULT_MAX_RECORD_BYTES) is NEED_DATA, cut


def test_a_zero_byte_where_a_frame_must_start_is_zero_fill() -> None:
    for zeros in (b"\x00", b"\x00" * 3, b"\x00" * 100):
        assert read_frame(zeros, 0, DEFAULT_MAX_RECORD_BYTES) is ZERO_FILL


def test_short_bytes_that_are_not_a_magic_prefix_are_bad_magic_at_once() -> None:
    for junk in (b"\xc1S\x00", b"\x86\xa8event"):
        assert read_frame(junk, 0, DEFAULT_MAX_RECORD_BYTES) == FrameCorruption(
            0, "bad frame magic", None
        )


def test_reading_at_or_past_the_end_needs_data() -> None:
    data = frame_of(envelope(VARIANTS[0]))
    assert read_frame(data, len(data), DEFAULT_MAX_RECORD_BYTES) is NEED_DATA
    assert read_frame(data, len(data) + 10, DEFAULT_MAX_RECORD_BYTES) is NEED_DATA


def expected_after_flip(original: bytes, bit: int, max_record: int, room: int) -> object:
    """What read_frame must report for ``original`` with ``bit`` flipped.

    ``room`` is how many bytes follow the frame in the buffer.
    """
    byte = bit // 8
    flipped = flip(original, bit)
    _magic, _checksum, length, seq, _durable = FRAME_HEADER.unpack_from(flipped)
    if byte < 4:
        return FrameCorruption(0, "bad frame magic", None)
    if length > max_record:
        return FrameCorruption(
            0, f"length field {length} exceeds max_record_bytes {max_record}", seq
        )
    if FRAME_HEADER_SIZE + length > len(original) + room:
        return NEED_DATA
    return FrameCorruption(0, "checksum mismatch", seq)


def test_every_single_bit_flip_is_reported_never_a_record() -> None:
    # Alone in the buffer, a flip that lengthens the length field (within the bound) makes
    # the frame run past the end of the buffer: NEED_DATA. Every other flip is corruption,
    # with the reason fixed by where the bit is. No flip ever yields a record.
    original = frame_of(envelope(VARIANTS[6], seq=3), durable=306)
    length = len(original) - FRAME_HEADER_SIZE
    need_data = 0
    for bit in range(len(original) * 8):
        result = read_frame(flip(original, bit), 0, DEFAULT_MAX_RECORD_BYTES)
        assert not isinstance(result, FramedRecord), bit
        assert result == expected_after_flip(original, bit, DEFAULT_MAX_RECORD_BYTES, 0), bit
        if result is NEED_DATA:
            need_data += 1
            assert 12 <= bit // 8 < 16 and not length & (1 << (bit - 96))
    assert need_data > 0


def test_every_single_bit_flip_with_bytes_after_the_frame_is_corruption() -> None:
    # With at least max_record_bytes after the frame, no claimed length can run past the
    # buffer, so every flip is corruption.
    max_record = 4096
    original = frame_of(envelope(VARIANTS[6], seq=3), durable=306)
    tail = bytes(max_record)
    for bit in range(len(original) * 8):
        result = read_frame(flip(original, bit) + tail, 0, max_record)
        assert isinstance(result, FrameCorruption), bit
        assert result == expected_after_flip(original, bit, max_record, len(tail)), bit


def test_flipped_bit_in_the_seq_is_reported_with_the_damaged_seq() -> None:
    original = frame_of(envelope(VARIANTS[0], seq=1))
    result = read_frame(flip(original, 16 * 8 + 1), 0, DEFAULT_MAX_RECORD_BYTES)
    assert result == FrameCorruption(0, "checksum mismatch", 3)


def test_length_claiming_4_gib_is_corruption_without_allocating() -> None:
    header = FRAME_HEADER.pack(FRAME_MAGIC, 0, MAX_FRAME_LENGTH, 7, 0)
    tracemalloc.start()
    try:
        result = read_frame(header, 0, DEFAULT_MAX_RECORD_BYTES)
        decoder = FrameDecoder()
        decoder.feed(header + bytes(100))
        streamed = decoder.next_event()
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    expected = FrameCorruption(
        0, f"length field {MAX_FRAME_LENGTH} exceeds max_record_bytes {DEFAULT_MAX_RECORD_BYTES}", 7
    )
    assert result == expected
    assert streamed == expected
    assert peak < 64 * 1024


def test_length_within_a_4_gib_bound_but_past_the_buffer_needs_data_without_allocating() -> None:
    header = FRAME_HEADER.pack(FRAME_MAGIC, 0, MAX_FRAME_LENGTH, 7, 0)
    tracemalloc.start()
    try:
        result = read_frame(header, 0, MAX_FRAME_LENGTH)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result is NEED_DATA
    assert peak < 64 * 1024


def test_length_above_the_bound_is_reported_before_the_payload_arrives() -> None:
    header = FRAME_HEADER.pack(FRAME_MAGIC, 0, 101, 5, 0)
    assert read_frame(header, 0, 100) == FrameCorruption(
        0, "length field 101 exceeds max_record_bytes 100", 5
    )
    assert read_frame(header, 0, 101) is NEED_DATA


def test_empty_payload_frame_with_a_valid_checksum_is_a_record() -> None:
    # The codec verifies framing only; an empty payload is for the envelope decoder to refuse.
    tail = struct.pack("<IQI", 0, 1, 0)
    data = FRAME_MAGIC + struct.pack("<Q", xxhash.xxh3_64_intdigest(tail)) + tail
    record = read_frame(data, 0, DEFAULT_MAX_RECORD_BYTES)
    assert record == FramedRecord(0, 1, 0, memoryview(b""), FRAME_HEADER_SIZE, False)
    with pytest.raises(msgspec.DecodeError):
        CODEC.decode(record.payload)


# --- encoder errors ---------------------------------------------------------------------


def test_record_too_large_leaves_the_buffer_unchanged() -> None:
    env = envelope(TextDelta(run_id=RUN, timestamp=WHEN, delta="x" * 100_000))
    buf = bytearray(b"before") + frame_of(envelope(VARIANTS[0]))
    snapshot = bytes(buf)
    with pytest.raises(RecordTooLargeError, match=r"exceeds max_record_bytes=65536; split"):
        FrameEncoder(max_record_bytes=65536).encode(buf, env, 0)
    assert bytes(buf) == snapshot


def test_record_exactly_at_the_limit_is_accepted_and_one_byte_over_is_refused() -> None:
    env = envelope(VARIANTS[3])
    payload_size = len(frame_of(env)) - FRAME_HEADER_SIZE
    buf = bytearray()
    FrameEncoder(max_record_bytes=payload_size).encode(buf, env, 0)
    assert read_frame(buf, 0, payload_size) != NEED_DATA
    with pytest.raises(RecordTooLargeError):
        FrameEncoder(max_record_bytes=payload_size - 1).encode(bytearray(), env, 0)
    assert isinstance(read_frame(buf, 0, payload_size - 1), FrameCorruption)


def test_encoder_refuses_a_max_record_bytes_the_format_cannot_describe() -> None:
    for bad in (0, -1, MAX_FRAME_LENGTH + 1):
        with pytest.raises(ValueError, match="max_record_bytes"):
            FrameEncoder(max_record_bytes=bad)


def test_unencodable_object_raises_invalid_event_error_and_leaves_the_buffer_unchanged() -> None:
    buf = bytearray(b"before")
    bad_events = [
        TextDelta(run_id=RUN, timestamp=WHEN, delta=object()),  # type: ignore[arg-type]
        ToolCallCompleted(
            run_id=RUN, timestamp=WHEN, call=ToolCall(id="c", name="n", arguments={1j: 2})
        ),
    ]
    for event in bad_events:
        with pytest.raises(InvalidEventError, match="could not be encoded") as info:
            FrameEncoder().encode(buf, envelope(event), 0)
        assert isinstance(info.value, TypeError)
        assert bytes(buf) == b"before"


def test_out_of_range_integer_raises_invalid_event_error_and_leaves_the_buffer_unchanged() -> None:
    buf = bytearray(b"before")
    event = ToolCallCompleted(
        run_id=RUN, timestamp=WHEN, call=ToolCall(id="c", name="n", arguments={"n": 2**64})
    )
    with pytest.raises(InvalidEventError, match="could not be encoded"):
        FrameEncoder().encode(buf, envelope(event), 0)
    assert bytes(buf) == b"before"


@pytest.mark.parametrize("durable", [MAX_SEGMENT_OFFSET + 1, 2**32, -1])
def test_durable_mark_outside_31_bits_is_refused_and_leaves_the_buffer_unchanged(
    durable: int,
) -> None:
    # Above 31 bits the mark would spill into the CONTINUED bit and read back as a batch.
    buf = bytearray(b"before")
    with pytest.raises(ValueError, match="durable mark"):
        FrameEncoder().encode(buf, envelope(VARIANTS[0]), durable)
    assert bytes(buf) == b"before"


@pytest.mark.parametrize("seq", [2**64, 0, -1])
def test_seq_outside_1_to_u64_is_refused_and_leaves_the_buffer_unchanged(seq: int) -> None:
    buf = bytearray(b"before")
    with pytest.raises(ValueError, match=f"seq {seq} outside"):
        FrameEncoder().encode(buf, envelope(VARIANTS[0], seq=seq), 0)
    assert bytes(buf) == b"before"


def test_largest_seq_and_durable_mark_round_trip() -> None:
    data = frame_of(envelope(VARIANTS[0], seq=2**64 - 1), durable=MAX_SEGMENT_OFFSET)
    record = read_frame(data, 0, DEFAULT_MAX_RECORD_BYTES)
    assert isinstance(record, FramedRecord)
    assert (record.seq, record.durable, record.continued) == (2**64 - 1, MAX_SEGMENT_OFFSET, False)


# --- FrameDecoder -----------------------------------------------------------------------


def test_frame_decoder_yields_every_record_with_absolute_offsets() -> None:
    stream, frames = stream_of(5)
    decoder = FrameDecoder(offset=SEGMENT_HEADER_SIZE)
    decoder.feed(stream)
    records = list(decoder)
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    starts = [SEGMENT_HEADER_SIZE + sum(map(len, frames[:i])) for i in range(5)]
    assert [r.offset for r in records] == starts
    assert [bytes(r.payload) for r in records] == [f[FRAME_HEADER_SIZE:] for f in frames]
    assert decoder.offset == SEGMENT_HEADER_SIZE + len(stream)
    assert decoder.buffered == 0
    assert decoder.next_event() is NEED_DATA


def test_frame_decoder_fed_one_byte_at_a_time_gives_the_same_records() -> None:
    stream, _ = stream_of(4)
    whole = FrameDecoder()
    whole.feed(stream)
    expected = [(r.offset, r.seq, bytes(r.payload), r.end) for r in whole]
    decoder = FrameDecoder()
    got = []
    for i in range(len(stream)):
        decoder.feed(stream[i : i + 1])
        got.extend((r.offset, r.seq, bytes(r.payload), r.end) for r in decoder)
    assert got == expected
    assert decoder.offset == len(stream)


def test_frame_decoder_reports_a_partial_frame_as_buffered() -> None:
    stream, frames = stream_of(2)
    decoder = FrameDecoder()
    decoder.feed(stream[:-3])
    assert [r.seq for r in decoder] == [1]
    assert decoder.next_event() is NEED_DATA
    assert decoder.offset == len(frames[0])
    assert decoder.buffered == len(frames[1]) - 3


def test_frame_decoder_keeps_reporting_the_same_corruption() -> None:
    stream, frames = stream_of(3)
    damaged = bytearray(stream)
    damaged[len(frames[0]) + FRAME_HEADER_SIZE + 2] ^= 0xFF  # payload byte of frame 2
    decoder = FrameDecoder(offset=100)
    decoder.feed(bytes(damaged))
    assert [r.seq for r in decoder] == [1]
    bad = FrameCorruption(100 + len(frames[0]), "checksum mismatch", 2)
    assert decoder.next_event() == bad
    decoder.feed(frames[0])  # more input does not move it past the damage
    assert decoder.next_event() == bad
    assert decoder.offset == bad.offset


def resync(data: bytes, after: int, base: int) -> FrameDecoder | None:
    """The documented resynchronisation: the first magic after ``after`` whose frame verifies."""
    pos = data.find(FRAME_MAGIC, after + 1)
    while pos != -1:
        if isinstance(read_frame(data, pos, DEFAULT_MAX_RECORD_BYTES), FramedRecord):
            decoder = FrameDecoder(offset=base + pos)
            decoder.feed(data[pos:])
            return decoder
        pos = data.find(FRAME_MAGIC, pos + 1)
    return None


def test_resynchronising_after_damage_skips_a_false_magic_inside_a_payload() -> None:
    # Frame 2 carries the frame magic inside binary payload data; damage to its length makes
    # the scan start inside it. The false magic there fails its checksum and is skipped.
    env2 = envelope(VARIANTS[6], seq=2)
    frames = [
        frame_of(envelope(VARIANTS[0], seq=1)),
        frame_of(env2),
        frame_of(envelope(VARIANTS[3], seq=3)),
    ]
    stream = b"".join(frames)
    start2 = len(frames[0])
    assert stream.find(FRAME_MAGIC, start2 + 1) < start2 + len(frames[1])  # the false magic
    damaged = bytearray(stream)
    damaged[start2 + 12] ^= 0x01  # length field of frame 2
    base = SEGMENT_HEADER_SIZE
    decoder = FrameDecoder(offset=base)
    decoder.feed(bytes(damaged))
    assert [r.seq for r in decoder] == [1]
    bad = decoder.next_event()
    assert isinstance(bad, FrameCorruption)
    assert bad.offset == base + start2
    again = resync(bytes(damaged), bad.offset - base, base)
    assert again is not None
    rest = list(again)
    assert [(r.seq, r.offset) for r in rest] == [(3, base + start2 + len(frames[1]))]
    assert again.next_event() is NEED_DATA


def test_frame_decoder_compacts_its_buffer_without_losing_offsets() -> None:
    stream, frames = stream_of(20)
    decoder = FrameDecoder()
    seqs = []
    for i in range(0, len(stream), 37):
        decoder.feed(stream[i : i + 37])
        seqs.extend(r.seq for r in decoder)
        assert decoder.buffered < max(map(len, frames))
        assert decoder.offset + decoder.buffered == min(i + 37, len(stream))
    assert seqs == list(range(1, 21))
    assert decoder.offset == len(stream)


# --- index ------------------------------------------------------------------------------


def index_bytes(*entries: tuple[int, int]) -> bytes:
    return b"".join(encode_index_entry(s, o) for s, o in entries)


def test_index_entries_round_trip() -> None:
    entries = [(1, 48), (40, 4200), (90, 9000)]
    data = index_bytes(*entries)
    assert len(data) == 3 * INDEX_ENTRY_SIZE
    assert data[:16] == struct.pack("<QQ", 1, 48)
    assert decode_index(data, 1, 10_000) == ([1, 40, 90], [48, 4200, 9000], len(data))
    assert decode_index(memoryview(data), 1, 10_000)[2] == len(data)


def test_empty_index_is_valid() -> None:
    assert decode_index(b"", 1, 48) == ([], [], 0)


def test_decode_index_stops_at_a_torn_trailing_entry() -> None:
    data = index_bytes((1, 48), (5, 500))
    for cut in range(1, INDEX_ENTRY_SIZE):
        assert decode_index(data[:-cut], 1, 1000) == ([1], [48], INDEX_ENTRY_SIZE)


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ((5, 600), "equal seq"),
        ((4, 600), "decreasing seq"),
        ((6, 500), "equal offset"),
        ((6, 499), "decreasing offset"),
        ((6, 1000 - FRAME_HEADER_SIZE + 1), "frame header would run past the segment"),
        ((6, 2**64 - 1), "offset far past the segment"),
    ],
)
def test_decode_index_stops_at_a_non_increasing_or_out_of_range_entry(
    bad: tuple[int, int], why: str
) -> None:
    data = index_bytes((1, 48), (5, 500), bad, (9, 900))
    assert decode_index(data, 1, 1000) == ([1, 5], [48, 500], 2 * INDEX_ENTRY_SIZE), why


def test_decode_index_accepts_a_last_entry_whose_frame_header_just_fits() -> None:
    data = index_bytes((1, 48), (6, 1000 - FRAME_HEADER_SIZE))
    assert decode_index(data, 1, 1000)[0] == [1, 6]


def test_decode_index_refuses_a_first_entry_before_the_base_seq_or_inside_the_header() -> None:
    assert decode_index(index_bytes((9, 48)), 10, 1000) == ([], [], 0)
    assert decode_index(index_bytes((10, SEGMENT_HEADER_SIZE - 1)), 10, 1000) == ([], [], 0)
    assert decode_index(index_bytes((10, SEGMENT_HEADER_SIZE)), 10, 1000)[0] == [10]


# --- envelopes and NEED_DATA ------------------------------------------------------------


def test_need_data_is_a_singleton() -> None:
    assert NeedData() is NEED_DATA
    assert repr(NEED_DATA) == "NEED_DATA"


def test_envelope_codec_reads_run_and_session_ids() -> None:
    assert CODEC.run_id_of(VARIANTS[1]) == RUN
    assert CODEC.session_of(VARIANTS[0]) == SESSION
    assert CODEC.session_of(VARIANTS[1]) is None


def test_envelope_codec_refuses_a_foreign_object_and_a_bad_run_id() -> None:
    with pytest.raises(InvalidEventError, match="cannot append dict"):
        CODEC.run_id_of({"run_id": RUN})
    with pytest.raises(InvalidEventError, match=r"run_id must be a uuid\.UUID, got str"):
        CODEC.run_id_of(TextDelta(run_id=str(RUN), delta="x"))  # type: ignore[arg-type]


def test_envelope_codec_check_accepts_every_variant() -> None:
    for i, event in enumerate(VARIANTS):
        CODEC.check(envelope(event, seq=i + 1))


def test_envelope_codec_check_refuses_a_field_of_the_wrong_type() -> None:
    event = ContextBuilt(run_id=RUN, timestamp=WHEN, message_count="3")  # type: ignore[arg-type]
    with pytest.raises(InvalidEventError, match="ContextBuilt has a field of the wrong type"):
        CODEC.check(envelope(event))


def test_envelope_codec_check_refuses_a_value_that_does_not_round_trip() -> None:
    event = ToolCallCompleted(
        run_id=RUN, timestamp=WHEN, call=ToolCall(id="c", name="n", arguments={"s": (1, 2)})
    )
    with pytest.raises(InvalidEventError, match="does not survive encoding unchanged"):
        CODEC.check(envelope(event))


def test_envelope_codec_check_refuses_an_unencodable_value() -> None:
    event = TextDelta(run_id=RUN, timestamp=WHEN, delta=object())  # type: ignore[arg-type]
    with pytest.raises(InvalidEventError, match="could not be encoded"):
        CODEC.check(envelope(event))


def test_envelope_codec_decodes_many_in_order() -> None:
    envs = [envelope(v, seq=i + 1) for i, v in enumerate(VARIANTS)]
    page = new_page()
    for e in envs:
        page += frame_of(e)[FRAME_HEADER_SIZE:]
    assert CODEC.decode_page(page, len(envs)) == envs


def test_envelope_codec_raises_schema_mismatch_on_a_payload_of_another_shape() -> None:
    with pytest.raises(SchemaMismatchError):
        CODEC.decode(b"\x86\xa8event_id\xc0")


def test_envelope_codec_raises_decode_error_on_malformed_msgpack() -> None:
    with pytest.raises(msgspec.DecodeError):
        CODEC.decode(b"\x86\xa8event")


def test_event_classes_refuses_a_type_without_run_id_or_not_a_struct() -> None:
    class NoRun(msgspec.Struct):
        x: int

    with pytest.raises(TypeError, match="no run_id"):
        event_classes(NoRun)
    with pytest.raises(TypeError, match="msgspec Struct"):
        event_classes(int)
    assert len(event_classes(AgentEvent)) == 18


# --- file names and resynchronisation ----------------------------------------------------


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


def test_find_frames_after_resynchronises_past_damage() -> None:
    buf, offsets = seg_frames(range(1, 11))
    damaged = bytearray(buf)
    damaged[offsets[3] + 13] ^= 0xFF  # the length field of seq 4: the scan cannot step over it
    found = find_frames_after(bytes(damaged), H, H + offsets[3] - 1, 1, MAX)
    assert [f.seq for f in found] == list(range(5, 11))
    assert [f.offset for f in found] == [H + o for o in offsets[4:]]
    assert all(f.payload == b"" for f in found)
    assert found[-1].end == H + len(buf)


def test_find_frames_after_starts_strictly_after_the_offset() -> None:
    buf, offsets = seg_frames(range(1, 6))
    found = find_frames_after(buf, 0, offsets[1], 1, MAX)
    assert [f.seq for f in found] == [3, 4, 5]
    found = find_frames_after(buf, 0, offsets[1] - 1, 1, MAX)
    assert [f.seq for f in found] == [2, 3, 4, 5]
    found = find_frames_after(buf, 0, -1, 1, MAX)
    assert [f.seq for f in found] == [1, 2, 3, 4, 5]


def test_find_frames_after_ignores_frames_below_min_seq() -> None:
    buf, _ = seg_frames([1, 2, 3, 1, 2, 7, 8])
    found = find_frames_after(buf, 0, -1, 3, MAX)
    assert [f.seq for f in found] == [3, 7, 8]


def test_find_frames_after_finds_nothing_in_garbage() -> None:
    assert find_frames_after(b"\xc1SLF" + bytes(60), 0, -1, 1, MAX) == []
    assert find_frames_after(b"", 0, -1, 1, MAX) == []


def test_find_frames_after_keeps_the_durable_mark() -> None:
    buf = bytearray()
    enc = FrameEncoder(MAX)
    enc.encode(buf, seg_envelope(1), 1234)
    found = find_frames_after(bytes(buf), 0, -1, 1, MAX)
    assert [(f.seq, f.durable, f.continued) for f in found] == [(1, 1234, False)]


def test_a_batch_is_checked_in_one_decode_and_a_bad_event_is_still_named() -> None:
    good = [envelope(VARIANTS[0], seq=1), envelope(VARIANTS[1], seq=2)]
    page = new_page()
    for env in good:
        page += frame_of(env)[FRAME_HEADER_SIZE:]
    CODEC.check_page(page, good)
    bad = TextDelta(run_id=RUN, delta=123)  # type: ignore[arg-type]  # an int where str goes
    envs = [good[0], envelope(bad, seq=2)]
    page = new_page()
    for env in envs:
        page += frame_of(env)[FRAME_HEADER_SIZE:]
    with pytest.raises(InvalidEventError, match="TextDelta has a field of the wrong type"):
        CODEC.check_page(page, envs)
