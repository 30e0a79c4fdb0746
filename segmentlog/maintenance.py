"""Maintenance of a whole directory: ``verify`` (check), ``recover`` (fix), and quarantine.

Strategy and invariants
- ``verify`` and ``recover`` read segments by one route: ``scan.examine`` walks every frame
  of a segment and resynchronises past each damage; ``verify`` reports every finding, and
  recovery under ``salvage`` judges the first one (``recovery.py``), so checking and
  repairing cannot drift apart (diskcache's ``check(fix=...)``).
- ``verify`` changes nothing and is safe beside a live writer. ``recover`` takes the writer
  lock, keeps every run's valid prefix, and quarantines the rest; ``recover(dry_run=True)``
  reports the same acts and changes nothing at all (no lock file, no directory created).
- Quarantine is never touched by retention; ``quarantined`` lists it, ``salvage_records``
  reads every record that still verifies in the live runs and in quarantine, and
  ``purge_quarantine`` is the one way to delete it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec

from ._fs import OS_FS, FileSystem
from .errors import NotFoundError
from .format import (
    DEFAULT_MAX_RECORD_BYTES,
    FramedRecord,
    HeaderCorruption,
    SegmentHeader,
)
from .frames import (
    read_frame,
)
from .layout import (
    Layout,
    check_directory,
    list_run_ids,
    list_segments,
    open_for_writing,
    parse_run_name,
    segment_path,
)
from .options import RecoveryMode
from .recovery import recover_run
from .repair import QUARANTINE_TAIL, RecoveryReport
from .scan import examine, find_frames_after

__all__ = [
    "Problem",
    "QuarantineEntry",
    "purge_quarantine",
    "quarantined",
    "recover",
    "salvage_records",
    "verify",
]


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """One piece of damage found by ``verify``."""

    run_id: uuid.UUID
    path: str
    offset: int
    reason: str
    first_seq: int | None
    last_seq: int | None

    def __str__(self) -> str:
        span = "unknown" if self.first_seq is None else str(self.first_seq)
        if self.first_seq is not None and self.last_seq not in (None, self.first_seq):
            span = f"{self.first_seq}..{self.last_seq}"
        return f"{self.path}: offset {self.offset}: {self.reason} (seqs {span})"


class QuarantineEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One file held in quarantine, from ``quarantined()``."""

    run_id: uuid.UUID
    path: str
    #: Seqs of the frames in it that still verify (``None`` when none does).
    first_seq: int | None
    last_seq: int | None
    #: Frames in it that still verify.
    records: int
    bytes: int
    #: When recovery moved it there (UTC).
    time: datetime

    def __str__(self) -> str:
        span = "no readable record"
        if self.first_seq is not None:
            span = f"seqs {self.first_seq}..{self.last_seq} ({self.records} records)"
        return f"{self.path}: {span}, {self.bytes} bytes, quarantined {self.time.isoformat()}"


def _runs(fs: FileSystem, path: str, run_id: uuid.UUID | None) -> list[uuid.UUID]:
    if run_id is None:
        return list_run_ids(fs, path)
    if not fs.is_dir(Layout(path).run_dir(run_id)):
        raise NotFoundError(run_id)
    return [run_id]


def verify(
    path: str,
    run_id: uuid.UUID | None = None,
    *,
    fs: FileSystem | None = None,
    max_record_bytes: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Problem]:
    """Read and checksum every record of a log directory (or of one run); change nothing.

    Safe beside a live writer (a frame being written at a run's very end may show up as a
    short frame). Returns every problem with its file, offset and seq range. ``progress`` is
    called with the number of runs checked so far.
    """
    fs = fs or OS_FS
    check_directory(fs, path)
    limit = max_record_bytes or DEFAULT_MAX_RECORD_BYTES
    layout = Layout(path)
    problems: list[Problem] = []
    for done, rid in enumerate(_runs(fs, path, run_id), 1):
        run_dir = layout.run_dir(rid)
        bases = list_segments(fs, run_dir, writable=False)
        if bases and bases[0] != 1:
            problems.append(
                Problem(
                    run_id=rid,
                    path=segment_path(run_dir, bases[0]),
                    offset=0,
                    reason="run does not start at seq 1",
                    first_seq=1,
                    last_seq=bases[0] - 1,
                )
            )
        for i, base in enumerate(bases):
            expected = bases[i + 1] - 1 if i + 1 < len(bases) else None
            seg = segment_path(run_dir, base)
            problems.extend(_segment_problems(fs, rid, seg, base, expected, limit))
        if progress is not None:
            progress(done)
    return problems


def _segment_problems(
    fs: FileSystem, rid: uuid.UUID, path: str, base: int, expected: int | None, limit: int
) -> list[Problem]:
    exam = examine(fs.read_file(path), path, base, limit)
    out: list[Problem] = []

    def add(offset: int, reason: str, first: int | None, last: int | None) -> None:
        out.append(
            Problem(
                run_id=rid, path=path, offset=offset, reason=reason, first_seq=first, last_seq=last
            )
        )

    header = exam.header
    if exam.first is None or not isinstance(header, SegmentHeader) or header.base_seq != base:
        if header is None:
            reason = "segment header cut short"
        elif isinstance(header, HeaderCorruption):
            reason = header.reason
        else:
            reason = "segment header does not match its file name"
        add(0, reason, base, expected)
        return out
    seq = exam.first.last_seq + 1
    for damage, later in exam.damages:
        add(damage.offset, damage.reason, seq, later[0].seq - 1 if later else expected)
        if later:
            seq = later[0].seq
    if expected is not None and exam.last_seq < expected:
        add(exam.size, "segment ends early; seqs are missing", exam.last_seq + 1, expected)
    return out


def recover(
    path: str, *, fs: FileSystem | None = None, dry_run: bool = False, event_type: Any = None
) -> list[RecoveryReport]:
    """Repair a log directory: keep every run's valid prefix, quarantine the rest.

    Takes the writer lock (``LockedError`` while a writer has the log open). With
    ``dry_run``, reports what it would cut or move and changes nothing. Returns every act,
    with the seq ranges dropped and where the bytes were kept. Repair works on frames and
    never decodes an event, so ``event_type`` is accepted for compatibility and unused.
    """
    del event_type
    fs = fs or OS_FS
    lock_fd = None
    if dry_run:
        check_directory(fs, path)
    else:
        lock_fd = open_for_writing(fs, path)
    try:
        layout = Layout(path)
        reports: list[RecoveryReport] = []
        for rid in list_run_ids(fs, path):
            recovered = recover_run(
                fs,
                layout,
                rid,
                mode=RecoveryMode.SALVAGE,
                max_record_bytes=DEFAULT_MAX_RECORD_BYTES,
                index_interval=4096,
                writable=not dry_run,
                durable=True,
                dry_run=dry_run,
            )
            reports.extend(recovered.reports)
        return reports
    finally:
        if lock_fd is not None:
            fs.close(lock_fd)


def _parse_stamp(name: str) -> datetime | None:
    try:
        return datetime.strptime(name, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def _quarantine_files(
    fs: FileSystem, path: str, run_id: uuid.UUID | None
) -> Iterator[tuple[uuid.UUID, str, datetime]]:
    root = Layout(path).quarantine
    if not fs.is_dir(root):
        return
    for name in sorted(fs.listdir(root)):
        rid = parse_run_name(name)
        if rid is None or (run_id is not None and rid != run_id):
            continue
        for stamp in sorted(fs.listdir(f"{root}/{name}")):
            when = _parse_stamp(stamp)
            if when is None:
                continue
            for file in sorted(fs.listdir(f"{root}/{name}/{stamp}")):
                if file.endswith(".seg") or file.endswith(".seg" + QUARANTINE_TAIL):
                    yield rid, f"{root}/{name}/{stamp}/{file}", when


def _frames(data: bytes, limit: int) -> list[FramedRecord]:
    out: list[FramedRecord] = []
    for rec in find_frames_after(data, 0, -1, 1, limit):
        full = read_frame(data, rec.offset, limit)
        if isinstance(full, FramedRecord):
            out.append(full)
    return out


def quarantined(
    path: str, run_id: uuid.UUID | None = None, *, fs: FileSystem | None = None
) -> list[QuarantineEntry]:
    """What quarantine holds: one entry per file, with run, path, seqs, bytes and time."""
    fs = fs or OS_FS
    out: list[QuarantineEntry] = []
    for rid, file, when in _quarantine_files(fs, path, run_id):
        data = fs.read_file(file)
        frames = _frames(data, DEFAULT_MAX_RECORD_BYTES)
        seqs = [f.seq for f in frames]
        out.append(
            QuarantineEntry(
                run_id=rid,
                path=file,
                first_seq=min(seqs) if seqs else None,
                last_seq=max(seqs) if seqs else None,
                records=len(frames),
                bytes=len(data),
                time=when,
            )
        )
    return out


def salvage_records(
    path: str,
    run_id: uuid.UUID | None = None,
    *,
    fs: FileSystem | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> Iterator[tuple[bytes, bool]]:
    """Every record that still passes its checksum, as ``(payload, quarantined)``.

    Live runs first (each segment from start to end, resynchronising past damage), then
    quarantine. Changes nothing.
    """
    fs = fs or OS_FS
    check_directory(fs, path)
    layout = Layout(path)
    for rid in (
        _runs(fs, path, run_id) if run_id is None or fs.is_dir(layout.run_dir(run_id)) else []
    ):
        run_dir = layout.run_dir(rid)
        for base in list_segments(fs, run_dir, writable=False):
            for rec in _frames(fs.read_file(segment_path(run_dir, base)), max_record_bytes):
                yield bytes(rec.payload), False
    for _rid, file, _when in _quarantine_files(fs, path, run_id):
        for rec in _frames(fs.read_file(file), max_record_bytes):
            yield bytes(rec.payload), True


def purge_quarantine(
    path: str,
    *,
    older_than: float | None = None,
    fs: FileSystem | None = None,
    now: datetime | None = None,
) -> list[QuarantineEntry]:
    """Delete quarantined files (those older than ``older_than`` seconds); returns them."""
    fs = fs or OS_FS
    check_directory(fs, path)
    now = now or datetime.now(UTC)
    gone: list[QuarantineEntry] = []
    for entry in quarantined(path, fs=fs):
        if older_than is not None and (now - entry.time).total_seconds() <= older_than:
            continue
        fs.remove_quietly(entry.path)
        fs.remove_quietly(entry.path + ".offset")
        gone.append(entry)
    root = Layout(path).quarantine
    if fs.is_dir(root):
        for name in fs.listdir(root):
            for stamp in fs.listdir(f"{root}/{name}"):
                if not fs.listdir(f"{root}/{name}/{stamp}"):
                    fs.rmdir(f"{root}/{name}/{stamp}")
            if not fs.listdir(f"{root}/{name}"):
                fs.rmdir(f"{root}/{name}")
        fs.fsync_dir(root)
    return gone
