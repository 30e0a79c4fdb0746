"""Unit tests of the ``verify``/``recover`` pair and of recovery as the log reports it.

Strategy
- ``verify`` reports and changes nothing; ``recover`` repairs and reports what it dropped
  (the diskcache ``check(fix=False)``/``check(fix=True)`` split). Each test runs them on a
  clean log or on one simply-damaged log: a flipped byte in one frame, or a last frame cut
  in half. Crashes, power loss and injected I/O errors are ``tests/fault/``'s concern.
- Damage is placed by walking the segment's frames with the codec, so every assertion names
  the exact file, offset and seq the damage was put at.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import ClassVar

import msgspec
import pytest

import segmentlog
from segmentlog import (
    CorruptionError,
    LockedError,
    NotASegmentLogError,
    NotFoundError,
    Problem,
    RecoveryMode,
    TextDelta,
)
from segmentlog.format import (
    FRAME_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    FramedRecord,
)
from segmentlog.frames import (
    read_frame,
)
from segmentlog.maintenance import recover, verify

SMALL = {"segment_bytes": 4096, "index_interval_bytes": 128, "fsync": "never"}


def delta(run_id: uuid.UUID, text: str = "x") -> TextDelta:
    return TextDelta(run_id=run_id, delta=text)


def frame_spans(segment: Path) -> dict[int, tuple[int, int]]:
    """seq -> (offset, end) of every frame in a segment file."""
    data = segment.read_bytes()
    spans = {}
    pos = SEGMENT_HEADER_SIZE
    while pos < len(data):
        record = read_frame(data, pos, 1 << 20)
        assert isinstance(record, FramedRecord)
        spans[record.seq] = (pos, record.end)
        pos = record.end
    return spans


def segments(path: Path, run: uuid.UUID) -> list[Path]:
    return sorted((path / "runs" / str(run)).glob("*.seg"))


def flip_byte(file: Path, offset: int) -> None:
    data = bytearray(file.read_bytes())
    data[offset] ^= 0x20
    file.write_bytes(bytes(data))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "log"


def make_log(path: Path, runs: int = 2, events: int = 120) -> list[uuid.UUID]:
    ids = sorted(uuid.uuid4() for _ in range(runs))
    with segmentlog.open(path, **SMALL) as log:
        for run in ids:
            for i in range(events):
                log.append(delta(run, f"{i:03d}" + "e" * 40))
    return ids


# --- a clean log ------------------------------------------------------------------------


def test_verify_of_a_clean_log_finds_nothing(path: Path) -> None:
    runs = make_log(path)
    assert verify(str(path)) == []
    assert verify(str(path), runs[0]) == []


def test_verify_calls_progress_once_per_run(path: Path) -> None:
    make_log(path, runs=3)
    seen: list[int] = []
    assert verify(str(path), progress=seen.append) == []
    assert seen == [1, 2, 3]


def test_verify_works_beside_a_live_writer_and_takes_no_lock(path: Path) -> None:
    run = uuid.uuid4()
    with segmentlog.open(path, **SMALL) as log:
        log.append_batch([delta(run, "w" * 100) for _ in range(100)])
        assert verify(str(path)) == []
        log.append(delta(run))
    assert verify(str(path), run) == []


def test_verify_of_an_unknown_run_is_not_found(path: Path) -> None:
    make_log(path, runs=1)
    with pytest.raises(NotFoundError):
        verify(str(path), uuid.uuid4())


def test_verify_refuses_a_directory_that_is_not_a_log(tmp_path: Path) -> None:
    with pytest.raises(NotASegmentLogError):
        verify(str(tmp_path / "missing"))
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "file").write_text("x")
    with pytest.raises(NotASegmentLogError):
        verify(str(tmp_path / "foreign"))
    assert not (tmp_path / "missing").exists()


def test_recover_of_a_clean_log_reports_nothing_and_changes_nothing(path: Path) -> None:
    runs = make_log(path)
    before = {p: p.read_bytes() for p in path.rglob("*.seg")}
    assert recover(str(path)) == []
    assert {p: p.read_bytes() for p in path.rglob("*.seg")} == before
    with segmentlog.open(path, **SMALL) as log:
        assert [log.last_seq(r) for r in runs] == [120, 120]


def test_recover_refuses_while_a_writer_has_the_log_open(path: Path) -> None:
    make_log(path, runs=1)
    with segmentlog.open(path, **SMALL), pytest.raises(LockedError):
        recover(str(path))
    assert recover(str(path)) == []


def test_recovery_modes_parse_by_name() -> None:
    for mode in RecoveryMode:
        assert RecoveryMode.parse(mode.value) is mode
        assert RecoveryMode.parse(mode) is mode
    with pytest.raises(ValueError, match="recovery must be one of"):
        RecoveryMode.parse("fix")


# --- user event types -------------------------------------------------------------------


class Tick(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    terminal: ClassVar[bool] = False
    run_id: uuid.UUID
    n: int


def write_ticks(path: Path) -> uuid.UUID:
    run = uuid.uuid4()
    with segmentlog.open(path, event_type=Tick, **SMALL) as log:
        log.append_batch([Tick(run_id=run, n=i) for i in range(5)])
    return run


def test_verify_checks_a_log_of_user_defined_events_without_knowing_their_type(
    path: Path,
) -> None:
    write_ticks(path)
    assert verify(str(path)) == []


def test_recover_takes_the_event_type_of_a_log_of_user_defined_events(path: Path) -> None:
    run = write_ticks(path)
    assert recover(str(path), event_type=Tick) == []
    with segmentlog.open(path, event_type=Tick, **SMALL) as log:
        assert [e.event.n for e in log.list_after(run)] == [0, 1, 2, 3, 4]


def test_recover_repairs_a_log_of_user_defined_events_without_their_type(path: Path) -> None:
    """Repair is about frames; ``segmentlog recover DIR`` has no way to name an event type."""
    run = write_ticks(path)
    assert recover(str(path)) == []
    with segmentlog.open(path, event_type=Tick, **SMALL) as log:
        assert log.last_seq(run) == 5


# --- a flipped byte in a sealed segment -------------------------------------------------


def damage_middle_of_first_segment(path: Path, run: uuid.UUID) -> tuple[Path, int, int]:
    """Flip a payload byte of a frame in the middle of the run's first (sealed) segment."""
    first = segments(path, run)[0]
    spans = frame_spans(first)
    seq = sorted(spans)[len(spans) // 2]
    offset, _ = spans[seq]
    flip_byte(first, offset + FRAME_HEADER_SIZE + 5)
    return first, seq, offset


def test_verify_reports_a_flipped_byte_with_its_file_offset_and_seq(path: Path) -> None:
    runs = make_log(path)
    damaged, seq, offset = damage_middle_of_first_segment(path, runs[1])
    before = {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    problems = verify(str(path))
    assert problems == [
        Problem(
            run_id=runs[1],
            path=str(damaged),
            offset=offset,
            reason="checksum mismatch",
            first_seq=seq,
            last_seq=seq,
        )
    ]
    assert verify(str(path), runs[0]) == []
    assert verify(str(path), runs[1]) == problems
    text = str(problems[0])
    assert str(damaged) in text and f"offset {offset}" in text and f"seqs {seq}" in text
    assert {p: p.read_bytes() for p in path.rglob("*") if p.is_file()} == before


def test_reading_through_a_flipped_byte_raises_corruption_naming_the_place(path: Path) -> None:
    runs = make_log(path)
    damaged, seq, offset = damage_middle_of_first_segment(path, runs[1])
    with segmentlog.open(path, **SMALL) as log:
        assert log.list_after(runs[0], 0, 1000)[-1].seq == 120  # the other run is fine
        assert [e.seq for e in log.list_after(runs[1], 0, seq - 1)] == list(range(1, seq))
        with pytest.raises(CorruptionError) as info:
            log.list_after(runs[1], seq - 1, 1)
        err = info.value
        assert (err.path, err.offset, err.first_seq) == (str(damaged), offset, seq)
        assert "checksum" in err.reason


def test_recover_salvages_the_prefix_before_a_flipped_byte(path: Path) -> None:
    runs = make_log(path)
    damaged, seq, offset = damage_middle_of_first_segment(path, runs[1])
    later = segments(path, runs[1])[1:]
    reports = recover(str(path))
    assert reports, "recover must report what it dropped"
    assert all(r.run_id == runs[1] for r in reports)
    moved = [r for r in reports if r.action == "quarantined"]
    assert [(r.path, r.offset, r.first_seq) for r in moved[:1]] == [(str(damaged), offset, seq)]
    assert {r.path for r in moved[1:]} == {str(p) for p in later}
    assert all(r.quarantine and r.quarantine.startswith(str(path / "quarantine")) for r in moved)
    assert verify(str(path)) == []
    with segmentlog.open(path, **SMALL) as log:
        assert log.last_seq(runs[1]) == seq - 1
        assert log.last_seq(runs[0]) == 120
        assert log.append(delta(runs[1])).seq == seq
    assert recover(str(path)) == []


# --- a last frame cut in half -----------------------------------------------------------


def cut_last_frame(path: Path, run: uuid.UUID) -> tuple[Path, int, int]:
    last = segments(path, run)[-1]
    spans = frame_spans(last)
    seq = max(spans)
    offset, end = spans[seq]
    with open(last, "r+b") as f:
        f.truncate(offset + (end - offset) // 2)
    return last, seq, offset


def test_verify_reports_a_torn_last_frame(path: Path) -> None:
    runs = make_log(path, runs=1)
    last, seq, offset = cut_last_frame(path, runs[0])
    problems = verify(str(path))
    assert len(problems) == 1
    problem = problems[0]
    assert (problem.path, problem.offset, problem.first_seq) == (str(last), offset, seq)
    assert "cut short" in problem.reason


def test_recover_truncates_a_torn_last_frame(path: Path) -> None:
    runs = make_log(path, runs=1)
    last, seq, offset = cut_last_frame(path, runs[0])
    torn = last.stat().st_size - offset
    reports = recover(str(path))
    assert len(reports) == 1
    report = reports[0]
    assert (report.run_id, report.path, report.action) == (runs[0], str(last), "truncated")
    assert (report.offset, report.bytes_dropped) == (offset, torn)
    assert report.first_seq == seq
    assert last.stat().st_size == offset
    assert verify(str(path)) == []


def test_the_log_itself_cuts_a_torn_tail_on_first_touch_and_reports_it(path: Path) -> None:
    runs = make_log(path, runs=2)
    last, seq, offset = cut_last_frame(path, runs[0])
    torn = last.stat().st_size - offset
    with segmentlog.open(path, **SMALL) as log:
        assert log.recovery_reports == []  # opening touches no run
        assert log.last_seq(runs[1]) == 120
        assert log.recovery_reports == []
        assert log.last_seq(runs[0]) == seq - 1
        (report,) = log.recovery_reports
        assert (report.path, report.offset, report.bytes_dropped) == (str(last), offset, torn)
        assert report.first_seq == seq
        stats = log.stats()
        assert (stats.runs_recovered, stats.bytes_dropped) == (2, torn)
        assert log.append(delta(runs[0])).seq == seq
    assert verify(str(path)) == []


def test_a_read_only_log_reports_a_torn_tail_without_repairing_it(path: Path) -> None:
    runs = make_log(path, runs=1)
    last, seq, offset = cut_last_frame(path, runs[0])
    size = last.stat().st_size
    with segmentlog.open(path, read_only=True) as reader:
        assert reader.last_seq(runs[0]) == seq - 1
        (report,) = reader.recovery_reports
        assert report.action == "ignored"
        assert report.offset == offset
    assert last.stat().st_size == size


def test_strict_recovery_refuses_a_flipped_byte_in_the_last_frame(path: Path) -> None:
    runs = make_log(path, runs=1)
    last = segments(path, runs[0])[-1]
    spans = frame_spans(last)
    seq = max(spans)
    flip_byte(last, spans[seq][0] + FRAME_HEADER_SIZE + 1)
    with segmentlog.open(path, recovery="strict", **SMALL) as log:
        assert log.runs() == runs  # still nothing touched
        with pytest.raises(CorruptionError) as info:
            log.last_seq(runs[0])
        assert (info.value.path, info.value.offset) == (str(last), spans[seq][0])
    assert verify(str(path))[0].first_seq == seq


def test_removing_an_interrupted_segment_is_durable_even_under_never(tmp_path: Path) -> None:
    """Found by the power-loss machine: under ``never``, recovery removed a successor segment
    whose header never reached the disk without fsyncing the directory, the previous segment
    took new (unsynced) frames, and a second power loss brought the empty successor back, so
    the torn new frame looked like damage in a sealed segment. The removal is now durable."""
    from segmentlog._fs import FileSystem

    dir_syncs: list[str] = []

    class Spy(FileSystem):
        def fsync_dir(self, path: str) -> None:
            dir_syncs.append(path)
            super().fsync_dir(path)

    path = tmp_path / "log"
    run = uuid.uuid4()
    options = {"fsync": "never", "segment_bytes": 4096}
    with segmentlog.open(path, **options) as log:
        for i in range(40):
            log.append(TextDelta(run_id=run, delta=f"{i}" + "x" * 200))
    run_dir = path / "runs" / str(run)
    bases = sorted(p.name for p in run_dir.glob("*.seg"))
    assert len(bases) >= 2
    last = run_dir / bases[-1]
    last.write_bytes(b"")  # its creation was interrupted: no header reached the disk
    with segmentlog.open(path, fs=Spy(), **options) as log:
        assert log.last_seq(run) is not None
        assert not last.exists()
        assert str(run_dir) in [str(Path(p)) for p in dir_syncs]
        log.append(TextDelta(run_id=run, delta="after"))
