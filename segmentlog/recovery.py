"""Recovery of a run after a crash: judge what its files hold, and have ``repair`` act on it.

Strategy and invariants
- A run is recovered on its first touch after open (never at open), so opening a directory
  with many runs costs nothing per run. Only the facade's first touch of a run and
  ``maintenance`` call in here.
- Sealed segments were fsynced when they were sealed, so any damage in them is corruption.
  Their tail is checked (from the last index point) so that a missing or short segment is
  reported as a lost seq range, never silently renumbered. Outside ``salvage`` damaged frames
  there (or a missing tail) do not fail the run's first touch: the segment keeps its extent and
  the seq range its successor's name implies, and the read that reaches the damage raises
  ``CorruptionError`` with the file, offset and seq, so every page before it still serves.
  Rejected: raising at the first touch, which made a run unreadable as a whole for damage past
  its segment's last index point, while the same damage before that point (which the tail
  check never sees) cost only the pages that reach it.
- The last segment is validated from its last trustworthy index point to its end, also after
  a clean close, since a file can be damaged while the log is closed. Zeros after its last
  frame are the preallocated tail: a clean end.
- Damage in the last segment is classified by what follows it (FORMAT.md section 7):
  * nothing verifies after it -> a *torn tail* (the writer died mid-write);
  * frames verify after it, but none carries a durable mark past it -> the shape a power loss
    leaves in unsynced bytes, also treated as a torn tail;
  * a later frame's durable mark lies past it -> *corruption*: those bytes had been synced.
  ``strict`` cuts only a short frame or an unfinished batch at the very end and raises for
  everything else; ``tolerate_tail`` cuts torn tails and raises ``CorruptionError`` for
  corruption; ``salvage`` keeps the valid prefix.
- What a cut drops goes to quarantine whenever it holds a frame that verifies; only bytes
  in which nothing verifies are cut in place (``repair.py``). Once a segment is cut, the
  run ends there and every later segment is quarantined whole.
- Salvage checks every frame of every segment, not just the tails.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from ._fs import FileSystem
from .errors import CorruptionError
from .format import (
    SEGMENT_HEADER_SIZE,
    FramedRecord,
    HeaderCorruption,
    SegmentHeader,
    decode_segment_header,
)
from .frames import (
    read_frame,
)
from .index import SparseIndex
from .layout import Layout, list_segments, segment_path
from .options import RecoveryMode
from .repair import RecoveryReport, Repairer
from .scan import ScanResult, find_frames_after, scan
from .segment import Segment

__all__ = ["RecoveredRun", "recover_run"]

logger = logging.getLogger("segmentlog")


@dataclass
class RecoveredRun:
    """A run's state as established by recovery."""

    segments: list[Segment] = field(default_factory=list)
    last_seq: int = 0
    last_payload: bytes | None = None
    reports: list[RecoveryReport] = field(default_factory=list)


#: Outcomes of recovering one segment.
_WHOLE = "whole"  # intact: the run may go on in the next segment
_CUT = "cut"  # kept up to damage: the run ends in this segment
_REMOVED = "removed"  # taken out whole: the run ends before it


def recover_run(
    fs: FileSystem,
    layout: Layout,
    run_id: uuid.UUID,
    *,
    mode: RecoveryMode,
    max_record_bytes: int,
    index_interval: int,
    writable: bool,
    durable: bool,
    dry_run: bool = False,
) -> RecoveredRun:
    """Establish a run's segments, last seq and last record; repair per ``mode``.

    ``durable`` makes in-place cuts durable at once (the log's policy fsyncs); ``dry_run``
    (with ``writable=False``) reports every act under its own name. Raises
    ``CorruptionError`` when ``mode`` does not allow the damage found, and ``RepairError``
    when a repair it may make fails.
    """
    judge = _Judge(
        fs, layout, run_id, mode, max_record_bytes, index_interval, writable, durable, dry_run
    )
    judge.run()
    return judge.out


class _Judge:
    def __init__(
        self,
        fs: FileSystem,
        layout: Layout,
        run_id: uuid.UUID,
        mode: RecoveryMode,
        max_record_bytes: int,
        interval: int,
        writable: bool,
        durable: bool,
        dry_run: bool,
    ) -> None:
        self.fs = fs
        self.run_id = run_id
        self.run_dir = layout.run_dir(run_id)
        self.mode = mode
        self.salvage = mode is RecoveryMode.SALVAGE
        self.max_record = max_record_bytes
        self.interval = interval
        self.writable = writable
        self._held_points: tuple[list[int], list[int]] = ([], [])
        self.repair = Repairer(
            fs, layout, run_id, writable=writable, durable=durable, dry_run=dry_run
        )
        self.out = RecoveredRun(reports=self.repair.reports)
        #: Sealed segments kept with damage that reads will meet, and the error they raise.
        self.deferred: dict[int, CorruptionError] = {}

    def corrupt(
        self, reason: str, path: str, offset: int, first: int | None, last: int | None
    ) -> CorruptionError:
        return CorruptionError(reason, path=path, offset=offset, first_seq=first, last_seq=last)

    def run(self) -> None:
        bases = list_segments(self.fs, self.run_dir, self.writable)
        if bases and bases[0] != 1:
            reason = "run does not start at seq 1"
            if not self.salvage:
                raise self.corrupt(reason, self._path(bases[0]), 0, 1, bases[0] - 1)
            self._quarantine_rest(bases, 0, reason)
            return
        for i, base in enumerate(bases):
            next_base = bases[i + 1] if i + 1 < len(bases) else None
            status = self._segment(base, next_base)
            if status is _WHOLE:
                continue
            self._quarantine_rest(bases, i + 1, "after damage in an earlier segment")
            break
        if self.out.segments:
            last = self.out.segments[-1]
            error = self.deferred.get(last.base_seq)
            if error is not None:
                # Its successor held no frame: the damaged segment would take new appends.
                raise error
            self.out.last_seq = last.last_seq

    def _path(self, base: int) -> str:
        return segment_path(self.run_dir, base)

    def _quarantine_rest(self, bases: list[int], start: int, reason: str) -> None:
        for i in range(start, len(bases)):
            base = bases[i]
            last = bases[i + 1] - 1 if i + 1 < len(bases) else None
            size = self.fs.file_size(self._path(base))
            self.repair.quarantine_segment(base, size, reason, base, last)

    def _segment(self, base: int, next_base: int | None) -> str:
        fs = self.fs
        path = self._path(base)
        fd = fs.open_read(path)
        try:
            size = fs.size(fd)
            header = decode_segment_header(fs.pread(fd, SEGMENT_HEADER_SIZE, 0))
            if not isinstance(header, SegmentHeader):
                bad = None if not isinstance(header, HeaderCorruption) else header
                return self._bad_header(base, fs.pread(fd, size, 0), bad, next_base)
            seg = Segment(self.run_dir, base, SparseIndex(base, self.interval))
            seg.size = seg.allocated = size
            if header.base_seq != base or header.run_id != self.run_id:
                reason = "segment header does not match its file name"
                if not self.salvage:
                    raise self.corrupt(reason, path, 0, base, None)
                self.repair.quarantine_segment(base, size, reason, base, None)
                return _REMOVED
            index_state = self._load_index(seg, size)
            if self.salvage:  # salvage checks every frame, not just the tail
                seg.index = SparseIndex(base, self.interval)
                index_state = -1
            start_seq, start_off, buf = self._tail_start(seg, fd, size, next_base is not None)
        finally:
            fs.close(fd)
        result = scan(buf, start_off, start_seq, self.max_record, self.interval)
        if next_base is None:
            self._judge_last(seg, buf, start_off, result)
        elif not self._judge_sealed(seg, result, next_base):
            self.out.segments.append(seg)
            return _CUT
        seg.last_seq = result.last_seq
        if result.last_payload is not None:
            self.out.last_payload = result.last_payload
        self._fix_index(seg, result, index_state)
        # Sealed segments were fsynced when sealed. The last one may hold bytes a crashed
        # process wrote but never synced; rejected: an fdatasync per run at recovery (it
        # dominated reopening after a crash). Claiming nothing keeps later frames' durable
        # marks honest until the writer's next fsync covers the whole file.
        seg.synced = seg.size if next_base is not None else 0
        self.out.segments.append(seg)
        return _WHOLE

    def _load_index(self, seg: Segment, size: int) -> int:
        """Load the index; -1 when missing, its valid length, or ``-2 - valid`` if damaged."""
        try:
            data = self.fs.read_file(seg.index_path)
        except FileNotFoundError:
            return -1
        index, valid = SparseIndex.from_bytes(data, seg.base_seq, self.interval, size)
        seg.index = index
        seg.index_file = True
        self._held_points = (list(index.seqs), list(index.offsets))
        return valid if valid == len(data) else -valid - 2

    def _tail_start(self, seg: Segment, fd: int, size: int, sealed: bool) -> tuple[int, int, bytes]:
        """Choose where to start validating: the last trustworthy index point.

        A point is trustworthy when its frame verifies and, in the last segment, its durable
        mark reaches it: bytes between a frame's durable mark and the frame itself were
        unsynced when it was written, so a power loss may have holed them, and they are
        scanned too. Returns the start seq, the start offset and the bytes from there to EOF.
        """
        index = seg.index
        while len(index):
            seq, off = index.seqs[-1], index.offsets[-1]
            buf = self.fs.pread(fd, size - off, off)
            rec = read_frame(buf, 0, self.max_record)
            if not (isinstance(rec, FramedRecord) and rec.seq == seq):
                index.drop_last()
            elif rec.durable < off and not sealed:
                index.truncate(rec.durable + 1)
            else:
                return seq, off, buf
        start = SEGMENT_HEADER_SIZE
        return seg.base_seq, start, self.fs.pread(fd, size - start, start)

    def _cut(
        self, seg: Segment, at: int, last_kept: int, reason: str, last: int | None, keep: bool
    ) -> None:
        """Cut ``seg`` at ``at``; ``keep``: the dropped bytes hold a frame that verifies."""
        first = last_kept + 1
        lost = last is None or last >= first
        span = (first, last) if lost else (None, None)
        if keep:
            self.repair.quarantine_tail(seg.base_seq, at, seg.size, reason, *span)
        else:
            self.repair.truncate(seg.path, at, seg.size, reason, *span)
        seg.size = seg.allocated = at
        seg.last_seq = last_kept
        seg.index.truncate(at)
        if seg.index_file:
            self.repair.rewrite_index(seg.base_seq, seg.index.to_bytes(), -1)  # drop stale points

    def _judge_sealed(self, seg: Segment, result: ScanResult, next_base: int) -> bool:
        expected_last = next_base - 1
        whole = result.damage is None and result.batch_start == result.end
        if whole and result.last_seq == expected_last:
            seg.size = result.end
            return True
        if result.damage is not None:
            reason, offset = result.damage.reason, result.damage.offset
        elif result.last_seq < expected_last:
            reason = (
                f"segment ends at seq {result.last_seq}; seqs up to {expected_last} are missing"
            )
            offset = result.end
        else:
            reason, offset = "unfinished batch at the end of a sealed segment", result.batch_start
        first = (
            result.last_seq + 1 if result.batch_start == result.end else result.batch_start_seq + 1
        )
        if not self.salvage:
            error = self.corrupt(reason, seg.path, offset, first, expected_last)
            if result.damage is None and result.last_seq >= expected_last:
                raise error  # every seq verifies, but a batch is left unfinished
            # Left for the reads that reach it (see the module docstring).
            logger.warning("recovery: %s; reads that reach it will raise", error)
            self.deferred[seg.base_seq] = error
            result.last_seq = expected_last
            return True
        keep = result.batch_start < result.end or result.damage is not None
        self._cut(seg, result.batch_start, result.batch_start_seq, reason, expected_last, keep)
        return False

    def _judge_last(self, seg: Segment, buf: bytes, start_off: int, result: ScanResult) -> None:
        damage = result.damage
        if damage is None:
            if result.batch_start < result.end:
                reason = "unfinished batch at end of file"
                dropped = result.last_seq
                self._cut(seg, result.batch_start, result.batch_start_seq, reason, dropped, True)
            else:
                seg.size = result.end
            result.last_seq = result.batch_start_seq
            return
        later = find_frames_after(
            buf, start_off, damage.offset, result.last_seq + 1, self.max_record
        )
        first = result.batch_start_seq + 1
        last: int | None = max((f.seq for f in later), default=damage.claimed_seq)
        if last is not None and last < first:
            last = None
        if not later:
            allowed = damage.short or self.mode is not RecoveryMode.STRICT
            reason = f"torn tail: {damage.reason}"
        elif max(f.durable for f in later) <= damage.offset:
            allowed = self.mode is not RecoveryMode.STRICT
            reason = f"unsynced tail damaged by power loss: {damage.reason}"
        else:
            allowed = self.salvage
            reason = damage.reason
        if not allowed:
            raise self.corrupt(reason, seg.path, damage.offset, first, last)
        keep = bool(later) or result.batch_start < damage.offset
        self._cut(seg, result.batch_start, result.batch_start_seq, reason, last, keep)
        result.last_seq = result.batch_start_seq

    def _bad_header(
        self, base: int, data: bytes, header: HeaderCorruption | None, next_base: int | None
    ) -> str:
        reason = "segment header cut short" if header is None else header.reason
        path = self._path(base)
        frames = find_frames_after(data, 0, -1, base, self.max_record)
        first = base if frames else None
        last = max((f.seq for f in frames), default=None)
        if not frames:
            # An interrupted creation (the header never reached the disk) or, in a sealed
            # segment, a header damaged with nothing readable after it.
            if next_base is not None and not self.salvage:
                raise self.corrupt(reason, path, 0, base, next_base - 1)
            if not data and not self.writable and next_base is None:
                return _REMOVED  # a live writer's new segment, before its first frames

            self.repair.remove(base, len(data), reason)
            return _REMOVED
        synced = max(f.durable for f in frames) > 0
        if not self.salvage and (
            next_base is not None or synced or self.mode is RecoveryMode.STRICT
        ):
            raise self.corrupt(reason, path, 0, first, last)
        self.repair.quarantine_segment(base, len(data), reason, first, last)
        return _REMOVED

    def _fix_index(self, seg: Segment, result: ScanResult, index_state: int) -> None:
        """Add the index points the scan found, rewriting the index file when they (or the
        points dropped as untrusted before the scan) make it differ from what is held."""
        added = seg.index.extend(result.index_points, seg.size)
        if not self.writable or not (added or index_state < -1):
            return
        if not seg.index_file and seg.size < seg.index_file_min:
            return  # a small segment keeps its index in memory (segment.write_index)
        if index_state >= 0 and self._held_points == (seg.index.seqs, seg.index.offsets):
            return  # the rescan found exactly the points the file holds (the usual reopen)
        self.repair.rewrite_index(seg.base_seq, seg.index.to_bytes(), -index_state - 2)
        seg.index_file = True
