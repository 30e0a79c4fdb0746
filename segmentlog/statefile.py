"""A run's ``STATE`` record (FORMAT.md section 7.1), mapped into memory and shared.

Strategy and invariants
- The file is 128 bytes: the 64-byte record, a busy byte, zeros. It is mapped ``MAP_SHARED``
  (``_fs.map_shared``), so a writer updates it with one store and every process reads it with
  no system call. It is never fsynced: a cache, which recovery rebuilds.
- A reader may meet a record half stored: the checksum tells, and the read is retried.
- ``changed``/``unchanged`` compare the record and the busy byte with what this process last
  read or wrote: the hot path's one check that nobody else appended and nobody died
  appending.
- A mapping holds a descriptor (CPython's ``mmap`` keeps a duplicate), so mapped records
  count against the descriptor LRU: ``on_map`` is called on each mapping (the run is
  ``touch``ed), and an evicted run's record is unmapped and mapped again when next needed.
  ``changed`` may race that unmapping (it runs without the run's lock): it then answers
  True, and the caller looks again under the lock.
"""

from __future__ import annotations

import errno
import struct
import uuid
from collections.abc import Callable

from ._fs import FileSystem, SharedMap
from .format import (
    STATE_BUSY_AT,
    STATE_FILE_SIZE,
    STATE_NAME,
    STATE_RECORD_SIZE,
    RunState,
    decode_run_state,
    encode_run_state,
    xxh3_64,
)

__all__ = ["StateFile", "new_epoch"]

_TAIL = struct.Struct("<QQQ")  # base, end, acked
_SUM = struct.Struct("<Q")
_WITH_BUSY = 65  # the record and the busy byte after it (STATE_BUSY_AT + 1)


class StateFile:
    """A run's mapped ``STATE`` record. Writers update it under the run's lock."""

    __slots__ = ("_boot", "_cached", "_fs", "_map", "_on_map", "path", "writable")

    def __init__(
        self,
        fs: FileSystem,
        run_dir: str,
        *,
        writable: bool,
        boot: bytes = b"",
        on_map: Callable[[], None] | None = None,
    ) -> None:
        assert STATE_BUSY_AT == STATE_RECORD_SIZE
        self._fs = fs
        self._boot = boot
        self._on_map = on_map
        self.path = f"{run_dir}/{STATE_NAME}"
        self.writable = writable
        self._map: SharedMap | None = None
        self._cached = b""

    @property
    def mapped(self) -> bool:
        """True while the file is mapped."""
        return self._map is not None

    def open(self, *, create: bool) -> bool:
        """Map the file (creating it when ``create``); False when it does not exist, or
        (without ``create``) is still shorter than a record.

        A file this call creates (or completes) holds the ``reset`` record, not zeros, so
        that no frame a writer adds before its first acknowledged commit is delivered.
        """
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
        made = False
        try:
            size = fs.size(fd)
            if size < STATE_FILE_SIZE:
                if not create:
                    return False  # being created (or its creator died): nothing to trust
                # Written, not extended with truncate: the file's blocks exist before the
                # first store through the map, so a full disk is an ENOSPC here rather
                # than a SIGBUS there. (The descriptor appends: this lands at ``size``.)
                missing = STATE_FILE_SIZE - size
                if fs.pwrite(fd, bytes(missing), size) != missing:
                    raise OSError(errno.ENOSPC, "short write creating the run state", self.path)
                made = True
            self._map = fs.map_shared(fd, STATE_FILE_SIZE, writable=self.writable)
        finally:
            fs.close(fd)
        self._cached = b""
        if made:
            self.reset()
        if self._on_map is not None:
            self._on_map()
        return True

    def reset(self) -> None:
        """Store a record that acknowledges nothing (base 0, acked 0), busy set.

        A run's record says this from its creation until its writer's first commit is
        acknowledged: readers in other processes, which trust a current record's ``acked``,
        then deliver none of the frames written before that (an unreadable record would
        make them trust every complete frame, one whose fsync is failing included), and a
        writer that finds it so, its creator having died, recovers the run.
        """
        assert self._map is not None
        self._map.write(0, encode_run_state(RunState(0, self._boot, 0, 0, 0, 0)) + b"\1")
        self._cached = b""

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
        """True when the record (or the busy byte) differs from what this process last read
        or wrote: another process appended, or died while appending."""
        m = self._map
        if m is None:
            return False
        try:
            return m.read(0, _WITH_BUSY) != self._cached
        except ValueError:  # unmapped meanwhile by the descriptor LRU: look again, locked
            return True

    def remember(self) -> None:
        """Note the current record as seen (``changed`` is False until it changes)."""
        if self._map is not None:
            self._cached = self._map.read(0, STATE_RECORD_SIZE) + b"\0"

    def publish(
        self, flags_boot_epoch: bytes, base: int, end: int, acked: int, busy: bool = False
    ) -> None:
        """Store a record whose first 32 bytes are ``flags_boot_epoch`` (see ``prefix``):
        the hot path of ``write``. ``busy`` keeps the busy byte set (more writes may follow
        under the same hold of the lock; ``clear_busy`` ends it)."""
        assert self._map is not None
        head = flags_boot_epoch + _TAIL.pack(base, end, acked)
        record = head + _SUM.pack(xxh3_64(head))
        self._map.write(0, record + (b"\1" if busy else b"\0"))
        self._cached = record + b"\0"

    @staticmethod
    def prefix(flags: int, boot: bytes, epoch: int) -> bytes:
        """The constant first 32 bytes of a run's records (magic to epoch)."""
        return encode_run_state(RunState(flags, boot, epoch, 0, 0, 0))[:32]

    def write(self, state: RunState) -> None:
        """Store the record and clear the busy byte, in one store."""
        assert self._map is not None
        data = encode_run_state(state) + b"\0"
        self._map.write(0, data)
        self._cached = data

    @property
    def busy(self) -> bool:
        """True when a writer set the busy byte and has not updated the record since."""
        return self._map is not None and self._map.read(STATE_BUSY_AT, 1) != b"\0"

    def set_busy(self) -> bool:
        """Mark a write under way, if mapped (cleared by ``write``); True if marked."""
        if self._map is None:
            return False
        self._map.write(STATE_BUSY_AT, b"\1")
        return True

    def clear_busy(self) -> None:
        """Clear the busy byte, if mapped: every write under way was published."""
        if self._map is not None:
            self._map.write(STATE_BUSY_AT, b"\0")

    def unchanged(self) -> bool:
        """True when mapped and exactly as this process last read or wrote it (the hot
        path's check: nobody else appended, nobody died appending)."""
        return self._map is not None and self._map.read(0, _WITH_BUSY) == self._cached

    def close(self) -> None:
        """Unmap."""
        if self._map is not None:
            self._map.close()
            self._map = None
        self._cached = b""


def new_epoch() -> int:
    """A fresh incarnation id for a run."""
    return uuid.uuid4().int & ((1 << 64) - 1)
