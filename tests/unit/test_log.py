"""Unit tests of ``segmentlog.log``: the SegmentLog engine through its public API.

Strategy
- Each test opens a log in its own directory and states one scenario in its name. File
  system effects are checked on the real directory (segment names, headers, index files,
  descriptors in ``/proc/self/fd``) or through ``FileSystem`` subclasses that record what the
  engine touched and how many bytes it read.
- Crashes, torn writes and injected I/O errors belong to ``tests/fault/``; here every file is
  whole unless a test damages a cache file (the ``.idx``) on purpose.
- The scale tests build their data cheaply: the 100 000-run directory is written straight
  to disk with the codec, and so is the million-event run (frames built from one encoded
  template, checked byte for byte against ``FrameEncoder``). Both live on a RAM file system
  when one is available, because creating and removing 100 000 directories on a disk-backed
  file system takes minutes here.
- No assertion depends on wall-clock time: background work is awaited with a bounded loop.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest
import xxhash

import segmentlog
from segmentlog import (
    AgentEvent,
    Envelope,
    FormatVersionError,
    InvalidEventError,
    LockedError,
    LogClosedError,
    LogOptions,
    NotASegmentLogError,
    NotFoundError,
    ReadOnlyError,
    RecordTooLargeError,
    RunCompleted,
    RunStarted,
    SegmentLog,
    TextDelta,
)
from segmentlog._fs import FileSystem
from segmentlog.format import (
    FORMAT_VERSION,
    FRAME_MAGIC,
    SEGMENT_HEADER_SIZE,
    SegmentHeader,
    decode_index,
    decode_segment_header,
    encode_segment_header,
    index_name,
    segment_name,
)
from segmentlog.frames import (
    FrameEncoder,
)
from segmentlog.index import SparseIndex
from segmentlog.options import FsyncPolicy, RecoveryMode

WAIT = 20.0  # upper bound for background work; never a timing assertion
TS = datetime(2025, 1, 1, tzinfo=UTC)
SMALL = {"segment_bytes": 4096, "index_interval_bytes": 128}


def delta(run_id: uuid.UUID, text: str = "x") -> TextDelta:
    return TextDelta(run_id=run_id, delta=text)


def started(run_id: uuid.UUID, session_id: uuid.UUID) -> RunStarted:
    return RunStarted(run_id=run_id, session_id=session_id, provider="acme", model="m-1")


def completed(run_id: uuid.UUID) -> RunCompleted:
    return RunCompleted(run_id=run_id, finish_reason="stop", iterations=1)


def read_all(log: SegmentLog[Any], run_id: uuid.UUID) -> list[Envelope[Any]]:
    out: list[Envelope[Any]] = []
    while True:
        page = log.list_after(run_id, out[-1].seq if out else None, 1000)
        if not page:
            return out
        out.extend(page)


def run_dir(path: Path, run_id: uuid.UUID) -> Path:
    return path / "runs" / str(run_id)


def segment_files(path: Path, run_id: uuid.UUID) -> list[Path]:
    return sorted(run_dir(path, run_id).glob("*.seg"))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "log"


SHM = Path("/dev/shm")
HAVE_RAM_FS = SHM.is_dir() and os.access(SHM, os.W_OK)


@pytest.fixture
def ram_dir(tmp_path: Path) -> Iterator[Path]:
    """A scratch directory on a RAM file system when there is one (else ``tmp_path``)."""
    if HAVE_RAM_FS:
        made = Path(tempfile.mkdtemp(prefix="segmentlog-test-", dir=SHM))
        try:
            yield made
        finally:
            shutil.rmtree(made, ignore_errors=True)
    else:
        yield tmp_path


# --- options ----------------------------------------------------------------------------


#: The defaults ``segmentlog.open`` documents (README / LogOptions).
DOCUMENTED_DEFAULTS: dict[str, Any] = {
    "fsync": FsyncPolicy.BATCH,
    "fsync_interval_ms": 1000,
    "segment_bytes": 64 * 1024 * 1024,
    "index_interval_bytes": 4096,
    "max_record_bytes": 8 * 1024 * 1024,
    "max_open_files": 256,
    "recovery": RecoveryMode.TOLERATE_TAIL,
    "read_only": False,
    "event_type": AgentEvent,
    "slow_fsync_seconds": 1.0,
    "validate_events": True,
    "preallocate": True,
    "full_fsync": True,
    "multiprocess": False,
}


def test_every_option_defaults_to_its_documented_value(path: Path) -> None:
    assert set(DOCUMENTED_DEFAULTS) == {f for f in LogOptions.__dataclass_fields__}
    with segmentlog.open(path) as log:
        for name, value in DOCUMENTED_DEFAULTS.items():
            assert getattr(log.options, name) == value, name
    assert LogOptions() == log.options


def test_options_take_policy_names_and_normalise_them(path: Path) -> None:
    with segmentlog.open(path, fsync="never", recovery="salvage") as log:
        assert log.options.fsync is FsyncPolicy.NEVER
        assert log.options.recovery is RecoveryMode.SALVAGE


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("fsync", "sometimes", ValueError),
        ("fsync", None, ValueError),
        ("recovery", "repair", ValueError),
        ("fsync_interval_ms", 0, ValueError),
        ("fsync_interval_ms", 3_600_001, ValueError),
        ("fsync_interval_ms", 1.5, TypeError),
        ("fsync_interval_ms", "1000", TypeError),
        ("segment_bytes", 4095, ValueError),
        ("segment_bytes", (1 << 30) + 1, ValueError),
        ("segment_bytes", True, TypeError),
        ("index_interval_bytes", 63, ValueError),
        ("index_interval_bytes", -1, ValueError),
        ("index_interval_bytes", 4096.0, TypeError),
        ("max_record_bytes", 63, ValueError),
        ("max_record_bytes", 256 * 1024 * 1024 + 1, ValueError),
        ("max_record_bytes", "8MiB", TypeError),
        ("max_open_files", 1, ValueError),
        ("max_open_files", None, TypeError),
        ("event_type", int, TypeError),
        ("event_type", "TextDelta", TypeError),
        ("read_only", "no", TypeError),
        ("read_only", 1, TypeError),
        ("validate_events", "yes", TypeError),
        ("slow_fsync_seconds", -1.0, ValueError),
        ("slow_fsync_seconds", "1s", TypeError),
    ],
)
def test_a_bad_option_is_refused_naming_the_option_and_nothing_is_created(
    path: Path, option: str, value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        segmentlog.open(path, **{option: value})
    assert option in str(info.value)
    assert not path.exists()


def test_an_event_type_without_run_id_is_refused(path: Path) -> None:
    class NoRun(msgspec.Struct):
        n: int

    with pytest.raises(TypeError, match="run_id"):
        segmentlog.open(path, event_type=NoRun)
    assert not path.exists()


def test_an_unknown_option_is_a_type_error_naming_it(path: Path) -> None:
    with pytest.raises(TypeError, match="fsync_mode"):
        segmentlog.open(path, fsync_mode="always")
    assert not path.exists()


# --- opening a directory ----------------------------------------------------------------


def assert_fresh_log_directory(path: Path) -> None:
    marker = json.loads((path / "SEGMENTLOG").read_text())
    assert marker == {"format": "segmentlog", "version": FORMAT_VERSION}
    assert (path / "runs").is_dir()
    assert (path / "trash").is_dir()
    assert not (path / "SEGMENTLOG.tmp").exists()


def test_open_creates_a_missing_directory_and_its_parents(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "log"
    with segmentlog.open(path) as log:
        assert log.runs() == []
    assert_fresh_log_directory(path)


def test_open_initialises_an_empty_directory(path: Path) -> None:
    path.mkdir()
    with segmentlog.open(str(path)) as log:
        assert log.runs() == []
    assert_fresh_log_directory(path)


def test_open_accepts_a_path_object_and_reopens_its_own_directory(path: Path) -> None:
    run = uuid.uuid4()
    with segmentlog.open(path, fsync="never") as log:
        log.append(delta(run))
    with segmentlog.open(path, fsync="never") as log:
        assert log.runs() == [run]


def test_open_refuses_a_non_empty_foreign_directory_and_leaves_it_alone(path: Path) -> None:
    path.mkdir()
    (path / "notes.txt").write_text("mine")
    with pytest.raises(NotASegmentLogError, match="SEGMENTLOG"):
        segmentlog.open(path)
    assert sorted(p.name for p in path.iterdir()) == ["notes.txt"]


def test_open_refuses_a_file(path: Path) -> None:
    path.write_text("not a directory")
    with pytest.raises(NotASegmentLogError):
        segmentlog.open(path)
    assert path.read_text() == "not a directory"


def test_open_refuses_a_marker_of_another_format(path: Path) -> None:
    path.mkdir()
    (path / "SEGMENTLOG").write_text(json.dumps({"format": "otherlog", "version": 1}))
    with pytest.raises(NotASegmentLogError, match="otherlog"):
        segmentlog.open(path)


def test_open_refuses_an_unreadable_marker(path: Path) -> None:
    path.mkdir()
    (path / "SEGMENTLOG").write_bytes(b"\x00garbage")
    with pytest.raises(NotASegmentLogError, match="unreadable"):
        segmentlog.open(path)


def test_open_refuses_a_newer_format_version(path: Path) -> None:
    segmentlog.open(path).close()
    marker = {"format": "segmentlog", "version": FORMAT_VERSION + 1}
    (path / "SEGMENTLOG").write_text(json.dumps(marker))
    with pytest.raises(FormatVersionError, match="Upgrade"):
        segmentlog.open(path)
    with pytest.raises(FormatVersionError):
        segmentlog.open(path, read_only=True)


def test_read_only_on_a_missing_directory_refuses_and_creates_nothing(path: Path) -> None:
    with pytest.raises(NotASegmentLogError):
        segmentlog.open(path, read_only=True)
    assert not path.exists()


def test_read_only_on_an_empty_directory_refuses_and_writes_nothing(path: Path) -> None:
    path.mkdir()
    with pytest.raises(NotASegmentLogError):
        segmentlog.open(path, read_only=True)
    assert list(path.iterdir()) == []


def test_open_empties_the_trash_left_by_an_interrupted_delete(path: Path) -> None:
    segmentlog.open(path).close()
    leftover = path / "trash" / f"{uuid.uuid4()}.deadbeef"
    leftover.mkdir()
    (leftover / "00000000000000000001.seg").write_bytes(b"x")
    segmentlog.open(path).close()
    assert list((path / "trash").iterdir()) == []


# --- closed and read-only states --------------------------------------------------------


def test_every_method_of_a_closed_log_raises_log_closed(path: Path) -> None:
    run = uuid.uuid4()
    log = segmentlog.open(path, fsync="never")
    log.append(delta(run))
    log.close()
    assert log.closed
    calls: list[Callable[[], object]] = [
        lambda: log.append(delta(run)),
        lambda: log.append_batch([delta(run)]),
        lambda: log.import_envelopes([]),
        lambda: log.list_after(run),
        lambda: log.runs(),
        lambda: log.last_seq(run),
        lambda: log.run_info(run),
        lambda: log.delete_run(run),
        lambda: log.retain(max_age=0),
        lambda: log.sync(),
        lambda: log.wait_for(run, 0, 0.01),
    ]
    for call in calls:
        with pytest.raises(LogClosedError, match="closed"):
            call()
    log.close()  # idempotent
    assert "closed" in repr(log)


def test_a_read_only_log_refuses_every_write(path: Path) -> None:
    run = uuid.uuid4()
    with segmentlog.open(path, fsync="never") as log:
        env = log.append(delta(run))
    with segmentlog.open(path, read_only=True) as reader:
        calls: list[Callable[[], object]] = [
            lambda: reader.append(delta(run)),
            lambda: reader.append_batch([delta(run)]),
            lambda: reader.import_envelopes([env]),
            lambda: reader.delete_run(run),
            lambda: reader.retain(max_age=0, only_terminal=False),
        ]
        for call in calls:
            with pytest.raises(ReadOnlyError, match="read_only"):
                call()
        assert reader.list_after(run) == [env]
        reader.sync()  # nothing to do, and no error


def test_a_read_only_log_takes_no_lock(path: Path) -> None:
    with segmentlog.open(path, fsync="never") as writer:
        with segmentlog.open(path, read_only=True) as reader:
            assert reader.runs() == []
        writer.append(delta(uuid.uuid4()))


# --- appending and reading back ---------------------------------------------------------


def test_append_assigns_gapless_seqs_and_list_after_pages_through_them(path: Path) -> None:
    run, other = uuid.uuid4(), uuid.uuid4()
    with segmentlog.open(path, fsync="never", **SMALL) as log:
        envs = [log.append(delta(run, str(i))) for i in range(50)]
        log.append(delta(other))
        assert [e.seq for e in envs] == list(range(1, 51))
        assert all(e.run_id == run and e.session_id is None for e in envs)
        assert log.list_after(run) == envs
        assert log.list_after(run, 0, 10) == envs[:10]
        assert log.list_after(run, 10, 5) == envs[10:15]
        assert log.list_after(run, 49) == envs[49:]
        assert log.list_after(run, 50) == []
        assert log.list_after(run, 1000) == []
        assert log.last_seq(run) == 50
        assert log.runs() == sorted([run, other])
        with pytest.raises(NotFoundError):
            log.list_after(uuid.uuid4())
        assert log.last_seq(uuid.uuid4()) is None


def test_append_batch_returns_envelopes_in_input_order_across_runs(path: Path) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    with segmentlog.open(path, fsync="never") as log:
        log.append(delta(b))
        events = [delta(a, "a1"), delta(b, "b2"), delta(a, "a2"), delta(b, "b3")]
        envs = log.append_batch(events)
        assert [(e.run_id, e.seq, e.event) for e in envs] == [
            (a, 1, events[0]),
            (b, 2, events[1]),
            (a, 2, events[2]),
            (b, 3, events[3]),
        ]
        assert log.append_batch([]) == []
        assert [e.seq for e in read_all(log, b)] == [1, 2, 3]


def test_list_after_checks_its_arguments(path: Path) -> None:
    run = uuid.uuid4()
    with segmentlog.open(path, fsync="never") as log:
        log.append(delta(run))
        with pytest.raises(TypeError):
            log.list_after(str(run))  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            log.list_after(run, -1)
        with pytest.raises(ValueError):
            log.list_after(run, 0, 0)


def test_the_next_append_after_reopen_continues_at_last_seq_plus_one(path: Path) -> None:
    run = uuid.uuid4()
    for policy in ("never", "always", "batch", "interval"):
        with segmentlog.open(path, fsync=policy, **SMALL) as log:
            before = log.last_seq(run) or 0
            envs = log.append_batch([delta(run, "y" * 100) for _ in range(30)])
            assert [e.seq for e in envs] == list(range(before + 1, before + 31))
    with segmentlog.open(path, fsync="never", **SMALL) as log:
        assert log.last_seq(run) == 120
        assert log.append(delta(run)).seq == 121
        assert [e.seq for e in read_all(log, run)] == list(range(1, 122))


def test_session_id_is_recovered_after_reopen_from_run_started(path: Path) -> None:
    run, session = uuid.uuid4(), uuid.uuid4()
    with segmentlog.open(path, fsync="never", **SMALL) as log:
        assert log.append(delta(run)).session_id is None
        first = log.append(started(run, session))
        assert first.session_id == session
        # Enough events after RunStarted that it sits in an older, sealed segment.
        for _ in range(3):
            log.append_batch([delta(run, "z" * 200) for _ in range(20)])
        assert len(segment_files(path, run)) > 2
    with segmentlog.open(path, fsync="never", **SMALL) as log:
        assert log.run_info(run).session_id == session
        env = log.append(delta(run))
        assert env.session_id == session
        later = uuid.uuid4()
        assert log.append(started(run, later)).session_id == later
    with segmentlog.open(path, fsync="never", **SMALL) as log:
        assert log.append(delta(run)).session_id == later


def test_run_info_summarises_a_run(path: Path) -> None:
    run, session = uuid.uuid4(), uuid.uuid4()
    with segmentlog.open(path, fsync="never", **SMALL) as log:
        log.append(started(run, session))
        log.append_batch([delta(run, "w" * 300) for _ in range(40)])
        info = log.run_info(run)
        assert not info.terminal
        log.append(completed(run))
        info = log.run_info(run)
        files = segment_files(path, run)
        assert info.run_id == run
        assert (info.events, info.first_seq, info.last_seq) == (42, 1, 42)
        assert info.segments == len(files) > 1
        assert info.session_id == session
        assert info.terminal
        assert info.mtime == files[-1].stat().st_mtime
        with pytest.raises(NotFoundError):
            log.run_info(uuid.uuid4())
    # ``bytes`` counts frames, not preallocated space; a clean close trims the files to it.
    assert info.bytes == sum(f.stat().st_size for f in files)
    with segmentlog.open(path, read_only=True) as reader:
        assert reader.run_info(run) == info


def test_wait_for_returns_once_a_later_seq_is_acknowledged(path: Path) -> None:
    run = uuid.uuid4()
    with segmentlog.open(path, fsync="batch") as log:
        assert not log.wait_for(run, 0, timeout=0.01)
        appender = threading.Timer(0.05, lambda: log.append(delta(run)))
        appender.start()
        try:
            assert log.wait_for(run, 0, timeout=WAIT)
        finally:
            appender.join()
        assert log.wait_for(run, 0, timeout=0)
        assert not log.wait_for(run, 1, timeout=0.01)


# --- segment files ----------------------------------------------------------------------


def test_segments_roll_at_segment_bytes_and_are_named_by_their_base_seq(path: Path) -> None:
    run = uuid.uuid4()
    with segmentlog.open(path, fsync="never", **SMALL) as log:
        envs = [log.append(delta(run, "r" * (i % 300))) for i in range(300)]
    files = segment_files(path, run)
    assert len(files) > 5
    expected_base = 1
    for file in files:
        data = file.read_bytes()
        assert len(data) <= 4096
        assert len(file.stem) == 20 and file.stem.isdigit()
        base = int(file.stem)
        assert base == expected_base
        assert file.name == segment_name(base)
        assert decode_segment_header(data) == SegmentHeader(FORMAT_VERSION, run, base)
        frames = data.count(FRAME_MAGIC)  # payloads are ASCII here, so this counts frames
        expected_base = base + frames
    assert expected_base == 301
    assert not list(run_dir(path, run).glob("*.tmp"))
    with segmentlog.open(path, fsync="never", **SMALL) as log:
        assert read_all(log, run) == envs
        assert log.run_info(run).segments == len(files)


def test_a_record_larger_than_a_segment_gets_a_segment_of_its_own(path: Path) -> None:
    run = uuid.uuid4()
    with segmentlog.open(path, fsync="never", **SMALL) as log:
        log.append(delta(run))
        big = log.append(delta(run, "B" * 10_000))
        log.append(delta(run))
        assert [e.seq for e in read_all(log, run)] == [1, 2, 3]
        assert read_all(log, run)[1] == big
    names = [f.name for f in segment_files(path, run)]
    assert names == [segment_name(1), segment_name(2), segment_name(3)]


# --- the sparse index -------------------------------------------------------------------


def fill_run(log: SegmentLog[Any], run: uuid.UUID, n: int) -> list[Envelope[Any]]:
    return [log.append(delta(run, f"{i:04d}" + "i" * (i % 50))) for i in range(n)]


def index_entries(idx: Path, seg: Path) -> list[tuple[int, int]]:
    seqs, offsets, _ = decode_index(idx.read_bytes(), int(idx.stem), seg.stat().st_size)
    return list(zip(seqs, offsets, strict=True))


def assert_every_page_matches(log: SegmentLog[Any], run: uuid.UUID, envs: list[Any]) -> None:
    for after in range(0, len(envs) + 1, 7):
        for limit in (1, 3, 50):
            assert log.list_after(run, after, limit) == envs[after : after + limit]


def test_index_files_hold_one_point_per_interval(path: Path) -> None:
    run = uuid.uuid4()
    interval = SMALL["index_interval_bytes"]
    with segmentlog.open(path, fsync="never", **SMALL) as log:
        fill_run(log, run, 200)
    segs = segment_files(path, run)
    for seg in segs[:-1]:  # sealed, full: each holds its index file
        idx = seg.with_suffix(".idx")
        assert idx.name == index_name(int(seg.stem))
        entries = index_entries(idx, seg)
        assert entries, idx
        last = SEGMENT_HEADER_SIZE
        for _, offset in entries:
            assert offset - last >= interval
            last = offset
    # A segment smaller than 16 index intervals keeps its index in memory: no file for it.
    tail = segs[-1]
    assert tail.stat().st_size < SEGMENT_HEADER_SIZE + 16 * interval
    assert not tail.with_suffix(".idx").exists()


@pytest.mark.parametrize("damage", ["deleted", "garbage", "torn", "emptied"])
def test_a_lost_or_damaged_index_is_rebuilt_and_reads_stay_correct(path: Path, damage: str) -> None:
    run = uuid.uuid4()
    with segmentlog.open(path, fsync="never", **SMALL) as log:
        envs = fill_run(log, run, 200)
    segs = [s for s in segment_files(path, run) if s.with_suffix(".idx").exists()]
    assert len(segs) >= 3  # the small last segment has none (test_index_files_hold_...)
    good = {seg: index_entries(seg.with_suffix(".idx"), seg) for seg in segs}
    for seg in segs:
        idx = seg.with_suffix(".idx")
        if damage == "deleted":
            idx.unlink()
        elif damage == "garbage":
            idx.write_bytes(b"\xff" * 40)
        elif damage == "torn":
            idx.write_bytes(idx.read_bytes()[:-5])
        else:
            idx.write_bytes(b"")
    with segmentlog.open(path, fsync="never", **SMALL) as log:
        assert log.runs() == [run]
        assert log.recovery_reports == []  # nothing is recovered before the run is touched
        assert_every_page_matches(log, run, envs)
        assert log.stats().bytes_dropped == 0
        reports = log.recovery_reports
        assert all(r.bytes_dropped == 0 for r in reports)
        rebuilt = {r.path for r in reports if r.action == "index_rebuilt"}
        if damage in ("garbage", "torn"):
            assert rebuilt == {str(seg.with_suffix(".idx")) for seg in segs}
        else:
            assert rebuilt == set()
        log.append(delta(run))
    # Every index file is whole again: its entries are the ones the writer had recorded.
    for seg in segs:
        assert index_entries(seg.with_suffix(".idx"), seg) == good[seg]


def test_a_stale_index_pointing_at_the_wrong_frames_does_not_break_reads(path: Path) -> None:
    """Index entries that validate (increasing, inside the file) but name the wrong seqs.

    The index is a cache; the segment is the truth. A read through a wrong point must still
    return the right envelopes (or the entry must be dropped when the index is loaded).
    """
    run = uuid.uuid4()
    with segmentlog.open(path, fsync="never", **SMALL) as log:
        envs = fill_run(log, run, 200)
    shifted = 0
    for seg in segment_files(path, run):
        idx = seg.with_suffix(".idx")
        if not idx.exists():
            continue
        entries = index_entries(idx, seg)
        if len(entries) < 3:
            continue
        shifted += 1
        # Shift every seq but the last by one: offsets still point at frame starts.
        wrong = [(s - 1, o) for s, o in entries[:-1]] + entries[-1:]
        idx.write_bytes(b"".join(struct.pack("<QQ", s, o) for s, o in wrong))
    assert shifted >= 2
    with segmentlog.open(path, fsync="never", **SMALL) as log:
        assert_every_page_matches(log, run, envs)


# --- deleting and retaining runs --------------------------------------------------------


def test_delete_run_removes_it_and_a_later_append_starts_again_at_seq_one(path: Path) -> None:
    run, keep = uuid.uuid4(), uuid.uuid4()
    with segmentlog.open(path, fsync="batch", **SMALL) as log:
        fill_run(log, run, 100)
        log.append(delta(keep))
        assert log.delete_run(run)
        assert log.runs() == [keep]
        assert not run_dir(path, run).exists()
        assert list((path / "trash").iterdir()) == []
        with pytest.raises(NotFoundError):
            log.list_after(run)
        with pytest.raises(NotFoundError):
            log.run_info(run)
        assert log.last_seq(run) is None
        assert not log.delete_run(run)
        assert not log.delete_run(uuid.uuid4())
        again = log.append(delta(run, "again"))
        assert again.seq == 1
        assert log.list_after(run) == [again]
        assert log.list_after(keep)[0].seq == 1
    with segmentlog.open(path, fsync="batch", **SMALL) as log:
        assert log.runs() == sorted([run, keep])
        assert [e.event.delta for e in read_all(log, run)] == ["again"]


def test_delete_run_of_a_run_not_yet_touched_since_open(path: Path) -> None:
    run = uuid.uuid4()
    with segmentlog.open(path, fsync="never", **SMALL) as log:
        fill_run(log, run, 50)
    with segmentlog.open(path, fsync="never", **SMALL) as log:
        assert log.delete_run(run)
        assert log.runs() == []
        assert log.append(delta(run)).seq == 1


def age_run(path: Path, run: uuid.UUID, seconds_ago: float) -> None:
    stamp = time.time() - seconds_ago
    for seg in segment_files(path, run):
        os.utime(seg, (stamp, stamp))


def test_retain_by_age_deletes_only_old_finished_runs_by_default(path: Path) -> None:
    old_done, new_done, old_open = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with segmentlog.open(path, fsync="never") as log:
        for run in (old_done, new_done):
            log.append_batch([delta(run), completed(run)])
        log.append(delta(old_open))
        age_run(path, old_done, 7200)
        age_run(path, old_open, 7200)
        assert log.retain(max_age=3600) == [old_done]
        assert log.runs() == sorted([new_done, old_open])
        assert log.retain(max_age=3600) == []
        assert log.retain(max_age=3600, only_terminal=False) == [old_open]
        assert log.runs() == [new_done]
        assert log.retain() == []
        assert log.runs() == [new_done]


def test_retain_by_bytes_deletes_the_oldest_finished_runs_until_under_the_limit(
    path: Path,
) -> None:
    runs = [uuid.uuid4() for _ in range(4)]
    with segmentlog.open(path, fsync="never") as log:
        for i, run in enumerate(runs):
            log.append_batch([delta(run, "p" * 500), completed(run)])
            age_run(path, run, 1000 - i * 100)  # runs[0] is the oldest
        unfinished = uuid.uuid4()
        log.append(delta(unfinished, "q" * 500))
        age_run(path, unfinished, 5000)  # the very oldest, but not finished
        sizes = {r: log.run_info(r).bytes for r in [*runs, unfinished]}
        total = sum(sizes.values())
        limit = total - sizes[runs[0]] - sizes[runs[1]] // 2
        assert log.retain(max_bytes=limit) == runs[:2]
        assert log.runs() == sorted([*runs[2:], unfinished])
        assert sum(log.run_info(r).bytes for r in log.runs()) <= limit
        assert log.retain(max_bytes=0, only_terminal=False) == [unfinished, *runs[2:]]
        assert log.runs() == []


# --- stats ------------------------------------------------------------------------------


def test_stats_count_appends_bytes_and_fsyncs_under_always(path: Path) -> None:
    run = uuid.uuid4()
    with segmentlog.open(path, fsync="always") as log:
        zero = log.stats()
        assert (zero.appends, zero.bytes_written, zero.fsyncs) == (0, 0, 0)
        assert zero.open_files == 1  # the lock file
        for _ in range(5):
            log.append(delta(run))
        log.append_batch([delta(run) for _ in range(5)])
        stats = log.stats()
        assert stats.appends == 10
        seg = segment_files(path, run)[0]
        assert stats.fsyncs >= 6  # one per append and one for the batch
        assert stats.fsync_p99_us >= stats.fsync_p50_us >= 0
        # The lock file, the segment and the mapped state record (a durable writer keeps one);
        # the index opens with its first entry.
        assert stats.open_files == 3
        assert (stats.runs_recovered, stats.bytes_dropped) == (0, 0)
    assert stats.bytes_written == seg.stat().st_size - SEGMENT_HEADER_SIZE  # trimmed at close


def test_stats_under_never_count_only_the_fsyncs_that_seal_segments(path: Path) -> None:
    run = uuid.uuid4()
    with segmentlog.open(path, fsync="never", **SMALL) as log:
        log.append(delta(run))
        assert log.stats().fsyncs == 0
        fill_run(log, run, 100)
        # Recovery trusts sealed segments, so a roll syncs the segment it seals.
        assert log.stats().fsyncs == len(segment_files(path, run)) - 1 > 0
        assert log.stats().appends == 101


def test_stats_count_runs_recovered_on_first_touch(path: Path) -> None:
    runs = [uuid.uuid4() for _ in range(3)]
    with segmentlog.open(path, fsync="never") as log:
        for run in runs:
            log.append(delta(run))
    with segmentlog.open(path, fsync="never") as log:
        assert log.stats().runs_recovered == 0
        log.last_seq(runs[0])
        log.list_after(runs[1])
        log.list_after(runs[1])
        assert log.stats().runs_recovered == 2
        assert log.stats().appends == 0


def test_interval_policy_background_flusher_eventually_syncs(path: Path) -> None:
    run = uuid.uuid4()
    with segmentlog.open(path, fsync="interval", fsync_interval_ms=10) as log:
        log.append(delta(run))
        assert log.list_after(run)[0].seq == 1  # visible before it is synced
        deadline = time.monotonic() + WAIT
        while log.stats().fsyncs == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert log.stats().fsyncs > 0
        synced = log.stats().fsyncs
        log.append(delta(run))
        while log.stats().fsyncs == synced and time.monotonic() < deadline:
            time.sleep(0.01)
        assert log.stats().fsyncs > synced


class SlowSyncFS(FileSystem):
    """A disk whose fdatasync takes a few milliseconds, as a real one does.

    On a RAM file system an fsync returns at once and appenders might never overlap; a
    realistic sync time makes group commit observable without asserting any time.
    """

    def fdatasync(self, fd: int) -> None:
        time.sleep(0.002)
        super().fdatasync(fd)


def test_batch_policy_groups_concurrent_appends_into_fewer_fsyncs(path: Path) -> None:
    run = uuid.uuid4()
    threads, per_thread = 16, 25
    start = threading.Barrier(threads)
    with segmentlog.open(path, fsync="batch", fs=SlowSyncFS()) as log:

        def work() -> list[int]:
            start.wait()
            return [log.append(delta(run)).seq for _ in range(per_thread)]

        with ThreadPoolExecutor(threads) as pool:
            seqs = [s for f in [pool.submit(work) for _ in range(threads)] for s in f.result()]
        stats = log.stats()
        assert sorted(seqs) == list(range(1, threads * per_thread + 1))
        assert stats.appends == threads * per_thread
        assert 0 < stats.fsyncs < stats.appends
        assert [e.seq for e in read_all(log, run)] == list(range(1, threads * per_thread + 1))


# --- descriptors ------------------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
@pytest.mark.parametrize("policy", ["never", "batch"])
def test_max_open_files_bounds_descriptors_across_many_runs(path: Path, policy: str) -> None:
    runs = [uuid.uuid4() for _ in range(300 if policy == "never" else 60)]
    before = open_fds()
    with segmentlog.open(path, fsync=policy, max_open_files=16) as log:
        peak = 0
        for i, run in enumerate(runs):
            log.append(delta(run))
            if i % 10 == 0:
                log.append(delta(runs[i // 2]))  # revisit an evicted run
            peak = max(peak, open_fds() - before)
            assert log.stats().open_files <= 16 + 1
        assert peak <= 16 + 1
        for run in runs[:5]:
            assert log.list_after(run)[0].seq == 1
        assert open_fds() - before <= 16 + 1
    assert open_fds() == before


# --- refused appends --------------------------------------------------------------------


def run_files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_an_event_with_a_wrong_typed_field_is_refused_and_nothing_is_written(
    path: Path,
) -> None:
    run = uuid.uuid4()
    with segmentlog.open(path, fsync="never") as log:
        log.append(delta(run))
        before = run_files(path)
        with pytest.raises(InvalidEventError, match="wrong type"):
            log.append(TextDelta(run_id=run, delta=5))  # type: ignore[arg-type]
        with pytest.raises(InvalidEventError):
            log.append_batch([delta(run), TextDelta(run_id=run, delta=b"x")])  # type: ignore[arg-type]
        assert run_files(path) == before
        assert log.last_seq(run) == 1
        assert log.append(delta(run)).seq == 2
        assert log.stats().appends == 2


def test_a_refused_first_event_leaves_no_run_behind(path: Path) -> None:
    run = uuid.uuid4()
    with segmentlog.open(path, fsync="never", max_record_bytes=1024) as log:
        with pytest.raises(InvalidEventError):
            log.append(TextDelta(run_id=run, delta=5))  # type: ignore[arg-type]
        with pytest.raises(RecordTooLargeError):
            log.append(delta(run, "L" * 2000))
        assert log.runs() == []
        assert log.last_seq(run) is None
    with segmentlog.open(path, fsync="never") as log:
        assert log.runs() == []
    assert list((path / "runs").iterdir()) == []


def test_objects_that_are_not_events_are_refused(path: Path) -> None:
    run = uuid.uuid4()
    with segmentlog.open(path, fsync="never") as log:
        for bad in (None, {"run_id": run}, "TextDelta", 3):
            with pytest.raises(InvalidEventError):
                log.append(bad)
        with pytest.raises(InvalidEventError, match="run_id"):
            log.append(TextDelta(run_id=str(run), delta="x"))  # type: ignore[arg-type]
        assert log.runs() == []


def test_a_record_too_large_leaves_the_run_unchanged(path: Path) -> None:
    run = uuid.uuid4()
    with segmentlog.open(path, fsync="batch", max_record_bytes=1024, **SMALL) as log:
        envs = [log.append(delta(run, "s" * 100)) for _ in range(3)]
        before = run_files(path)
        with pytest.raises(RecordTooLargeError, match="max_record_bytes"):
            log.append(delta(run, "L" * 2000))
        with pytest.raises(RecordTooLargeError):
            log.append_batch([delta(run), delta(run, "L" * 2000), delta(run)])
        assert run_files(path) == before
        assert log.list_after(run) == envs
        assert log.append(delta(run)).seq == 4
        assert log.append(delta(run, "m" * 800)).seq == 5  # just under the limit


# --- import_envelopes -------------------------------------------------------------------


def test_import_envelopes_keeps_ids_seqs_sessions_and_times(tmp_path: Path) -> None:
    run, session = uuid.uuid4(), uuid.uuid4()
    with segmentlog.open(tmp_path / "src", fsync="never", **SMALL) as src:
        src.append(started(run, session))
        src.append_batch([delta(run, "v" * 80) for _ in range(100)])
        src.append(completed(run))
        envs = read_all(src, run)
    with segmentlog.open(tmp_path / "dst", fsync="never", **SMALL) as dst:
        assert dst.import_envelopes(iter(envs)) == len(envs)
        copied = read_all(dst, run)
        assert copied == envs
        info = dst.run_info(run)
        assert (info.session_id, info.terminal, info.last_seq) == (session, True, 102)
        assert dst.append(delta(run)).seq == 103
    with segmentlog.open(tmp_path / "dst", fsync="never", **SMALL) as dst:
        assert read_all(dst, run)[:-1] == envs


def test_import_envelopes_refuses_gaps_and_overwrites(tmp_path: Path) -> None:
    run = uuid.uuid4()
    with segmentlog.open(tmp_path / "src", fsync="never") as src:
        envs = [src.append(delta(run, str(i))) for i in range(5)]
    with segmentlog.open(tmp_path / "dst", fsync="never") as dst:
        with pytest.raises(ValueError, match="next seq is 1"):
            dst.import_envelopes(envs[1:])
        assert dst.import_envelopes(envs[:2]) == 2
        with pytest.raises(ValueError, match="refused"):
            dst.import_envelopes(envs[:3])  # seq 1 again: an overwrite
        with pytest.raises(ValueError, match="refused"):
            dst.import_envelopes(envs[3:])  # seq 4 after 2: a gap
        with pytest.raises(ValueError, match="jump"):
            dst.import_envelopes([envs[2], envs[4]])
        assert dst.list_after(run) == envs[:2]
        with pytest.raises(TypeError, match="Envelope"):
            dst.import_envelopes([delta(run)])  # type: ignore[list-item]
        forged = msgspec.structs.replace(envs[2], run_id=uuid.uuid4())
        with pytest.raises(ValueError, match="run_id"):
            dst.import_envelopes([forged])
        assert dst.import_envelopes(envs[2:]) == 3
        assert dst.list_after(run) == envs
        assert dst.import_envelopes([]) == 0


# --- user-defined event types -----------------------------------------------------------


class Begun(msgspec.Struct, frozen=True, kw_only=True, tag=True, tag_field="kind"):
    starts_session: ClassVar[bool] = True
    run_id: uuid.UUID
    session_id: uuid.UUID


class Step(msgspec.Struct, frozen=True, kw_only=True, tag=True, tag_field="kind"):
    run_id: uuid.UUID
    n: int
    note: str = ""


class Done(msgspec.Struct, frozen=True, kw_only=True, tag=True, tag_field="kind"):
    terminal: ClassVar[bool] = True
    run_id: uuid.UUID
    ok: bool


MyEvent = Begun | Step | Done


def test_a_user_defined_event_type_is_stored_and_read_back(path: Path) -> None:
    run, session = uuid.uuid4(), uuid.uuid4()
    with segmentlog.open(path, fsync="never", event_type=MyEvent, **SMALL) as log:
        log.append(Begun(run_id=run, session_id=session))
        log.append_batch([Step(run_id=run, n=i, note="n" * 100) for i in range(60)])
        assert not log.run_info(run).terminal
        last = log.append(Done(run_id=run, ok=True))
        assert last.is_terminal
        assert last.session_id == session
        with pytest.raises(InvalidEventError):
            log.append(delta(run))
        with pytest.raises(InvalidEventError, match="wrong type"):
            log.append(Step(run_id=run, n="five"))  # type: ignore[arg-type]
        envs = read_all(log, run)
    with segmentlog.open(path, fsync="never", event_type=MyEvent, **SMALL) as log:
        again = read_all(log, run)
        assert again == envs
        assert [type(e.event) for e in again] == [Begun] + [Step] * 60 + [Done]
        assert [e.event.n for e in again[1:-1]] == list(range(60))
        info = log.run_info(run)
        assert (info.terminal, info.session_id, info.events) == (True, session, 62)
        assert log.append(Step(run_id=run, n=99)).session_id == session


def test_a_single_struct_event_type_works_without_a_union(path: Path) -> None:
    class Tick(msgspec.Struct, frozen=True):
        run_id: uuid.UUID
        n: int

    run = uuid.uuid4()
    with segmentlog.open(path, fsync="never", event_type=Tick) as log:
        envs = log.append_batch([Tick(run, i) for i in range(5)])
        assert log.list_after(run) == envs
        assert not envs[-1].is_terminal
        assert log.run_info(run).session_id is None


# --- threads ----------------------------------------------------------------------------


def hammer(log: SegmentLog[Any], runs: list[uuid.UUID], threads: int, per_thread: int) -> dict:
    start = threading.Barrier(threads)

    def work(worker: int) -> list[tuple[uuid.UUID, int, uuid.UUID]]:
        start.wait()
        out = []
        for i in range(per_thread):
            run = runs[(worker + i) % len(runs)]
            env = log.append(delta(run, f"{worker}:{i}"))
            out.append((run, env.seq, env.event_id))
        return out

    with ThreadPoolExecutor(threads) as pool:
        results = [f.result() for f in [pool.submit(work, w) for w in range(threads)]]
    seen: dict[uuid.UUID, list[tuple[int, uuid.UUID]]] = {r: [] for r in runs}
    for result in results:
        for run, seq, event_id in result:
            seen[run].append((seq, event_id))
    return seen


def assert_gapless(log: SegmentLog[Any], seen: dict) -> None:
    for run, acked in seen.items():
        seqs = sorted(s for s, _ in acked)
        assert seqs == list(range(1, len(acked) + 1)), run
        stored = read_all(log, run)
        assert [e.seq for e in stored] == seqs
        assert {e.seq: e.event_id for e in stored} == dict(acked)


def test_eight_threads_of_ten_thousand_appends_over_four_runs_leave_gapless_runs(
    path: Path,
) -> None:
    runs = [uuid.uuid4() for _ in range(4)]
    with segmentlog.open(path, fsync="never", segment_bytes=256 * 1024) as log:
        seen = hammer(log, runs, threads=8, per_thread=10_000)
        assert sum(len(v) for v in seen.values()) == 80_000
        assert_gapless(log, seen)
    with segmentlog.open(path, fsync="never", segment_bytes=256 * 1024) as log:
        assert_gapless(log, seen)


def test_threads_appending_under_batch_leave_gapless_runs(path: Path) -> None:
    runs = [uuid.uuid4() for _ in range(4)]
    with segmentlog.open(path, fsync="batch", fs=SlowSyncFS(), **SMALL) as log:
        seen = hammer(log, runs, threads=8, per_thread=60)
        assert_gapless(log, seen)
        assert log.stats().fsyncs < log.stats().appends
    with segmentlog.open(path, fsync="batch", **SMALL) as log:
        assert_gapless(log, seen)


# --- processes: the writer lock and read-only readers -----------------------------------

OPEN_AS_WRITER = """
import sys, segmentlog
try:
    segmentlog.open(sys.argv[1]).close()
except segmentlog.LockedError as exc:
    print("locked:", exc)
    sys.exit(3)
print("opened")
"""

READ_ONLY_REPORT = """
import sys, uuid, segmentlog
with segmentlog.open(sys.argv[1], read_only=True) as log:
    run = uuid.UUID(sys.argv[2])
    seqs = []
    while True:
        page = log.list_after(run, seqs[-1] if seqs else None, 1000)
        if not page:
            break
        seqs.extend(e.seq for e in page)
    print(len(seqs), seqs == list(range(1, len(seqs) + 1)))
"""


def python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )


def test_a_second_writer_process_gets_locked_error(path: Path) -> None:
    with segmentlog.open(path, fsync="never"):
        result = python(OPEN_AS_WRITER, str(path))
        assert result.returncode == 3, result.stderr
        assert "locked:" in result.stdout and "read_only" in result.stdout
    result = python(OPEN_AS_WRITER, str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "opened"


def test_a_second_writer_in_the_same_process_gets_locked_error(path: Path) -> None:
    with segmentlog.open(path, fsync="never"), pytest.raises(LockedError):
        segmentlog.open(path)
    segmentlog.open(path).close()


@pytest.mark.parametrize("policy", ["never", "batch"])
def test_a_reader_process_sees_every_acknowledged_append(path: Path, policy: str) -> None:
    run = uuid.uuid4()
    with segmentlog.open(path, fsync=policy, **SMALL) as log:
        log.append_batch([delta(run, "c" * 50) for _ in range(300)])
        log.append(delta(run))
        result = python(READ_ONLY_REPORT, str(path), str(run))
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["301", "True"]
        log.append_batch([delta(run, "d" * 50) for _ in range(99)])
        result = python(READ_ONLY_REPORT, str(path), str(run))
        assert result.stdout.split() == ["400", "True"]


def test_a_read_only_log_follows_a_concurrent_writer(path: Path) -> None:
    runs = [uuid.uuid4() for _ in range(2)]
    acked = {run: 0 for run in runs}
    stop = threading.Event()
    with segmentlog.open(path, fsync="never", **SMALL) as writer:
        for run in runs:
            writer.append(delta(run))
            acked[run] = 1

        def write() -> None:
            i = 0
            while not stop.is_set() and i < 3000:
                run = runs[i % 2]
                env = writer.append(delta(run, "f" * (i % 120)))
                acked[run] = env.seq
                i += 1

        thread = threading.Thread(target=write)
        with segmentlog.open(path, read_only=True) as reader:
            thread.start()
            try:
                seen = {run: 0 for run in runs}
                for _ in range(40):
                    for run in runs:
                        floor = acked[run]  # acknowledged before we look
                        page = reader.list_after(run, seen[run], 10_000)
                        got = [e.seq for e in page]
                        assert got == list(range(seen[run] + 1, seen[run] + 1 + len(got)))
                        seen[run] += len(got)
                        assert seen[run] >= floor
                        assert (reader.last_seq(run) or 0) >= floor
            finally:
                stop.set()
                thread.join()
            for run in runs:
                assert read_all(reader, run) == read_all(writer, run)
                assert reader.wait_for(run, acked[run] - 1, timeout=0)


def test_a_read_only_log_sees_a_run_deleted_and_recreated_by_the_writer(path: Path) -> None:
    run = uuid.uuid4()
    with segmentlog.open(path, fsync="never", **SMALL) as writer:
        fill_run(writer, run, 100)
        with segmentlog.open(path, read_only=True) as reader:
            assert reader.last_seq(run) == 100
            writer.delete_run(run)
            assert reader.last_seq(run) is None
            fresh = [writer.append(delta(run, "new")) for _ in range(3)]
            assert reader.last_seq(run) == 3
            assert reader.list_after(run) == fresh


@pytest.mark.parametrize("events", [3, 100])
def test_a_read_only_log_that_missed_a_delete_sees_the_recreated_run(
    path: Path, events: int
) -> None:
    """The reader last looked before the delete and looks again only after the re-create."""
    run = uuid.uuid4()
    with segmentlog.open(path, fsync="never", **SMALL) as writer:
        fill_run(writer, run, events)
        with segmentlog.open(path, read_only=True) as reader:
            assert reader.last_seq(run) == events
            writer.delete_run(run)
            fresh = [writer.append(delta(run, "new")) for _ in range(2)]
            assert reader.last_seq(run) == 2
            assert reader.list_after(run) == fresh


# --- scale: 100 000 runs, one million events --------------------------------------------


class RecordingFS(FileSystem):
    """The real file system, recording every path the engine passes to it."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def _note(self, path: str) -> None:
        self.paths.append(path)

    def open_read(self, path: str) -> int:
        self._note(path)
        return super().open_read(path)

    def open_append(self, path: str, *, create: bool = False) -> int:
        self._note(path)
        return super().open_append(path, create=create)

    def create_new(self, path: str) -> int:
        self._note(path)
        return super().create_new(path)

    def create_exclusive(self, path: str) -> int:
        self._note(path)
        return super().create_exclusive(path)

    def is_locked(self, path: str) -> bool:
        self._note(path)
        return super().is_locked(path)

    def read_file(self, path: str) -> bytes:
        self._note(path)
        return super().read_file(path)

    def file_size(self, path: str) -> int:
        self._note(path)
        return super().file_size(path)

    def exists(self, path: str) -> bool:
        self._note(path)
        return super().exists(path)

    def is_dir(self, path: str) -> bool:
        self._note(path)
        return super().is_dir(path)

    def listdir(self, path: str) -> list[str]:
        self._note(path)
        return super().listdir(path)

    def mkdir(self, path: str) -> None:
        self._note(path)
        super().mkdir(path)

    def makedirs(self, path: str) -> None:
        self._note(path)
        super().makedirs(path)

    def rename(self, src: str, dst: str) -> None:
        self._note(src)
        self._note(dst)
        super().rename(src, dst)

    def unlink(self, path: str) -> None:
        self._note(path)
        super().unlink(path)

    def rmdir(self, path: str) -> None:
        self._note(path)
        super().rmdir(path)

    def rmtree(self, path: str) -> None:
        self._note(path)
        super().rmtree(path)

    def fsync_dir(self, path: str) -> None:
        self._note(path)
        super().fsync_dir(path)

    def mtime(self, path: str) -> float:
        self._note(path)
        return super().mtime(path)

    def remove_quietly(self, path: str) -> None:
        self._note(path)
        super().remove_quietly(path)

    def touched_runs(self, log_path: Path) -> set[str]:
        prefix = f"{log_path}/runs/"
        return {p[len(prefix) :].split("/")[0] for p in self.paths if p.startswith(prefix)}


def write_runs_directly(path: Path, count: int) -> list[uuid.UUID]:
    """``count`` run directories, each with one segment of one frame, written by hand."""
    encoder = FrameEncoder()
    runs = sorted(uuid.uuid4() for _ in range(count))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for run in runs:
        directory = f"{path}/runs/{run}"
        os.mkdir(directory)
        frame = bytearray(encode_segment_header(run, 1))
        encoder.encode(frame, Envelope(uuid.UUID(int=1), 1, run, None, delta(run), TS), 0)
        fd = os.open(f"{directory}/{segment_name(1)}", flags, 0o644)
        os.write(fd, frame)
        os.close(fd)
    return runs


#: 100 000 runs take ~10 s to create and remove on a RAM file system; without one (minutes
#: on a disk-backed one) the test uses 20 000. The benchmark measures the 100 000 case.
RUN_COUNT = 100_000 if HAVE_RAM_FS else 20_000


def test_opening_a_log_of_100_000_runs_touches_no_run_directory(ram_dir: Path) -> None:
    path = ram_dir / "log"
    segmentlog.open(path).close()
    runs = write_runs_directly(path, RUN_COUNT)
    fs = RecordingFS()
    with segmentlog.open(path, fs=fs, fsync="never") as log:
        assert fs.touched_runs(path) == set()
        listed = log.runs()
        assert fs.touched_runs(path) == set()
        assert listed == runs
        assert log.stats().runs_recovered == 0
        # Touching one run touches that run's directory and no other.
        env = log.list_after(runs[RUN_COUNT // 2])[0]
        assert (env.seq, env.run_id) == (1, runs[RUN_COUNT // 2])
        assert fs.touched_runs(path) == {str(runs[RUN_COUNT // 2])}
    fs.paths.clear()
    with segmentlog.open(path, fs=fs, read_only=True) as reader:
        assert reader.runs() == runs
        assert fs.touched_runs(path) == set()


class ByteCountingFS(FileSystem):
    """The real file system, counting bytes read through ``pread`` and ``read_file``."""

    def __init__(self) -> None:
        self.bytes_read = 0
        self.reads: list[tuple[str, int, int]] = []
        self._names: dict[int, str] = {}

    def open_read(self, path: str) -> int:
        fd = super().open_read(path)
        self._names[fd] = path
        return fd

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        data = super().pread(fd, size, offset)
        self.bytes_read += len(data)
        self.reads.append((self._names.get(fd, "?"), offset, len(data)))
        return data

    def read_file(self, path: str) -> bytes:
        data = super().read_file(path)
        self.bytes_read += len(data)
        self.reads.append((path, 0, len(data)))
        return data

    def reset(self) -> None:
        self.bytes_read = 0
        self.reads.clear()


class DirectRunWriter:
    """Writes a run's segments and index files the way the engine lays them out.

    Frame ``seq`` carries ``Envelope(UUID(int=seq), seq, run, None, event, TS)``. The payload
    is spliced from one encoded template (only the event id and the seq differ), which is
    ~10x faster than encoding each envelope; ``check`` compares spliced frames with the
    codec's own ``FrameEncoder`` output byte for byte.
    """

    def __init__(self, run: uuid.UUID, segment_bytes: int, interval: int) -> None:
        self.run = run
        self.segment_bytes = segment_bytes
        self.interval = interval
        self.event = delta(run, "")
        self._msgpack = msgspec.msgpack.Encoder(uuid_format="bytes").encode
        template = self._msgpack(Envelope(uuid.UUID(int=0), 0, run, None, self.event, TS))
        at = template.index(b"\xc4\x10") + 2  # event_id: bin8 of 16 bytes
        assert template[at + 16 : at + 21] == b"\xa3seq\x00"
        self._head, self._mid, self._tail = template[:at], b"\xa3seq", template[at + 21 :]
        self._struct = struct.Struct("<IQI")

    def envelope(self, seq: int) -> Envelope[Any]:
        return Envelope(uuid.UUID(int=seq), seq, self.run, None, self.event, TS)

    def frame(self, seq: int) -> bytes:
        payload = self._head + seq.to_bytes(16, "big") + self._mid + self._msgpack(seq) + self._tail
        body = self._struct.pack(len(payload), seq, 0) + payload
        return FRAME_MAGIC + struct.pack("<Q", xxhash.xxh3_64_intdigest(body)) + body

    def check(self, seqs: list[int]) -> None:
        encoder = FrameEncoder()
        for seq in seqs:
            buf = bytearray()
            encoder.encode(buf, self.envelope(seq), 0)
            assert self.frame(seq) == bytes(buf), seq

    def write(self, directory: Path, count: int) -> list[int]:
        """Write seqs 1..count; returns the segments' base seqs."""
        directory.mkdir(parents=True)
        bases: list[int] = []
        seq = 1
        while seq <= count:
            base = seq
            bases.append(base)
            data = bytearray(encode_segment_header(self.run, base))
            index = SparseIndex(base, self.interval)
            entries = bytearray()
            while seq <= count:
                frame = self.frame(seq)
                if len(data) + len(frame) > self.segment_bytes and seq > base:
                    break
                entries += index.extend([(seq, len(data))])
                data += frame
                seq += 1
            (directory / segment_name(base)).write_bytes(data)
            (directory / index_name(base)).write_bytes(entries)
        return bases


EVENTS = 1_000_000


@pytest.fixture
def million_event_run(ram_dir: Path) -> tuple[Path, DirectRunWriter, list[int]]:
    path = ram_dir / "log"
    segmentlog.open(path).close()
    run = uuid.UUID("00000000-0000-4000-8000-00000000beef")
    options = LogOptions()
    writer = DirectRunWriter(run, options.segment_bytes, options.index_interval_bytes)
    writer.check([1, 2, 127, 128, 255, 256, 65_535, 65_536, EVENTS])
    bases = writer.write(path / "runs" / str(run), EVENTS)
    return path, writer, bases


def test_list_after_in_a_million_event_run_reads_at_most_one_index_interval_extra(
    million_event_run: tuple[Path, DirectRunWriter, list[int]],
) -> None:
    path, writer, bases = million_event_run
    assert len(bases) > 1  # the run spans several default-sized segments
    run = writer.run
    frame = len(writer.frame(EVENTS))
    interval = LogOptions().index_interval_bytes
    # The engine sizes its one pread as interval + (segment's average frame) * limit + 1 KiB,
    # so it may read up to 1 KiB, plus the average's overshoot (the seq field grows from 1 to
    # 5 bytes along the run: under 5 %), past the last frame it returns.
    read_ahead = 1024
    fs = ByteCountingFS()
    with segmentlog.open(path, fs=fs, fsync="never") as log:
        assert log.last_seq(run) == EVENTS
        assert log.recovery_reports == []
        ends = [b - 1 for b in bases[1:]] + [EVENTS]
        positions = [0, 1, 2, 500, 4321, 123_456, 499_999, 777_777, 999_000, EVENTS - 1]
        positions += [end - 3 for end in ends] + [b - 1 for b in bases[1:]]
        for after in positions:
            for limit in (1, 10, 100):
                fs.reset()
                page = log.list_after(run, after, limit)
                last = min(after + limit, EVENTS)
                assert [e.seq for e in page] == list(range(after + 1, last + 1))
                assert page == [writer.envelope(s) for s in range(after + 1, last + 1)]
                returned = sum(len(writer.frame(s)) for s in range(after + 1, last + 1))
                segments = sum(
                    1 for b, e in zip(bases, ends, strict=True) if b <= last and e > after
                )
                bound = returned * 105 // 100 + segments * (interval + frame + read_ahead)
                assert fs.bytes_read <= bound, (after, limit, fs.reads)
        fs.reset()
        assert log.list_after(run, EVENTS) == []
        assert fs.bytes_read == 0
