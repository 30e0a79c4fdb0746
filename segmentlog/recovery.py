"""Recovery of a run's segments after a crash, and the ``verify``/``recover`` pair.

Strategy and invariants
- A run is recovered on its first touch after open (never at open), so opening a directory
  with many runs costs nothing per run.
- Sealed segments were fsynced when they were sealed, so any damage in them is corruption.
  Their tail is checked (from the last index point) so that a missing or short segment is
  reported as a lost seq range, never silently renumbered.
- The last segment is validated from its last trustworthy index point to its end, also after
  a clean close, since a file can be damaged while the log is closed.
- Damage in the last segment is classified by what follows it:
  * nothing verifies after it -> a *torn tail* (the writer died mid-write);
  * frames verify after it, but none carries a durable mark past it -> the shape a power loss
    leaves in unsynced bytes, also treated as a torn tail;
  * a later frame's durable mark lies past it -> *corruption*: those bytes had been synced.
  ``strict`` truncates only a short frame or an unfinished batch at the very end and raises for
  everything else; ``tolerate_tail`` truncates torn tails and raises ``CorruptionError`` for
  corruption; ``salvage`` keeps the valid prefix and reports the rest.
- Every repair is reported as a ``RecoveryReport`` (file, offset, bytes and seqs dropped) and
  logged through the ``segmentlog`` logger. Read-only recovery changes nothing on disk.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ._fs import FileSystem
from .codec import (
    SEGMENT_HEADER_SIZE,
    FramedRecord,
    HeaderCorruption,
    SegmentHeader,
    decode_segment_header,
    read_frame,
)
from .durability import OptionEnum
from .errors import CorruptionError
from .index import SparseIndex
from .segment import (
    INDEX_SUFFIX,
    TMP_SUFFIX,
    ScanResult,
    Segment,
    find_frames_after,
    parse_segment_name,
    read_header,
    scan,
)

__all__ = [
    "Problem",
    "RecoveredRun",
    "RecoveryMode",
    "RecoveryReport",
    "recover",
    "recover_run",
    "verify",
]

logger = logging.getLogger("segmentlog")


class RecoveryMode(OptionEnum):
    """What recovery does with damage. See the module docstring."""

    __option__ = "recovery"

    STRICT = "strict"
    TOLERATE_TAIL = "tolerate_tail"
    SALVAGE = "salvage"


class RecoveryReport(msgspec.Struct, frozen=True, kw_only=True):
    """One thing recovery did (or, read-only, would do) to a run."""

    run_id: uuid.UUID
    path: str
    #: "truncated", "removed", "index_rebuilt", "cut_run" or "ignored" (read-only).
    action: str
    reason: str
    offset: int
    bytes_dropped: int = 0
    #: Dropped seq range (``None`` when no seq was lost or the range is unknown).
    first_seq: int | None = None
    last_seq: int | None = None


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


@dataclass
class RecoveredRun:
    """A run's state as established by recovery."""

    segments: list[Segment] = field(default_factory=list)
    last_seq: int = 0
    last_payload: bytes | None = None
    reports: list[RecoveryReport] = field(default_factory=list)


@dataclass
class _Context:
    fs: FileSystem
    run_id: uuid.UUID
    run_dir: str
    mode: RecoveryMode
    max_record_bytes: int
    index_interval: int
    writable: bool
    sync_after_repair: bool
    out: RecoveredRun

    def report(self, **fields: Any) -> None:
        action = fields.pop("action")
        if not self.writable:
            action = "ignored"
        rep = RecoveryReport(run_id=self.run_id, action=action, **fields)
        self.out.reports.append(rep)
        logger.warning(
            "recovery: %s %s at offset %d (%s); %d bytes, seqs %s..%s",
            rep.action,
            rep.path,
            rep.offset,
            rep.reason,
            rep.bytes_dropped,
            rep.first_seq,
            rep.last_seq,
        )

    def corrupt(
        self, reason: str, path: str, offset: int, first: int | None, last: int | None
    ) -> CorruptionError:
        return CorruptionError(reason, path=path, offset=offset, first_seq=first, last_seq=last)


def list_segments(fs: FileSystem, run_dir: str, writable: bool) -> list[int]:
    """Sorted base seqs of the segment files in ``run_dir``; removes leftover ``.tmp`` files."""
    bases: list[int] = []
    for name in fs.listdir(run_dir):
        if name.endswith(TMP_SUFFIX):
            if writable:
                fs.remove_quietly(f"{run_dir}/{name}")
            continue
        base = parse_segment_name(name)
        if base is not None:
            bases.append(base)
    bases.sort()
    return bases


def recover_run(
    fs: FileSystem,
    run_id: uuid.UUID,
    run_dir: str,
    *,
    mode: RecoveryMode,
    max_record_bytes: int,
    index_interval: int,
    writable: bool,
    sync_after_repair: bool,
) -> RecoveredRun:
    """Establish a run's segments, last seq and last record; repair per ``mode``.

    Raises ``CorruptionError`` when ``mode`` does not allow the damage found.
    """
    out = RecoveredRun()
    ctx = _Context(
        fs,
        run_id,
        run_dir,
        mode,
        max_record_bytes,
        index_interval,
        writable,
        sync_after_repair,
        out,
    )
    bases = list_segments(fs, run_dir, writable)
    if bases and bases[0] != 1:
        path = f"{run_dir}/{bases[0]:020d}.seg"
        err = ctx.corrupt("run does not start at seq 1", path, 0, 1, bases[0] - 1)
        if mode is not RecoveryMode.SALVAGE:
            raise err
        _drop_segments(ctx, bases, 0, "run does not start at seq 1", 1)
        return out
    i = 0
    while i < len(bases):
        base = bases[i]
        seg = Segment(run_dir, base, SparseIndex(base, index_interval))
        next_base = bases[i + 1] if i + 1 < len(bases) else None
        status = _recover_segment(ctx, seg, next_base)
        if status is not _REMOVED:
            out.segments.append(seg)
        if status is not _WHOLE:  # the run ends here; drop what follows
            _drop_segments(ctx, bases, i + 1, "after a cut in an earlier segment", seg.last_seq + 1)
            break
        i += 1
    if out.segments:
        out.last_seq = out.segments[-1].last_seq
    return out


#: Outcomes of recovering one segment.
_WHOLE = "whole"  # intact: the run may go on in the next segment
_CUT = "cut"  # kept up to damage: the run ends in this segment
_REMOVED = "removed"  # deleted (a leftover or unreadable header): the run ends before it


def _drop_segments(ctx: _Context, bases: list[int], start: int, reason: str, first: int) -> None:
    for base in bases[start:]:
        path = f"{ctx.run_dir}/{base:020d}.seg"
        size = ctx.fs.file_size(path)
        if ctx.writable:
            ctx.fs.remove_quietly(path)
            ctx.fs.remove_quietly(f"{ctx.run_dir}/{base:020d}{INDEX_SUFFIX}")
        ctx.report(
            action="removed",
            path=path,
            reason=reason,
            offset=0,
            bytes_dropped=size,
            first_seq=first,
            last_seq=None,
        )
    if ctx.writable and len(bases) > start:
        ctx.fs.fsync_dir(ctx.run_dir)
    del bases[start:]


def _load_index(ctx: _Context, seg: Segment) -> int:
    """Load the segment's index; returns the valid byte length of the index file."""
    try:
        data = ctx.fs.read_file(seg.index_path)
    except FileNotFoundError:
        return -1
    index, valid = SparseIndex.from_bytes(data, seg.base_seq, ctx.index_interval, seg.size)
    seg.index = index
    return valid if valid == len(data) else -valid - 2


def _recover_segment(ctx: _Context, seg: Segment, next_base: int | None) -> str:
    """Validate one segment's header and tail; returns _WHOLE, _CUT or _REMOVED."""
    fs = ctx.fs
    fd = fs.open_append(seg.path) if ctx.writable else fs.open_read(seg.path)
    try:
        size = fs.size(fd)
        seg.size = size
        header = read_header(fs, fd)
        if header is None or isinstance(header, HeaderCorruption):
            return _bad_header(ctx, seg, fd, size, header, next_base)
        if header.base_seq != seg.base_seq or header.run_id != ctx.run_id:
            reason = "segment header does not match its file name"
            if ctx.mode is not RecoveryMode.SALVAGE:
                raise ctx.corrupt(reason, seg.path, 0, seg.base_seq, None)
            _cut(ctx, seg, fd, SEGMENT_HEADER_SIZE, seg.base_seq - 1, reason, None)
            return _CUT
        index_state = _load_index(ctx, seg)
        if ctx.mode is RecoveryMode.SALVAGE:  # salvage checks every frame, not just the tail
            seg.index = SparseIndex(seg.base_seq, ctx.index_interval)
            index_state = -1
        start_seq, start_off, buf = _tail_start(ctx, seg, fd, size, next_base is not None)
        result = scan(buf, start_off, start_seq, ctx.max_record_bytes, seg.index)
        if next_base is None:
            _judge_last(ctx, seg, buf, start_off, result)
        elif not _judge_sealed(ctx, seg, buf, start_off, result, next_base):
            return _CUT
        seg.last_seq = result.last_seq
        if result.last_payload is not None:
            ctx.out.last_payload = result.last_payload
        _fix_index(ctx, seg, result, index_state)
        # Sealed segments were fsynced when sealed. The last one may hold bytes a crashed
        # process wrote but never synced; rejected: an fdatasync per run at recovery (it
        # dominated reopening after a crash). Claiming only the header keeps later frames'
        # durable marks honest until the writer's next fsync covers the whole file.
        seg.synced = seg.size if next_base is not None else SEGMENT_HEADER_SIZE
        return _WHOLE
    finally:
        fs.close(fd)


def _tail_start(
    ctx: _Context, seg: Segment, fd: int, size: int, sealed: bool
) -> tuple[int, int, bytes]:
    """Choose where to start validating: the last trustworthy index point.

    A point is trustworthy when its frame verifies and, in the last segment, its durable
    mark reaches it: bytes between a frame's durable mark and the frame itself were unsynced
    when it was written, so a power loss may have holed them, and they are scanned too. (A
    sealed segment was fsynced whole when it was sealed.) Returns the start seq, the
    start offset and the file's bytes from there to its end.
    """
    index = seg.index
    while len(index):
        seq, off = index.seqs[-1], index.offsets[-1]
        buf = ctx.fs.pread(fd, size - off, off)
        rec = read_frame(buf, 0, ctx.max_record_bytes)
        if not (isinstance(rec, FramedRecord) and rec.seq == seq):
            index.drop_last()
        elif rec.durable < off and not sealed:
            index.truncate(rec.durable + 1)
        else:
            return seq, off, buf
    start = SEGMENT_HEADER_SIZE
    return seg.base_seq, start, ctx.fs.pread(fd, size - start, start)


def _judge_sealed(
    ctx: _Context, seg: Segment, buf: bytes, start_off: int, result: ScanResult, next_base: int
) -> bool:
    expected_last = next_base - 1
    whole = result.damage is None and result.batch_start == result.end
    if whole and result.last_seq == expected_last:
        seg.size = result.end
        return True
    if result.damage is not None:
        reason = result.damage.reason
        offset = result.damage.offset
    elif result.last_seq < expected_last:
        reason = f"segment ends at seq {result.last_seq}; seqs up to {expected_last} are missing"
        offset = result.end
    else:
        reason = "unfinished batch at the end of a sealed segment"
        offset = result.batch_start
    first = result.last_seq + 1 if result.batch_start == result.end else result.batch_start_seq + 1
    if ctx.mode is not RecoveryMode.SALVAGE:
        raise ctx.corrupt(reason, seg.path, offset, first, expected_last)
    _cut(ctx, seg, None, result.batch_start, result.batch_start_seq, reason, expected_last)
    return False


def _judge_last(
    ctx: _Context, seg: Segment, buf: bytes, start_off: int, result: ScanResult
) -> None:
    damage = result.damage
    if damage is None:
        if result.batch_start < result.end:
            _cut(
                ctx,
                seg,
                None,
                result.batch_start,
                result.batch_start_seq,
                "unfinished batch at end of file",
                result.last_seq,
            )
        else:
            seg.size = result.end
        result.last_seq = result.batch_start_seq
        return
    later = find_frames_after(
        buf, start_off, damage.offset, result.last_seq + 1, ctx.max_record_bytes
    )
    first = result.batch_start_seq + 1
    last = max((f.seq for f in later), default=damage.claimed_seq)
    if last is not None and last < first:
        last = None
    if not later:
        allowed = damage.short or ctx.mode is not RecoveryMode.STRICT
        reason = f"torn tail: {damage.reason}"
    elif max(f.durable for f in later) <= damage.offset:
        allowed = ctx.mode is not RecoveryMode.STRICT
        reason = f"unsynced tail damaged by power loss: {damage.reason}"
    else:
        allowed = ctx.mode is RecoveryMode.SALVAGE
        reason = damage.reason
    if not allowed:
        raise ctx.corrupt(reason, seg.path, damage.offset, first, last)
    _cut(ctx, seg, None, result.batch_start, result.batch_start_seq, reason, last)
    result.last_seq = result.batch_start_seq


def _cut(
    ctx: _Context,
    seg: Segment,
    fd: int | None,
    end: int,
    last_kept: int,
    reason: str,
    last_dropped: int | None,
) -> None:
    """Truncate ``seg`` at ``end`` (keeping seqs up to ``last_kept``) and report it."""
    dropped = seg.size - end
    if ctx.writable:
        own = fd is None
        wfd = ctx.fs.open_append(seg.path) if own else fd
        assert wfd is not None
        try:
            ctx.fs.truncate(wfd, end)
            if ctx.sync_after_repair:
                ctx.fs.fdatasync(wfd)
        finally:
            if own:
                ctx.fs.close(wfd)
    first = last_kept + 1
    lost = last_dropped is None or last_dropped >= first
    ctx.report(
        action="truncated",
        path=seg.path,
        reason=reason,
        offset=end,
        bytes_dropped=dropped,
        first_seq=first if lost else None,
        last_seq=last_dropped if lost else None,
    )
    seg.size = end
    seg.last_seq = last_kept
    seg.index.truncate(end)


def _bad_header(
    ctx: _Context,
    seg: Segment,
    fd: int,
    size: int,
    header: HeaderCorruption | None,
    next_base: int | None,
) -> str:
    reason = "segment header cut short" if header is None else header.reason
    buf = ctx.fs.pread(fd, size, 0)
    frames = find_frames_after(buf, 0, -1, seg.base_seq, ctx.max_record_bytes)
    first = seg.base_seq if frames else None
    last = max((f.seq for f in frames), default=None)
    if frames and next_base is not None:
        raise_it = ctx.mode is not RecoveryMode.SALVAGE
    elif frames:
        # Frames follow a damaged header: corruption unless none was ever synced.
        synced = max(f.durable for f in frames) > 0
        raise_it = ctx.mode is not RecoveryMode.SALVAGE and (
            synced or ctx.mode is RecoveryMode.STRICT
        )
    else:
        raise_it = next_base is not None and ctx.mode is not RecoveryMode.SALVAGE
    if raise_it:
        raise ctx.corrupt(reason, seg.path, 0, first or seg.base_seq, last)
    if ctx.writable:
        ctx.fs.remove_quietly(seg.path)
        ctx.fs.remove_quietly(seg.index_path)
        if ctx.sync_after_repair:
            ctx.fs.fsync_dir(ctx.run_dir)
    ctx.report(
        action="removed",
        path=seg.path,
        reason=reason,
        offset=0,
        bytes_dropped=size,
        first_seq=first,
        last_seq=last,
    )
    return _REMOVED


def _fix_index(ctx: _Context, seg: Segment, result: ScanResult, index_state: int) -> None:
    """Add the index points the scan found due, rewriting a damaged index file."""
    points = [(s, o) for s, o in result.index_points if o < seg.size]
    for s, o in points:
        seg.index.seqs.append(s)
        seg.index.offsets.append(o)
        seg.index.last_offset = o
    if not ctx.writable:
        return
    if index_state == -1 or index_state < -1 or points:
        data = seg.index.to_bytes()
        fd = ctx.fs.create_new(seg.index_path + TMP_SUFFIX)
        try:
            if data:
                ctx.fs.write(fd, data)
        finally:
            ctx.fs.close(fd)
        ctx.fs.rename(seg.index_path + TMP_SUFFIX, seg.index_path)
        if index_state < -1:
            ctx.report(
                action="index_rebuilt",
                path=seg.index_path,
                reason="index file damaged",
                offset=-index_state - 2,
            )


# --- verify / recover ------------------------------------------------------------------


def verify_segment(
    fs: FileSystem,
    run_id: uuid.UUID,
    path: str,
    base_seq: int,
    expected_last: int | None,
    max_record_bytes: int,
) -> tuple[list[Problem], int]:
    """Check every frame of one segment, resynchronising past damage to find all of it.

    Returns the problems found and the last seq that verified.
    """
    problems: list[Problem] = []
    data = fs.read_file(path)
    header = decode_segment_header(data)
    if not isinstance(header, SegmentHeader) or header.base_seq != base_seq:
        if isinstance(header, HeaderCorruption):
            reason = header.reason
        elif isinstance(header, SegmentHeader):
            reason = "segment header does not match its file name"
        else:
            reason = "segment header cut short"
        problems.append(
            Problem(
                run_id=run_id,
                path=path,
                offset=0,
                reason=reason,
                first_seq=base_seq,
                last_seq=expected_last,
            )
        )
        return problems, base_seq - 1
    pos, seq = SEGMENT_HEADER_SIZE, base_seq
    while pos < len(data):
        result = scan(data[pos:], pos, seq, max_record_bytes)
        seq = result.last_seq + 1
        damage = result.damage
        if damage is None:
            break
        later = find_frames_after(data, 0, damage.offset, seq, max_record_bytes)
        problems.append(
            Problem(
                run_id=run_id,
                path=path,
                offset=damage.offset,
                reason=damage.reason,
                first_seq=seq,
                last_seq=later[0].seq - 1 if later else expected_last,
            )
        )
        if not later:
            return problems, seq - 1
        pos, seq = later[0].offset, later[0].seq
    if expected_last is not None and seq - 1 < expected_last:
        problems.append(
            Problem(
                run_id=run_id,
                path=path,
                offset=len(data),
                reason="segment ends early; seqs are missing",
                first_seq=seq,
                last_seq=expected_last,
            )
        )
    return problems, seq - 1


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
    from .codec import DEFAULT_MAX_RECORD_BYTES
    from .log import check_directory, list_run_ids

    fs = fs or _default_fs()
    check_directory(fs, path)
    limit = max_record_bytes or DEFAULT_MAX_RECORD_BYTES
    problems: list[Problem] = []
    run_ids = [run_id] if run_id is not None else list_run_ids(fs, path)
    for done, rid in enumerate(run_ids, 1):
        run_dir = f"{path}/runs/{rid}"
        if not fs.is_dir(run_dir):
            from .errors import NotFoundError

            raise NotFoundError(rid)
        bases = list_segments(fs, run_dir, writable=False)
        if bases and bases[0] != 1:
            problems.append(
                Problem(
                    run_id=rid,
                    path=f"{run_dir}/{bases[0]:020d}.seg",
                    offset=0,
                    reason="run does not start at seq 1",
                    first_seq=1,
                    last_seq=bases[0] - 1,
                )
            )
        for i, base in enumerate(bases):
            expected = bases[i + 1] - 1 if i + 1 < len(bases) else None
            found, _ = verify_segment(fs, rid, f"{run_dir}/{base:020d}.seg", base, expected, limit)
            problems.extend(found)
        if progress is not None:
            progress(done)
    return problems


def recover(
    path: str, *, fs: FileSystem | None = None, event_type: Any = None
) -> list[RecoveryReport]:
    """Repair a log directory: salvage every run's valid prefix, rebuild indexes, drop leftovers.

    Takes the writer lock, so it raises ``LockedError`` while a writer has the log open.
    Returns every repair made, with the seq ranges dropped.
    """
    from . import log as log_module

    kwargs: dict[str, Any] = {"recovery": "salvage", "fsync": "always"}
    if event_type is not None:
        kwargs["event_type"] = event_type
    with log_module.open(path, fs=fs, **kwargs) as log:
        for rid in log.runs():
            log.last_seq(rid)
        return list(log.recovery_reports)


def _default_fs() -> FileSystem:
    from ._fs import OS_FS

    return OS_FS
