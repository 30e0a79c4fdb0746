"""Sharing runs between processes: per-run writer locks and the run's shared state record.

Strategy and invariants
- Writers that open a directory with ``multiprocess=True`` exclude each other per run with
  an open-file-description lock on one byte of ``<dir>/LOCKS``, at an offset hashed from the
  run id (``RunLocks``). OFD locks belong to the descriptor, so closing some other
  descriptor of the file never drops one (the POSIX ``fcntl`` pitfall), and a process that
  dies releases its locks. Two runs whose hashes collide simply share a lock: the process
  counts its holders per slot, so one run never releases another's lock.
- ``StateFile`` maps a run's ``STATE`` file (FORMAT.md): the active segment, the data end,
  the last acknowledged seq, the run's epoch (its incarnation), the boot the record was
  written in, and a busy byte that a writer sets before its first write under the run's lock
  and clears when it releases the lock, after the record covers everything it wrote. Mapped,
  reading and updating it costs no system call.
- The record is a cache and is never fsynced: a record of another boot (a power loss may
  have lost its last updates), of another epoch, unreadable, or left busy by a writer that
  died makes the next lock holder recover the run from its files.
- Readers in any process deliver frames only up to ``acked`` while the record is current
  (same boot, no ``FRAMES_ACKED`` flag), so a frame whose fsync failed is never delivered.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ._fs import FileSystem
from .format import (
    STATE_DELETED,
    STATE_FRAMES_ACKED,
    RunState,
    xxh3_64,
)
from .frames import (
    walk_frames,
)
from .keys import KeyIndex, keys_of
from .scan import scan
from .schema import new_page
from .segment import Segment
from .statefile import StateFile, new_epoch

__all__ = ["LOCKS", "RunLock", "RunLocks", "SharedRun"]

#: The file whose bytes carry the per-run writer locks.
LOCKS = "LOCKS"
_SLOT_MASK = (1 << 62) - 1


class RunLock:
    """One run's lock between processes, and the in-process lock that guards its slot."""

    __slots__ = ("_guard", "_lock", "_unlock")

    def __init__(self, guard: threading.Lock, lock: Any, unlock: Any) -> None:
        self._guard = guard
        self._lock = lock
        self._unlock = unlock

    def acquire(self) -> None:
        """Hold the run against other processes, waiting for them."""
        self._guard.acquire()
        try:
            self._lock()
        except BaseException:
            self._guard.release()
            raise

    def release(self) -> None:
        """Let other processes have the run."""
        try:
            self._unlock()
        finally:
            self._guard.release()


class RunLocks:
    """The directory's per-run writer locks, shared by every multiprocess writer."""

    def __init__(self, fs: FileSystem, path: str) -> None:
        self._fs = fs
        self.fd = fs.open_append(f"{path}/{LOCKS}", create=True)
        self._mu = threading.Lock()
        self._guards: dict[int, threading.Lock] = {}

    @staticmethod
    def slot(run_id: uuid.UUID) -> int:
        """The byte of ``LOCKS`` that stands for ``run_id``."""
        return int(xxh3_64(run_id.bytes)) & _SLOT_MASK

    def for_run(self, run_id: uuid.UUID) -> RunLock:
        """The lock of ``run_id``. Runs whose slots collide share one in-process guard, so
        threads of this process never hold one slot twice (and never release it under
        each other); a lock is only ever taken alone, never nested."""
        slot = self.slot(run_id)
        with self._mu:
            guard = self._guards.setdefault(slot, threading.Lock())
        lock, unlock = self._fs.range_lock(self.fd, slot)
        return RunLock(guard, lock, unlock)

    def close(self) -> None:
        """Close the lock file (releasing every lock of this process)."""
        self._fs.close(self.fd)


# --- a run among processes ------------------------------------------------------------------


class SharedRun:
    """The part of ``Run`` that keeps it in step with other processes (a mixin).

    Every method holds the run's ``commit_lock``. ``hold`` takes the run's lock between
    processes (``multiprocess=True``) and catches up with what other writers did; the state
    record is published after every commit, under the lock, by ``publish_state``.
    """

    ctx: Any
    id: uuid.UUID
    dir: str
    segments: list[Segment]
    last_seq: int
    visible_seq: int
    tail_payload: bytes | None
    view_lock: threading.Lock
    commit_lock: threading.Lock
    state_file: StateFile
    keys: KeyIndex | None
    epoch: int
    loaded: bool
    run_lock: RunLock
    _prefix: bytes = b""
    _prefix_epoch: int = -1
    #: An exclusive durable writer has loaded the run but not yet claimed its state record
    #: (``claim_state``, done before its first write).
    state_pending: bool = False
    #: True between ``enter`` and ``leave``: this process holds the run against the others,
    #: and the run's busy byte stays set, however many commits, rolls and publishes happen.
    holding: bool = False

    if TYPE_CHECKING:  # provided by the other parts of Run

        def adopt(
            self,
            segments: list[Segment],
            last_seq: int,
            last_payload: bytes | None,
            writable: bool,
            cap: int | None = None,
        ) -> None: ...

        def close_files(self) -> None: ...

    def enter(self) -> None:
        """Hold the run against other processes and bring this view up to date; ``leave``
        must follow."""
        self.run_lock.acquire()
        try:
            sf = self.state_file
            if not sf.unchanged():
                self.catch_up()
            sf.set_busy()
            self.holding = True
        except BaseException:
            self.run_lock.release()
            raise

    def leave(self) -> None:
        """Release the run to other processes.

        The busy byte is cleared only here: a commit publishes the record but leaves the
        byte set, since a group commit may go on to roll the segment and write more under
        the same hold. A process killed anywhere before this point leaves the run busy, and
        the next holder recovers it instead of trusting a record that misses those writes.
        After an I/O error (fail-stop) the byte stays set too.
        """
        try:
            if self.ctx.state.failed is None:
                # The record covers this view (catch_up remembered or published it, and
                # every commit published): nothing written under this hold is unpublished.
                self.state_file.clear_busy()
        finally:
            self.holding = False
            self.run_lock.release()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """``enter`` ... ``leave`` as a context manager (for the rarer operations)."""
        self.enter()
        try:
            yield
        finally:
            self.leave()

    def load(self) -> None:
        """First touch: recover the run from its files (under its lock between processes)."""
        if self.ctx.locks is None:
            self.reload()
            return
        self.run_lock.acquire()
        try:
            self.reload()
        finally:
            self.run_lock.release()

    def reload(self, watermark: Callable[[], int | None] | None = None) -> None:
        """Forget this view, recover the run from its files, and publish the result.

        ``watermark`` (a read-only follower's) gives the last acknowledged seq, or None when
        every complete frame is: it is read before the frames and caps the new view, so no
        frame past it is visible even for a moment.
        """
        ctx = self.ctx
        self.close_files()
        self.state_pending = False
        cap = None if watermark is None else watermark()
        recovered = ctx.recover(self)
        segments = recovered.segments if recovered is not None else []
        if recovered is None:
            self.adopt([], 0, None, ctx.writable)
        else:
            last = recovered.last_seq
            self.adopt(segments, last, recovered.last_payload, ctx.writable, cap)
        sf = self.state_file
        if not ctx.writable:
            sf.open(create=False)
            return
        if not segments:
            self.epoch = 0
            if recovered is not None:
                # A run whose first append failed (or a crash before its first frame) holds
                # no event: remove what is left, so that it is not listed. Processes that
                # hold its state record are told first.
                self.mark_deleted()
                with contextlib.suppress(OSError):
                    ctx.fs.remove_quietly(sf.path)
                    ctx.fs.rmdir(self.dir)
            return
        if ctx.keep_state:
            if ctx.locks is None:
                # The only writer: claim the record before this process first writes the
                # run (``active_segment``), so that a read creates no file and needs no
                # free space. Until then the record says what the last writer left.
                self.state_pending = True
            else:
                self.claim_state()
        elif sf.open(create=False):
            # A writer that acknowledges frames as it writes them keeps no watermark: say
            # so, so that readers do not hold to one a durable writer left behind.
            sf.write(RunState(STATE_FRAMES_ACKED, ctx.boot, 0, 0, 0, 0))
            sf.close()

    def claim_state(self) -> None:
        """Open (or create) the run's state record, take this incarnation's epoch from it,
        and publish this view: before this process's first write to the run."""
        ctx = self.ctx
        sf = self.state_file
        sf.open(create=True)
        old = sf.read()
        fresh = (
            old is None
            or old.boot != ctx.boot
            or old.flags & STATE_DELETED
            or old.base == 0  # reset: no commit of this incarnation was acknowledged
        )
        self.epoch = new_epoch() if fresh or old is None else old.epoch
        self.state_pending = False
        self.publish_state()

    def publish_state(self) -> None:
        """Store this process's view of the run in its state record (the busy byte stays set
        while this process holds the run: ``leave`` clears it)."""
        sf = self.state_file
        if not self.segments:
            return
        if not sf.mapped:
            sf.open(create=True)
        seg = self.segments[-1]
        if self._prefix_epoch != self.epoch:
            self._prefix = StateFile.prefix(0, self.ctx.boot, self.epoch)
            self._prefix_epoch = self.epoch
        sf.publish(self._prefix, seg.base_seq, seg.size, self.visible_seq, self.holding)

    def catch_up(self) -> None:
        """Under the run's lock: take in what other processes did since this view."""
        sf = self.state_file
        if not sf.mapped and not sf.open(create=False):
            if self.segments or self.ctx.fs.is_dir(self.dir):
                self.reload()  # deleted, or created by another process
            return
        if not sf.changed():
            return
        state = sf.read()
        seg = self.segments[-1] if self.segments else None
        if (
            seg is None
            or state is None
            or sf.busy  # a writer died between its write and its update: recover
            or state.boot != self.ctx.boot
            or state.epoch != self.epoch
            or state.flags & (STATE_DELETED | STATE_FRAMES_ACKED)
            or state.base != seg.base_seq
            or state.end < seg.size
            or not self._extend(seg, state.end, state.acked)
        ):
            self.reload()
            return
        sf.remember()

    def _extend(self, seg: Segment, end: int, acked: int) -> bool:
        """Verify the frames another process appended to ``seg`` up to ``end``."""
        if end == seg.size:
            return acked == seg.last_seq
        fs = self.ctx.fs
        fd = fs.open_read(seg.path)
        try:
            buf = fs.pread(fd, end - seg.size, seg.size)
        finally:
            fs.close(fd)
        max_record = self.ctx.options.max_record_bytes
        result = scan(
            buf, seg.size, seg.last_seq + 1, max_record, seg.index.interval, seg.index.last_offset
        )
        if result.end != end or result.batch_start != end or result.last_seq != acked:
            return False
        seg.index.extend(result.index_points, end)
        if self.keys is not None:  # take in the keys the other processes appended
            page = new_page()
            first = seg.last_seq + 1
            walk_frames(buf, 0, first, first, acked, max_record, page)
            self.keys.add_all(keys_of(page, acked - first + 1))
        with self.view_lock:
            seg.size = end
            seg.allocated = max(seg.allocated, end)
            seg.last_seq = result.last_seq
            self.last_seq = self.visible_seq = result.last_seq
            if result.last_payload is not None:
                self.tail_payload = result.last_payload
        return True

    def refresh(self) -> None:
        """Before a read: take in other processes' appends (cheap when there are none)."""
        sf = self.state_file
        if sf.mapped and not sf.changed():
            return
        with self.commit_lock:
            self.run_lock.acquire()
            try:
                self.catch_up()
            finally:
                self.run_lock.release()

    def mark_deleted(self) -> None:
        """Tell every process that holds this run that it was deleted."""
        sf = self.state_file
        if sf.mapped or sf.open(create=False):
            sf.write(RunState(STATE_DELETED, self.ctx.boot, self.epoch, 0, 0, 0))
            sf.close()
