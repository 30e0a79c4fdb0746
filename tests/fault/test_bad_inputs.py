"""Bad inputs get a typed error whose message says what to do, and nothing is written.

"Nothing is written" is checked on the whole FaultFS tree: every path and its bytes are the
same before and after the rejected call, and a rejected append does not use up a seq.
"""

from __future__ import annotations

import json
import logging
import struct
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
import xxhash

import segmentlog
from segmentlog import (
    CorruptionError,
    FormatVersionError,
    InvalidEventError,
    NotASegmentLogError,
    RecordTooLargeError,
    SegmentLogError,
    TextDelta,
)
from segmentlog.format import (
    FORMAT_VERSION,
    FRAME_CHECKSUM_START,
    SEGMENT_HEADER_SIZE,
    encode_segment_header,
)

from .faultfs import FaultFS
from .model import LOG_DIR, event, frames_of, fresh_fs, open_log, read_run, segment_files

RUN = uuid.UUID("0190a8c4-1e00-7000-8000-0000000bad01")


@pytest.fixture(autouse=True)
def _quiet_recovery_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="segmentlog")


def _tree(fs: FaultFS) -> dict[str, bytes]:
    return {p: fs.read_bytes(p) for p in fs.walk_files()}


def _dirs(fs: FaultFS, top: str = "/") -> list[str]:
    out = []
    for name in fs.listdir(top):
        path = f"{top.rstrip('/')}/{name}"
        if fs.is_dir(path):
            out.append(path)
            out.extend(_dirs(fs, path))
    return sorted(out)


@pytest.fixture
def live() -> tuple[FaultFS, Any]:
    fs = fresh_fs()
    log = open_log(fs, fsync="always", max_record_bytes=1024)
    log.append(event(RUN, 1))
    return fs, log


def _assert_rejected_without_writing(
    fs: FaultFS, log: Any, call: Any, error: type[Exception], *hints: str
) -> None:
    before = _tree(fs), _dirs(fs)
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert isinstance(info.value, SegmentLogError)
    for hint in hints:
        assert hint in message, f"message should mention {hint!r}: {message}"
    assert (_tree(fs), _dirs(fs)) == before, "a rejected call changed the files"
    assert log.append(event(RUN, 2)).seq == 2, "the rejected call used up a seq"


class NotAnEvent(msgspec.Struct):
    run_id: uuid.UUID


@pytest.mark.parametrize(
    "bad",
    [
        "a string",
        {"type": "TextDelta", "run_id": str(RUN), "delta": "x"},
        NotAnEvent(run_id=RUN),
        None,
    ],
    ids=["str", "dict", "foreign-struct", "none"],
)
def test_non_event_object_is_refused(live: tuple[FaultFS, Any], bad: object) -> None:
    fs, log = live
    _assert_rejected_without_writing(
        fs, log, lambda: log.append(bad), InvalidEventError, "TextDelta"
    )
    assert isinstance(InvalidEventError("x"), TypeError)


@pytest.mark.parametrize("run_id", [None, str(RUN), RUN.int], ids=["none", "str", "int"])
def test_event_without_a_uuid_run_id_is_refused(live: tuple[FaultFS, Any], run_id: Any) -> None:
    fs, log = live
    bad = TextDelta(run_id=run_id, delta="x")  # msgspec does not validate on construction
    _assert_rejected_without_writing(fs, log, lambda: log.append(bad), InvalidEventError, "run_id")


def test_event_larger_than_max_record_bytes_is_refused(live: tuple[FaultFS, Any]) -> None:
    fs, log = live
    big = TextDelta(run_id=RUN, delta="x" * 2000)
    _assert_rejected_without_writing(
        fs, log, lambda: log.append(big), RecordTooLargeError, "max_record_bytes"
    )
    assert isinstance(RecordTooLargeError("x"), ValueError)


def test_batch_with_one_bad_event_writes_nothing(live: tuple[FaultFS, Any]) -> None:
    fs, log = live
    other = uuid.UUID(int=RUN.int + 1)
    batch = [event(other, 1), event(RUN, 2), TextDelta(run_id=RUN, delta="x" * 2000)]
    _assert_rejected_without_writing(
        fs, log, lambda: log.append_batch(batch), RecordTooLargeError, "max_record_bytes"
    )
    assert read_run(log, other) == []


def test_batch_with_a_non_event_writes_nothing(live: tuple[FaultFS, Any]) -> None:
    fs, log = live
    batch = [event(RUN, 2), "not an event"]
    _assert_rejected_without_writing(
        fs, log, lambda: log.append_batch(batch), InvalidEventError, "TextDelta"
    )


# --- directories ------------------------------------------------------------------------------


def test_foreign_directory_is_refused_and_left_alone() -> None:
    fs = fresh_fs()
    fs.write_durable(f"{LOG_DIR}/notes.txt", b"my notes")
    before = _tree(fs), _dirs(fs)
    with pytest.raises(NotASegmentLogError) as info:
        open_log(fs)
    assert LOG_DIR in str(info.value) and "choose another path" in str(info.value)
    assert (_tree(fs), _dirs(fs)) == before


def test_path_that_is_a_file_is_refused() -> None:
    fs = fresh_fs()
    fs.write_durable(LOG_DIR, b"a file")
    before = _tree(fs)
    with pytest.raises(NotASegmentLogError, match="choose another path"):
        open_log(fs)
    assert _tree(fs) == before


def test_foreign_directory_on_the_real_file_system(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(NotASegmentLogError):
        segmentlog.open(tmp_path)  # type: ignore[attr-defined]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv"]


@pytest.mark.parametrize("marker", [b"not json", b'{"format": "other", "version": 1}', b"{}"])
def test_damaged_or_foreign_marker_is_refused(marker: bytes) -> None:
    fs = fresh_fs()
    open_log(fs).close()
    fs.set_bytes(f"{LOG_DIR}/SEGMENTLOG", marker)
    before = _tree(fs)
    with pytest.raises(NotASegmentLogError):
        open_log(fs)
    assert _tree(fs) == before


def test_directory_of_a_newer_format_version_is_refused() -> None:
    fs = fresh_fs()
    log = open_log(fs)
    log.append(event(RUN, 1))
    log.close()
    marker = json.dumps({"format": "segmentlog", "version": FORMAT_VERSION + 1}).encode()
    fs.set_bytes(f"{LOG_DIR}/SEGMENTLOG", marker)
    before = _tree(fs), _dirs(fs)
    with pytest.raises(FormatVersionError) as info:
        open_log(fs)
    assert "Upgrade segmentlog" in str(info.value)
    assert str(FORMAT_VERSION + 1) in str(info.value)
    with pytest.raises(FormatVersionError):
        open_log(fs, read_only=True)
    assert (_tree(fs), _dirs(fs)) == before


def test_segment_of_a_newer_format_version_is_refused_untouched() -> None:
    fs = fresh_fs()
    log = open_log(fs)
    log.append(event(RUN, 1))
    log.close()
    (seg,) = segment_files(fs, RUN)
    data = bytearray(fs.read_bytes(seg))
    header = bytearray(encode_segment_header(RUN, 1))
    struct.pack_into("<H", header, 8, FORMAT_VERSION + 1)
    struct.pack_into("<Q", header, 40, xxhash.xxh3_64_intdigest(bytes(header[:40])))
    data[:SEGMENT_HEADER_SIZE] = header
    fs.set_bytes(seg, bytes(data))
    before = _tree(fs)
    log = open_log(fs, recovery="salvage")
    with pytest.raises(FormatVersionError, match="Upgrade segmentlog"):
        read_run(log, RUN)
    log.close()
    assert _tree(fs) == before, "a segment of a newer format must never be repaired away"


# --- a length field that claims 4 GiB ---------------------------------------------------------


def _claim_4gib(fs: FaultFS, which: int) -> tuple[str, int, int]:
    """Set the length field of frame ``which`` of RUN's only segment to 0xFFFFFFFF."""
    (seg,) = segment_files(fs, RUN)
    data = bytearray(fs.read_bytes(seg))
    frame = frames_of(bytes(data))[which]
    struct.pack_into("<I", data, frame.offset + FRAME_CHECKSUM_START, 0xFFFF_FFFF)
    fs.set_bytes(seg, bytes(data))
    return seg, frame.offset, frame.seq


@pytest.mark.parametrize("mode", ["strict", "tolerate_tail"])
def test_length_field_claiming_4_gib_is_corruption_not_an_allocation(mode: str) -> None:
    fs = fresh_fs()
    log = open_log(fs, fsync="always", segment_bytes=1 << 20)
    envs = [log.append(event(RUN, n, 100)) for n in range(8)]
    log.close()
    seg, offset, seq = _claim_4gib(fs, 3)
    before = _tree(fs)
    fs.reset_counters()
    tracemalloc.start()
    try:
        log = open_log(fs, recovery=mode)
        with pytest.raises(CorruptionError) as info:
            read_run(log, RUN)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    err = info.value
    assert (err.path, err.offset, err.first_seq) == (seg, offset, seq)
    assert "salvage" in str(err) and "verify" in str(err)
    assert peak < 64 << 20, f"reading a 4 GiB length allocated {peak} bytes"
    assert fs.largest_read < 64 << 20, f"asked the file system for {fs.largest_read} bytes"
    assert _tree(fs) == before
    log.close()
    salvaged = open_log(fs, recovery="salvage")
    assert [e.event_id for e in read_run(salvaged, RUN)] == [e.event_id for e in envs[:3]]
    salvaged.close()


def test_length_field_claiming_4_gib_in_the_last_frame_is_refused_by_strict() -> None:
    fs = fresh_fs()
    log = open_log(fs, fsync="always")
    for n in range(4):
        log.append(event(RUN, n))
    log.close()
    seg, offset, seq = _claim_4gib(fs, -1)
    before = _tree(fs)
    log = open_log(fs, recovery="strict")
    with pytest.raises(CorruptionError) as info:
        read_run(log, RUN)
    assert (info.value.path, info.value.offset, info.value.first_seq) == (seg, offset, seq)
    assert _tree(fs) == before
