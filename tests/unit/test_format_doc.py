"""FORMAT.md is normative: its constants, field tables and worked example must match format.py.

The document is parsed, not copied: each test reads a table or a fenced block out of
FORMAT.md and checks it against format.py, so editing either side alone fails here.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import msgspec
import pytest
import xxhash

from segmentlog import format as codec
from segmentlog.events import AgentEvent, Envelope
from segmentlog.format import (
    FORMAT_VERSION,
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    NEED_DATA,
    SEGMENT_HEADER_SIZE,
    FramedRecord,
    SegmentHeader,
    decode_index,
    decode_segment_header,
    encode_index_entry,
    encode_segment_header,
)
from segmentlog.frames import (
    FrameEncoder,
    read_frame,
)
from segmentlog.schema import EnvelopeCodec

DOC_PATH = Path(codec.__file__).with_name("FORMAT.md")
DOC = DOC_PATH.read_text(encoding="utf-8")


# --- reading the document ---------------------------------------------------------------


def section(title: str) -> str:
    """The text under the heading containing ``title``, up to the next heading of its level."""
    lines = DOC.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^(#+)\s+(.*)$", line)
        if match and title in match.group(2):
            level = len(match.group(1))
            body = []
            for later in lines[i + 1 :]:
                heading = re.match(r"^(#+)\s", later)
                if heading and len(heading.group(1)) <= level:
                    break
                body.append(later)
            return "\n".join(body)
    raise AssertionError(f"FORMAT.md has no heading containing {title!r}")


def tables(text: str) -> list[list[list[str]]]:
    """Every markdown table in ``text``: rows of cells, header row first, separator dropped."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def table_rows(text: str, first_header: str) -> list[dict[str, str]]:
    """The rows of the table in ``text`` whose first column is headed ``first_header``."""
    for table in tables(text):
        if table[0][0] == first_header:
            return [dict(zip(table[0], row, strict=True)) for row in table[1:]]
    raise AssertionError(f"no table headed {first_header!r}")


def fenced(text: str, info: str) -> list[str]:
    """The contents of every fenced block in ``text`` opened with ```` ```info ````."""
    return re.findall(rf"^```{re.escape(info)}\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)


def code(cell: str) -> str:
    """A table cell's text without its backticks."""
    return cell.strip().strip("`")


def hexdump_bytes(block: str) -> bytes:
    """Parse a ``hexdump -C`` style block, checking its offsets and its ASCII column."""
    data = bytearray()
    for line in block.splitlines():
        hex_part, _, ascii_part = line.partition("|")
        fields = hex_part.split()
        assert int(fields[0], 16) == len(data), f"offset column wrong in {line!r}"
        chunk = bytes.fromhex("".join(fields[1:]))
        assert 0 < len(chunk) <= 16
        printable = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        assert ascii_part == printable + "|", f"ASCII column wrong in {line!r}"
        data += chunk
    return bytes(data)


def struct_layout(fmt: str) -> list[tuple[int, int, str]]:
    """(offset, width, type name) of every field of a little-endian struct format."""
    assert fmt.startswith("<")
    layout = []
    offset = 0
    for count, char in re.findall(r"(\d*)([a-zA-Z])", fmt[1:]):
        width = struct.calcsize("<" + count + char)
        name = {"H": "u16", "I": "u32", "Q": "u64"}.get(char, f"bytes[{count}]")
        assert char in "HIQs", f"unexpected struct code {char}"
        layout.append((offset, width, name))
        offset += width
    return layout


def field_layout(rows: list[dict[str, str]]) -> list[tuple[int, int, str]]:
    return [(int(r["Offset"]), int(r["Width"]), r["Type"]) for r in rows]


EXAMPLE = section("Worked example")
EXAMPLE_ENVELOPES: list[Envelope[Any]] = [
    msgspec.json.decode(text, type=Envelope[AgentEvent]) for text in fenced(EXAMPLE, "json")
]
EXAMPLE_PARTS = table_rows(EXAMPLE, "Part")
EXAMPLE_FRAMES = [row for row in EXAMPLE_PARTS if row["Part"] == "frame"]
SEGMENT_DUMP, INDEX_DUMP = fenced(EXAMPLE, "hexdump")
SEGMENT_BYTES = hexdump_bytes(SEGMENT_DUMP)


# --- constants and layouts --------------------------------------------------------------


CONSTANT_ROWS = table_rows(section("Constants"), "Name")


@pytest.mark.parametrize("row", CONSTANT_ROWS, ids=[code(r["Name"]) for r in CONSTANT_ROWS])
def test_every_documented_constant_equals_the_codecs(row: dict[str, str]) -> None:
    name, text = code(row["Name"]), code(row["Value"])
    actual = getattr(codec, name)
    if isinstance(actual, bytes):
        assert bytes.fromhex(text) == actual
    elif isinstance(actual, struct.Struct):
        assert text == actual.format
    elif isinstance(actual, str):
        assert text == actual
    else:
        assert isinstance(actual, int)
        assert int(text, 0) == actual


def test_every_public_codec_constant_is_documented() -> None:
    documented = {code(r["Name"]) for r in CONSTANT_ROWS}
    not_constants = ("NEED_DATA", "ZERO_FILL", "NATIVE")
    public = {name for name in codec.__all__ if name.isupper() and name not in not_constants}
    assert public <= documented, f"undocumented: {sorted(public - documented)}"


def test_segment_header_table_matches_the_struct_and_its_checksum() -> None:
    rows = table_rows(section("Segment header"), "Offset")
    layout = struct_layout(codec.SEGMENT_HEADER.format + codec.SEGMENT_CHECKSUM.format[1:])
    assert field_layout(rows) == layout
    assert [r["Field"] for r in rows][-1] == "checksum"
    assert int(rows[-1]["Offset"]) == codec.SEGMENT_HEADER.size
    assert sum(int(r["Width"]) for r in rows) == SEGMENT_HEADER_SIZE
    assert "`89 53 47 4c 4f 47 0d 0a`" in rows[0]["Meaning"]


def test_frame_header_table_matches_the_struct_and_the_checksum_start() -> None:
    rows = table_rows(section("Frames"), "Offset")
    header_rows, payload_row = rows[:-1], rows[-1]
    assert field_layout(header_rows) == struct_layout(FRAME_HEADER.format)
    fields = {r["Field"]: int(r["Offset"]) for r in header_rows}
    assert fields["length"] == codec.FRAME_CHECKSUM_START
    assert payload_row["Field"] == "payload"
    assert payload_row["Width"] == "length"
    assert int(payload_row["Offset"]) == FRAME_HEADER_SIZE
    assert "`c1 53 4c 46`" in rows[0]["Meaning"]
    durable = next(r for r in header_rows if r["Field"] == "durable")
    assert "Bits 0-30" in durable["Meaning"]
    assert "bit 31 (`FRAME_CONTINUED`)" in durable["Meaning"]
    assert codec.FRAME_CONTINUED == 1 << 31
    assert codec.MAX_SEGMENT_OFFSET == (1 << 31) - 1


def test_state_record_table_matches_the_struct_and_its_checksum() -> None:
    rows = table_rows(section("state record"), "Offset")
    layout = struct_layout(codec.STATE_RECORD.format + codec.STATE_CHECKSUM.format[1:])
    assert field_layout(rows) == layout
    assert [r["Field"] for r in rows][-1] == "checksum"
    assert sum(int(r["Width"]) for r in rows) == codec.STATE_RECORD_SIZE
    assert f"bytes `[0, {codec.STATE_RECORD.size})`" in rows[-1]["Meaning"]
    assert "`53 4c 53 54`" in rows[0]["Meaning"]
    flags = next(r for r in rows if r["Field"] == "flags")["Meaning"]
    assert f"`STATE_DELETED` ({codec.STATE_DELETED})" in flags
    assert f"`STATE_FRAMES_ACKED` ({codec.STATE_FRAMES_ACKED})" in flags
    text = " ".join(section("state record").split())
    assert f"a {codec.STATE_FILE_SIZE}-byte file" in text
    assert f"a busy byte at offset {codec.STATE_BUSY_AT}" in text


def test_index_entry_table_matches_the_struct() -> None:
    rows = table_rows(section("Index files"), "Offset")
    assert field_layout(rows) == struct_layout(codec.INDEX_ENTRY.format)
    assert [r["Field"] for r in rows] == ["seq", "offset"]


def test_documented_checksum_coverage_matches_the_codec() -> None:
    text = " ".join(section("Byte order").split())
    assert f"checksum covers header bytes `[0, {codec.SEGMENT_HEADER.size})`" in text
    start = codec.FRAME_CHECKSUM_START
    assert (
        f"`[{start}, {FRAME_HEADER_SIZE} + length)`: length, seq, durable mark and payload" in text
    )


def test_marker_file_json_names_the_current_format_version() -> None:
    rows = table_rows(section("Directory layout"), "Path")
    marker = next(r for r in rows if code(r["Path"]) == "SEGMENTLOG")
    match = re.search(r"`(\{.*\})`", marker["What it is"])
    assert match is not None
    assert json.loads(match.group(1)) == {"format": "segmentlog", "version": FORMAT_VERSION}


def test_segment_names_in_the_doc_are_twenty_digit_base_seqs() -> None:
    names = re.findall(r"\b(\d+)\.(?:seg|idx)\b", DOC)
    assert names, "the doc shows no example file names"
    assert all(len(name) == 20 == len(str(2**64 - 1)) for name in names)
    assert f"{1:020d}.seg" in DOC


# --- the worked example -----------------------------------------------------------------


def test_example_envelopes_parse_into_the_two_documented_events() -> None:
    assert [env.seq for env in EXAMPLE_ENVELOPES] == [1, 2]
    assert [type(env.event).__name__ for env in EXAMPLE_ENVELOPES] == ["RunStarted", "TextDelta"]
    run_id = EXAMPLE_ENVELOPES[0].run_id
    assert f"runs/{run_id}/{1:020d}.seg" in EXAMPLE


def test_example_byte_counts_add_up() -> None:
    match = re.search(r"The segment is (\d+) bytes", EXAMPLE)
    assert match is not None
    assert int(match.group(1)) == len(SEGMENT_BYTES)
    assert sum(int(r["Size"]) for r in EXAMPLE_PARTS) == len(SEGMENT_BYTES)
    position = 0
    for row in EXAMPLE_PARTS:
        assert int(row["Offset"]) == position
        position += int(row["Size"])
    for row in EXAMPLE_FRAMES:
        assert int(row["Size"]) == FRAME_HEADER_SIZE + int(row["length"])


def test_encoding_the_example_envelopes_gives_exactly_the_documented_bytes() -> None:
    first = EXAMPLE_ENVELOPES[0]
    buf = bytearray(encode_segment_header(first.run_id, first.seq))
    encoder = FrameEncoder()
    for env, row in zip(EXAMPLE_ENVELOPES, EXAMPLE_FRAMES, strict=True):
        assert len(buf) == int(row["Offset"])
        size = encoder.encode(buf, env, int(row["durable"]))
        assert size == int(row["Size"])
    assert bytes(buf).hex(" ") == SEGMENT_BYTES.hex(" ")


def test_decoding_the_documented_bytes_gives_the_example_back() -> None:
    first = EXAMPLE_ENVELOPES[0]
    assert decode_segment_header(SEGMENT_BYTES) == SegmentHeader(
        FORMAT_VERSION, first.run_id, first.seq
    )
    envelope_codec: EnvelopeCodec[AgentEvent] = EnvelopeCodec()
    pos = SEGMENT_HEADER_SIZE
    for env, row in zip(EXAMPLE_ENVELOPES, EXAMPLE_FRAMES, strict=True):
        record = read_frame(SEGMENT_BYTES, pos, codec.DEFAULT_MAX_RECORD_BYTES)
        assert isinstance(record, FramedRecord)
        assert (record.offset, record.seq, record.durable, len(record.payload)) == (
            int(row["Offset"]),
            int(row["seq"]),
            int(row["durable"]),
            int(row["length"]),
        )
        assert not record.continued
        assert envelope_codec.decode(record.payload) == env
        pos = record.end
    assert pos == len(SEGMENT_BYTES)
    assert read_frame(SEGMENT_BYTES, pos, codec.DEFAULT_MAX_RECORD_BYTES) is NEED_DATA


def test_example_checksums_are_the_xxh3_of_the_documented_coverage() -> None:
    header_row = EXAMPLE_PARTS[0]
    assert header_row["Part"] == "header"
    stored = codec.SEGMENT_CHECKSUM.unpack_from(SEGMENT_BYTES, codec.SEGMENT_HEADER.size)[0]
    assert stored == int(code(header_row["checksum"]), 16)
    assert stored == xxhash.xxh3_64_intdigest(SEGMENT_BYTES[:40])
    for row in EXAMPLE_FRAMES:
        offset, end = int(row["Offset"]), int(row["Offset"]) + int(row["Size"])
        _magic, checksum, *_ = FRAME_HEADER.unpack_from(SEGMENT_BYTES, offset)
        assert checksum == int(code(row["checksum"]), 16)
        assert checksum == xxhash.xxh3_64_intdigest(SEGMENT_BYTES[offset + 12 : end])


def test_example_payload_breakdown_spells_out_the_second_frames_payload() -> None:
    rows = table_rows(EXAMPLE, "Bytes")
    spelled = bytes.fromhex("".join(code(r["Bytes"]) for r in rows))
    last = EXAMPLE_FRAMES[-1]
    start = int(last["Offset"]) + FRAME_HEADER_SIZE
    assert spelled == SEGMENT_BYTES[start : start + int(last["length"])]


def test_example_payload_breakdown_values_match_the_envelope() -> None:
    rows = {code(r["Bytes"]): r["Meaning"] for r in table_rows(EXAMPLE, "Bytes")}
    env = EXAMPLE_ENVELOPES[-1]
    assert rows["c4 10 " + env.event_id.bytes.hex(" ")].endswith("the event id")
    assert rows["c4 10 " + env.run_id.bytes.hex(" ")].endswith("the run id")
    assert env.session_id is not None
    assert rows["c4 10 " + env.session_id.bytes.hex(" ")].endswith("the session id")
    seconds = int(env.event.timestamp.timestamp())
    assert rows["d6 ff " + struct.pack(">I", seconds).hex(" ")].startswith(
        f"timestamp 32 (fixext 4, type -1): {seconds} s"
    )
    emitted = env.emitted_at
    value = emitted.microsecond * 1000 << 34 | int(emitted.timestamp())
    assert f"{emitted.microsecond * 1000} ns" in rows["d7 ff " + struct.pack(">Q", value).hex(" ")]


def test_example_index_holds_the_first_frame_an_interval_past_the_header() -> None:
    text = " ".join(EXAMPLE.split())
    match = re.search(
        r"`index_interval_bytes=(\d+)` it holds one entry, seq (\d+) at offset (\d+)", text
    )
    assert match is not None
    interval, seq, offset = (int(g) for g in match.groups())
    due = [
        (int(r["seq"]), int(r["Offset"]))
        for r in EXAMPLE_FRAMES
        if int(r["Offset"]) - SEGMENT_HEADER_SIZE >= interval
    ]
    assert due[0] == (seq, offset)
    assert all(int(r["Offset"]) - SEGMENT_HEADER_SIZE < 4096 for r in EXAMPLE_FRAMES)
    data = hexdump_bytes(INDEX_DUMP)
    assert data == encode_index_entry(seq, offset)
    assert decode_index(data, 1, len(SEGMENT_BYTES)) == ([seq], [offset], len(data))
