"""The read path: from a run's snapshot to one page of envelopes, seeking instead of scanning.

Strategy and invariants
- A read works on a snapshot taken under the run's view lock (``Run.snapshot``): the
  segments that cover the page, each with the size and last seq that were acknowledged. It
  never sees a frame past what was acknowledged, and never waits for a writer's fsync.
- ``read_page`` bisects the segments, then each segment's sparse index, walks at most one
  index interval of frame headers (no checksum, no copy) to the first wanted frame, then
  verifies every wanted frame and collects the payloads back to back into one buffer that
  ``schema`` decodes in a single msgspec call.
- Readers open and close their own descriptors per call, so the writer's descriptor LRU can
  never pull one from under them.
- A read-only log has no writer to tell it of appends: ``follow`` verifies what another
  process added to a run since the last look, and only whole batches become visible, never
  past the writer's watermark (read before the frames, so not even midway through a look).
  A view the files no longer continue (frames cut off after a failed fsync and written
  again) is loaded afresh.
- An index point that names another seq is a stale cache entry, not damage: it is dropped and
  the walk restarts from the previous point. Anything else that does not verify raises
  ``CorruptionError`` with the file, the offset and the seqs affected; a record that fails its
  checksum is never returned.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Protocol, TypeVar

from ._fs import FileSystem
from .durability import logger
from .errors import CorruptionError, NotFoundError
from .events import Envelope
from .format import (
    FRAME_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    STATE_DELETED,
    STATE_FRAMES_ACKED,
    ZERO_FILL,
    FrameCorruption,
    RunState,
    frame_checksum,
    frame_length,
    segment_name,
)
from .frames import (
    walk_frames,
)
from .index import SparseIndex
from .layout import list_segments
from .scan import scan
from .schema import EnvelopeCodec, new_page
from .segment import Segment
from .statefile import StateFile

__all__ = ["Followed", "clamp_to_state", "fingerprint", "follow", "read_page", "watermark"]

E = TypeVar("E")


def read_page(
    fs: FileSystem,
    codec: EnvelopeCodec[E],
    run_id: uuid.UUID,
    plan: list[tuple[Segment, int, int]],
    first: int,
    last: int,
    max_record_bytes: int,
    index_lock: threading.Lock,
) -> list[Envelope[E]]:
    """Read seqs ``first..last`` from the planned segments (``(segment, size, last_seq)``)."""
    page = new_page()
    seq = first
    for seg, size, seg_last in plan:
        if seq > min(last, seg_last):
            continue
        end = min(last, seg_last)
        seq = _read_segment(
            fs, seg, size, seg_last, seq, end, max_record_bytes, page, index_lock, run_id
        )
        if seq > last:
            break
    result: list[Envelope[E]] = codec.decode_page(page, seq - first)
    return result


def _read_segment(
    fs: FileSystem,
    seg: Segment,
    size: int,
    seg_last: int,
    first: int,
    last: int,
    max_record: int,
    page: bytearray,
    index_lock: threading.Lock,
    run_id: uuid.UUID,
) -> int:
    """Append payloads of seqs ``first..last`` of ``seg`` (up to ``size``) to ``page``.

    Returns the next seq to read. Starts at the sparse index point at or before ``first``;
    the skipped frames (at most one index interval) are neither checksummed nor copied.
    """
    expected, pos = seg.index.floor(first)
    frames = max(1, seg_last - seg.base_seq + 1)
    avg = max(64, (size - SEGMENT_HEADER_SIZE) // frames)
    chunk = seg.index.interval + avg * (last - first + 1) + 1024
    try:
        fd = fs.open_read(seg.path)
    except FileNotFoundError:
        raise NotFoundError(run_id) from None  # deleted while we read
    try:
        while expected <= last and pos < size:
            want = min(chunk, size - pos)
            buf = fs.pread(fd, want, pos)
            if len(buf) < want:  # cut (or replaced) since the snapshot: never spin on it
                reason = f"file ends at {pos + len(buf)}, before its acknowledged size {size}"
                raise _damage(seg, pos + len(buf), reason, expected, seg_last)
            bpos, expected, stop = walk_frames(buf, 0, expected, first, last, max_record, page)
            if stop is None:
                break
            if stop is ZERO_FILL:
                reason = "zeros where a frame must start"
                raise _damage(seg, pos + bpos, reason, expected, seg_last)
            if isinstance(stop, FrameCorruption):
                if bpos == 0 and pos > SEGMENT_HEADER_SIZE and stop.seq != expected:
                    # The index point names another seq: the cache is stale, not the data.
                    # Forget it from there and walk from the previous point.
                    logger.warning("stale index entry in %s at %d; dropped", seg.path, pos)
                    with index_lock:
                        seg.index.truncate(pos)
                    expected, pos = seg.index.floor(first)
                    continue
                raise _damage(seg, pos + stop.offset, stop.reason, expected, seg_last)
            if bpos == 0:  # one frame is larger than the chunk read, or zeros
                needed = FRAME_HEADER_SIZE
                if len(buf) >= FRAME_HEADER_SIZE:
                    needed += frame_length(buf, 0)
                if pos + needed > size or len(buf) >= needed:
                    raise _damage(seg, pos, "frame runs past the segment end", expected, seg_last)
                chunk = needed
                continue
            pos += bpos
            chunk = max(chunk, 256 * 1024)
    finally:
        fs.close(fd)
    if expected <= last:
        raise _damage(seg, pos, "segment ends before its last seq", expected, seg_last)
    return expected


def _damage(seg: Segment, offset: int, reason: str, seq: int, last: int) -> CorruptionError:
    return CorruptionError(reason, path=seg.path, offset=offset, first_seq=seq, last_seq=last)


# --- following another process's appends (read-only logs) ---------------------------------

#: Bytes a follower reads past its known end per look (more when frames keep coming).
_FOLLOW_WINDOW = 256 * 1024


class Followed(Protocol):
    """What ``follow`` reads and updates of a run (``Run`` has it)."""

    dir: str
    loaded: bool
    segments: list[Segment]
    bases: list[int]
    last_seq: int
    visible_seq: int
    tail_payload: bytes | None
    fingerprint: bytes | None
    view_lock: threading.Lock
    commit_lock: threading.Lock
    state_file: StateFile

    def reload(self, watermark: Callable[[], int | None] | None = None) -> None: ...


def follow(fs: FileSystem, run: Followed, boot: bytes, max_record: int) -> None:
    """Read-only: pick up frames and segments another process added since the last look.

    A run deleted (and perhaps re-created) behind the reader is noticed by its first frame's
    checksum (its fingerprint), a shrunken last segment or its state record, and loaded
    afresh. So is a view the files no longer continue: frames this view took in past the
    writer's watermark may have been cut off after a failed fsync and the seqs written again
    differently. While the run's state record is current (written in this boot by a writer
    that keeps a watermark), only frames up to its acknowledged seq are visible.
    """
    with run.commit_lock:
        fresh = not run.loaded or not run.segments
        if fresh or fingerprint(fs, run.dir) != run.fingerprint:
            _reload(fs, run, boot)
            return
        # Read before the frames: what it acknowledges is acknowledged whatever they hold.
        cap = watermark(run, boot)
        for base in list_segments(fs, run.dir, writable=False):
            if base <= run.bases[-1]:
                continue
            # A later segment exists, so this one was sealed: it must end cleanly, just
            # before the next one's first seq.
            if _extend_tail(fs, run, max_record, cap) is not True or run.last_seq + 1 != base:
                _reload(fs, run, boot)
                return
            seg = Segment(run.dir, base, SparseIndex(base, run.segments[-1].index.interval))
            with run.view_lock:
                run.segments.append(seg)
                run.bases.append(base)
        if _extend_tail(fs, run, max_record, cap) is None or clamp_to_state(run, boot):
            _reload(fs, run, boot)


def _reload(fs: FileSystem, run: Followed, boot: bytes) -> None:
    run.reload(lambda: watermark(run, boot))
    run.fingerprint = fingerprint(fs, run.dir) if run.segments else None
    clamp_to_state(run, boot)


def _current_state(run: Followed, boot: bytes) -> RunState | None:
    """The run's state record while it holds a watermark: written in this boot by a writer
    that keeps one. None otherwise: then complete frames are acknowledged ones."""
    sf = run.state_file
    if not sf.mapped and not sf.open(create=False):
        return None
    state = sf.read()
    if state is None or not boot or state.boot != boot or state.flags & STATE_FRAMES_ACKED:
        return None
    return state


def watermark(run: Followed, boot: bytes) -> int | None:
    """The run's last acknowledged seq per its state record (0 once deleted); None when the
    record holds no watermark."""
    state = _current_state(run, boot)
    if state is None:
        return None
    return 0 if state.flags & STATE_DELETED else state.acked


def clamp_to_state(run: Followed, boot: bytes) -> bool:
    """Hold the run's visible seq to its writer's watermark; True if the run was deleted."""
    state = _current_state(run, boot)
    if state is None:
        return False
    if state.flags & STATE_DELETED:
        run.state_file.close()
        return True
    with run.view_lock:
        run.visible_seq = min(run.last_seq, state.acked)
    return False


def fingerprint(fs: FileSystem, run_dir: str) -> bytes | None:
    """The checksum field of the run's first frame: it identifies the run's incarnation."""
    try:
        fd = fs.open_read(f"{run_dir}/{segment_name(1)}")
    except FileNotFoundError:
        return None
    try:
        return frame_checksum(fs.pread(fd, FRAME_HEADER_SIZE, SEGMENT_HEADER_SIZE), 0)
    finally:
        fs.close(fd)


def _extend_tail(
    fs: FileSystem, run: Followed, max_record: int, cap: int | None = None
) -> bool | None:
    """Verify frames appended to the last segment; make them visible up to seq ``cap``.

    True when it reached the data end; False when it stopped at a frame or batch still being
    written; None when the file no longer continues this view (it is gone, shorter than what
    the view read, or the bytes after the view's end are not the next frame), so the run
    must be loaded afresh.
    """
    seg = run.segments[-1]
    try:
        fd = fs.open_read(seg.path)
    except FileNotFoundError:
        return None
    try:
        size = fs.size(fd)
        if size < seg.size:
            if seg.last_seq < seg.base_seq and seg.size == SEGMENT_HEADER_SIZE:
                return False  # a new segment whose header is not written yet
            return None
        window = _FOLLOW_WINDOW
        while size > seg.size:
            start = seg.size
            buf = fs.pread(fd, min(size - start, window), start)
            interval = seg.index.interval
            result = scan(buf, start, seg.last_seq + 1, max_record, interval, seg.index.last_offset)
            seg.index.extend(result.index_points, result.batch_start)
            if result.batch_start > start:
                with run.view_lock:
                    seg.size = result.batch_start
                    seg.last_seq = result.batch_start_seq
                    run.last_seq = seg.last_seq
                    run.visible_seq = seg.last_seq if cap is None else min(seg.last_seq, cap)
                    if result.last_payload is not None:
                        run.tail_payload = result.last_payload
            damage = result.damage
            if damage is not None and damage.kind == "corrupt":
                # Not a frame being written (that is "short"): what this view read past
                # its end was replaced, or the file is damaged; recovery will tell.
                return None
            if result.limit >= size:  # the window reached the end of the file
                return damage is None and result.batch_start == result.end
            if damage is None and result.end < result.limit:
                return True  # zeros: the preallocated tail
            if damage is not None and not damage.short:
                return False
            if seg.size == start:
                window *= 2  # a frame or batch larger than the window
        return size == seg.size
    finally:
        fs.close(fd)
