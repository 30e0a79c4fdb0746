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
  written in, and a busy byte that a writer sets while it is between its first write and its
  update of the record. Mapped, reading and updating it costs no system call.
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
from _thread import allocate_lock
from collections.abc import Iterator
from typing import Any

from ._fs import FileSystem, SharedMap
from .format import (
    STATE_BUSY_AT,
    STATE_DELETED,
    STATE_FILE_SIZE,
    STATE_FRAMES_ACKED,
    STATE_NAME,
    STATE_RECORD_SIZE,
    RunState,
    decode_run_state,
    encode_run_state,
    xxh3_64,
)
from .scan import scan
from .segment import Segment

__all__ = ["LOCKS", "RunLocks", "SharedRun", "StateFile", "new_epoch"]

#: The file whose bytes carry the per-run writer locks.
LOCKS = "LOCKS"
_SLOT_MASK = (1 << 62) - 1


class _Slot:
    __slots__ = ("count", "ready")

    def __init__(self) -> None:
        self.count = 0
        self.ready = allocate_lock()


class RunLocks:
    """The directory's per-run writer locks, shared by every multiprocess writer."""

    def __init__(self, fs: FileSystem, path: str) -> None:
        self._fs = fs
        self.fd = fs.open_append(f"{path}/{LOCKS}", create=True)
        self._mu = threading.Lock()
        self._slots: dict[int, _Slot] = {}

    @staticmethod
    def slot(run_id: uuid.UUID) -> int:
        """The byte of ``LOCKS`` that stands for ``run_id``."""
        return int(xxh3_64(run_id.bytes)) & _SLOT_MASK

    def acquire(self, slot: int) -> None:
        """Hold ``slot`` against other processes, waiting for it (the caller already holds
        the run's commit lock, so threads of this process never race for one run)."""
        with self._mu:
            entry = self._slots.get(slot)
            first = entry is None
            if entry is None:
                entry = self._slots[slot] = _Slot()
                entry.ready.acquire()
            entry.count += 1
        if not first:
            entry.ready.acquire()  # wait until the first holder has the lock
            entry.ready.release()
            return
        try:
            self._fs.lock_range(self.fd, slot)
        except BaseException:
            with self._mu:
                entry.count -= 1
                if not entry.count:
                    del self._slots[slot]
            entry.ready.release()
            raise
        entry.ready.release()

    def release(self, slot: int) -> None:
        """Give ``slot`` back; the lock goes when its last holder in this process leaves."""
        with self._mu:
            entry = self._slots[slot]
            entry.count -= 1
            if entry.count:
                return
            del self._slots[slot]
            self._fs.unlock_range(self.fd, slot)

    def close(self) -> None:
        """Close the lock file (releasing every lock of this process)."""
        self._fs.close(self.fd)


class StateFile:
    """A run's mapped ``STATE`` record. Writers update it under the run's lock."""

    __slots__ = ("_cached", "_fs", "_map", "path", "writable")

    def __init__(self, fs: FileSystem, run_dir: str, *, writable: bool) -> None:
        self._fs = fs
        self.path = f"{run_dir}/{STATE_NAME}"
        self.writable = writable
        self._map: SharedMap | None = None
        self._cached = b""

    @property
    def mapped(self) -> bool:
        """True while the file is mapped."""
        return self._map is not None

    def open(self, *, create: bool) -> bool:
        """Map the file (creating it when ``create``); False when it does not exist."""
        if self._map is not None:
            return True
        fs = self._fs
        try:
            if create:
                fd = fs.open_append(self.path, create=True)
            elif self.writable:
                fd = fs.open_write(self.path)
            else:
                fd = fs.open_read(self.path)
        except FileNotFoundError:
            return False
        try:
            if fs.size(fd) < STATE_FILE_SIZE:
                if not self.writable:
                    return False  # being created: nothing to trust yet
                fs.truncate(fd, STATE_FILE_SIZE)
            self._map = fs.map_shared(fd, STATE_FILE_SIZE, writable=self.writable)
        finally:
            fs.close(fd)
        self._cached = b""
        return True

    def read(self) -> RunState | None:
        """The record, or None when it is unreadable (retried over a torn read)."""
        if self._map is None:
            return None
        for _ in range(3):
            raw = self._map.read(0, STATE_RECORD_SIZE)
            state = decode_run_state(raw)
            if state is not None:
                return state
        return None

    def changed(self) -> bool:
        """True when the record differs from the one this process last read or wrote."""
        return self._map is not None and self._map.read(0, STATE_RECORD_SIZE) != self._cached

    def remember(self) -> None:
        """Note the current record as seen (``changed`` is False until it changes)."""
        if self._map is not None:
            self._cached = self._map.read(0, STATE_RECORD_SIZE)

    def write(self, state: RunState) -> None:
        """Store the record (and clear the busy byte)."""
        assert self._map is not None
        data = encode_run_state(state)
        self._map.write(0, data)
        self._map.write(STATE_BUSY_AT, b"\0")
        self._cached = data

    @property
    def busy(self) -> bool:
        """True when a writer set the busy byte and has not updated the record since."""
        return self._map is not None and self._map.read(STATE_BUSY_AT, 1) != b"\0"

    def set_busy(self) -> None:
        """Mark a write under way (cleared by ``write``)."""
        assert self._map is not None
        self._map.write(STATE_BUSY_AT, b"\1")

    def close(self) -> None:
        """Unmap."""
        if self._map is not None:
            self._map.close()
            self._map = None
        self._cached = b""


def new_epoch() -> int:
    """A fresh incarnation id for a run."""
    return uuid.uuid4().int & ((1 << 64) - 1)


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
    epoch: int
    loaded: bool

    def adopt(
        self, segments: list[Segment], last_seq: int, last_payload: bytes | None, writable: bool
    ) -> None:
        raise NotImplementedError

    def close_files(self) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the run against other processes and bring this view up to date."""
        locks: RunLocks = self.ctx.locks
        slot = RunLocks.slot(self.id)
        locks.acquire(slot)
        try:
            self.catch_up()
            if self.state_file.mapped:
                self.state_file.set_busy()
            yield
            if self.state_file.mapped and self.state_file.busy and self.ctx.state.failed is None:
                self.publish_state()  # nothing was committed: clear the busy byte
        finally:
            locks.release(slot)

    def load(self) -> None:
        """First touch: recover the run from its files (under its lock between processes)."""
        if self.ctx.locks is None:
            self.reload()
            return
        slot = RunLocks.slot(self.id)
        self.ctx.locks.acquire(slot)
        try:
            self.reload()
        finally:
            self.ctx.locks.release(slot)

    def reload(self) -> None:
        """Forget this view, recover the run from its files, and publish the result."""
        ctx = self.ctx
        self.close_files()
        recovered = ctx.recover(self)
        segments = recovered.segments if recovered is not None else []
        if recovered is None:
            self.adopt([], 0, None, ctx.writable)
        else:
            self.adopt(segments, recovered.last_seq, recovered.last_payload, ctx.writable)
        sf = self.state_file
        if not ctx.writable:
            sf.open(create=False)
            return
        if not segments:
            self.epoch = 0
            if recovered is not None:
                with contextlib.suppress(OSError):
                    ctx.fs.rmdir(self.dir)  # a directory left empty by a crash
            return
        if ctx.keep_state:
            sf.open(create=True)
            old = sf.read()
            fresh = old is None or old.boot != ctx.boot or old.flags & STATE_DELETED
            self.epoch = new_epoch() if fresh or old is None else old.epoch
            self.publish_state()
        elif sf.open(create=False):
            # A writer that acknowledges frames as it writes them keeps no watermark: say
            # so, so that readers do not hold to one a durable writer left behind.
            sf.write(RunState(STATE_FRAMES_ACKED, ctx.boot, 0, 0, 0, 0))
            sf.close()

    def publish_state(self) -> None:
        """Store this process's view of the run in its state record (clears busy)."""
        sf = self.state_file
        if not self.segments:
            return
        if not sf.mapped:
            sf.open(create=True)
        seg = self.segments[-1]
        sf.write(RunState(0, self.ctx.boot, self.epoch, seg.base_seq, seg.size, self.visible_seq))

    def catch_up(self) -> None:
        """Under the run's lock: take in what other processes did since this view."""
        sf = self.state_file
        if not sf.mapped and not sf.open(create=False):
            if self.segments or self.ctx.fs.is_dir(self.dir):
                self.reload()  # deleted, or created by another process
            return
        if not sf.changed() and not sf.busy:
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
            slot = RunLocks.slot(self.id)
            self.ctx.locks.acquire(slot)
            try:
                self.catch_up()
            finally:
                self.ctx.locks.release(slot)

    def mark_deleted(self) -> None:
        """Tell every process that holds this run that it was deleted."""
        sf = self.state_file
        if sf.mapped or sf.open(create=False):
            sf.write(RunState(STATE_DELETED, self.ctx.boot, self.epoch, 0, 0, 0))
            sf.close()
