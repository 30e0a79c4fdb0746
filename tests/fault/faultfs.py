"""A fault-injecting, in-memory file system for crash tests (the LevelDB "fault env" model).

Strategy and invariants
- ``FaultFS`` is a complete file system held in memory: a tree of directories and file inodes,
  and a table of open file descriptions. Through the ``FileSystem`` interface the engine cannot
  tell it from the real one, so every engine code path runs unchanged on top of it.
- Every node has a *live* state (what a running process sees: the page cache) and a *durable*
  state (what survives a power loss). File data and size become durable only at
  ``fsync``/``fdatasync`` of that file. A directory's entries (create, rename, unlink, mkdir,
  rmdir) become durable only at ``fsync_dir`` of that directory. Nothing else syncs anything.
- ``power_loss()`` rebuilds the live tree from the durable tree reachable from ``/``. In mode
  ``"drop_unsynced"`` every unsynced byte and entry change is lost; in ``"random_subset"`` each
  file keeps a random subset of its unsynced sectors and a random length between its durable
  and live sizes (the gap reads as zeros), and each directory keeps either its durable or its
  live entries, as a disk with a write-back cache could. Synced bytes are never lost.
- ``crash()`` is a killed process: descriptors and locks go away, the page cache survives.
- Faults are armed by count from the moment they are armed: the Nth write / fsync / rename
  fails with an errno (once, or every time from then on), a write can be torn (only a prefix
  lands, then an error, a short count, or the process dies right there), and
  ``halt_after(n)`` lets n more mutating calls through and then freezes the file system: the
  next call and every call after it raise ``SimulatedCrash`` without touching anything, until
  ``crash()`` or ``power_loss()``.
- All operations take one re-entrant lock, so background sync threads are safe.
- Rejected design: wrapping a real directory and copying "synced" snapshots around it. An
  in-memory tree makes per-directory durability exact and keeps thousands of reopen cycles
  fast enough for the default test run.
"""

from __future__ import annotations

import errno
import os
import posixpath
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from segmentlog._fs import FileSystem

__all__ = ["FaultFS", "SimulatedCrash"]

PowerLossMode = Literal["drop_unsynced", "random_subset"]

#: Calls that change state; ``halt_after`` counts these.
MUTATING = frozenset(
    {
        "create_new",
        "open_append+create",
        "write",
        "preallocate",
        "fsync",
        "fdatasync",
        "truncate",
        "mkdir",
        "makedirs",
        "rename",
        "unlink",
        "rmdir",
        "rmtree",
        "fsync_dir",
        "remove_quietly",
    }
)


class SimulatedCrash(BaseException):
    """The process "died" here. A BaseException, so engine ``except Exception`` can't eat it."""


def _oserror(code: int, path: str | None = None) -> OSError:
    if path is None:
        return OSError(code, os.strerror(code))
    return OSError(code, os.strerror(code), path)


class _File:
    __slots__ = ("data", "durable", "lock_owner", "mtime")

    def __init__(self, now: float) -> None:
        self.data = bytearray()
        self.durable = b""
        self.mtime = now
        self.lock_owner: _Description | None = None


class _Dir:
    __slots__ = ("durable", "entries", "mtime")

    def __init__(self, now: float) -> None:
        self.entries: dict[str, _File | _Dir] = {}
        self.durable: dict[str, _File | _Dir] = {}
        self.mtime = now


class _Description:
    """An open file description: what ``open`` returns a descriptor to."""

    __slots__ = ("append", "name", "node", "pos", "writable")

    def __init__(self, node: _File, name: str, *, append: bool, writable: bool) -> None:
        self.node = node
        self.name = name
        self.append = append
        self.writable = writable
        self.pos = 0


@dataclass
class _Fault:
    ops: frozenset[str]
    countdown: int
    err: int | None
    sticky: bool = False
    keep: int | None = None  # torn write: bytes that land
    path_contains: str | None = None
    fired: int = 0
    crash: bool = False  # torn write: the process dies once the prefix landed


class _FaultMap:
    """A shared mapping of a FaultFS file: reads and stores go to its live bytes."""

    __slots__ = ("_fs", "_node")

    def __init__(self, fs: FaultFS, node: _File) -> None:
        self._fs = fs
        self._node = node

    def read(self, offset: int, size: int) -> bytes:
        with self._fs._mutex:
            self._fs._enter("map_read", "<map>")
            return bytes(self._node.data[offset : offset + size])

    def write(self, offset: int, data: bytes) -> None:
        with self._fs._mutex:
            self._fs._enter("map_write", "<map>")
            self._node.data[offset : offset + len(data)] = data

    def close(self) -> None:
        pass


class FaultFS(FileSystem):
    """An in-memory ``FileSystem`` that remembers what was synced and injects faults.

    ``sector`` is the granularity of ``power_loss(mode="random_subset")``. ``clock`` supplies
    modification times (tests set it to move time for retention).
    """

    def __init__(self, *, sector: int = 512, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.sector = sector
        self.clock = clock
        self._mutex = threading.RLock()
        self._root = _Dir(clock())
        self._fds: dict[int, _Description] = {}
        self._next_fd = 3
        self._faults: list[_Fault] = []
        self._halt_in: int | None = None
        self.halted = False
        #: Number of calls per operation name (``"write"``, ``"fsync"``, ...).
        self.counts: Counter[str] = Counter()
        #: Every mutating call in order, as ``(op, path)``; tests print it to name a step.
        self.journal: list[tuple[str, str]] = []
        #: Bytes returned by ``pread`` (and ``read_file``) since the last ``reset_counters``.
        self.bytes_read = 0
        #: Bytes accepted by ``write``.
        self.bytes_written = 0
        #: The largest ``size`` any single ``pread`` asked for.
        self.largest_read = 0
        self._dead = False
        #: Changes at every power loss, as a machine's boot id does at every boot.
        self._boot = os.urandom(16)

    # --- fault knobs ------------------------------------------------------------------------

    def fail_write(
        self,
        nth: int = 1,
        err: int = errno.EIO,
        *,
        sticky: bool = False,
        path_contains: str | None = None,
    ) -> None:
        """Make the ``nth`` write from now fail with ``err`` (every later one too if sticky)."""
        self._arm(frozenset({"write"}), nth, err, sticky=sticky, path_contains=path_contains)

    def tear_write(
        self,
        nth: int = 1,
        keep: int = 1,
        err: int | None = errno.EIO,
        *,
        path_contains: str | None = None,
        crash: bool = False,
    ) -> None:
        """Tear the ``nth`` write from now: only ``keep`` bytes land, then ``err`` is raised.

        With ``err=None`` the write returns the short count instead (as ``os.write`` may).
        With ``crash=True`` the process dies right after the prefix landed: the write raises
        ``SimulatedCrash`` and the file system stays halted (as after ``halt_after``), so the
        engine cannot clean up; ``crash()``, ``power_loss()`` or ``reboot()`` go on from there.
        """
        self._arm(
            frozenset({"write"}), nth, err, keep=keep, path_contains=path_contains, crash=crash
        )

    def fail_fsync(
        self,
        nth: int = 1,
        err: int = errno.EIO,
        *,
        sticky: bool = False,
        include_dirs: bool = False,
    ) -> None:
        """Make the ``nth`` fsync/fdatasync from now fail (an fsync that fails syncs nothing)."""
        ops = {"fsync", "fdatasync"} | ({"fsync_dir"} if include_dirs else set())
        self._arm(frozenset(ops), nth, err, sticky=sticky)

    def fail_rename(self, nth: int = 1, err: int = errno.EIO, *, sticky: bool = False) -> None:
        """Make the ``nth`` rename from now fail with ``err`` (nothing is renamed)."""
        self._arm(frozenset({"rename"}), nth, err, sticky=sticky)

    def fail_create(self, nth: int = 1, err: int = errno.EIO, *, sticky: bool = False) -> None:
        """Make the ``nth`` file creation (``create_new``) from now fail with ``err``."""
        self._arm(frozenset({"create_new"}), nth, err, sticky=sticky)

    def clear_faults(self) -> None:
        """Disarm every fault and any pending halt."""
        with self._mutex:
            self._faults.clear()
            self._halt_in = None

    def halt_after(self, n: int) -> None:
        """Let ``n`` more mutating calls through, then freeze (raise ``SimulatedCrash``)."""
        with self._mutex:
            self._halt_in = n

    def reset_counters(self) -> None:
        """Zero ``counts``, ``journal``, ``bytes_read`` and ``bytes_written``."""
        with self._mutex:
            self.counts.clear()
            self.journal.clear()
            self.bytes_read = 0
            self.bytes_written = 0
            self.largest_read = 0

    def _arm(
        self,
        ops: frozenset[str],
        nth: int,
        err: int | None,
        *,
        sticky: bool = False,
        keep: int | None = None,
        path_contains: str | None = None,
        crash: bool = False,
    ) -> None:
        if nth < 1:
            raise ValueError("nth counts from 1")
        with self._mutex:
            self._faults.append(_Fault(ops, nth, err, sticky, keep, path_contains, crash=crash))

    def _fault_for(self, op: str, path: str) -> _Fault | None:
        hit: _Fault | None = None
        for fault in self._faults:
            if op not in fault.ops:
                continue
            if fault.path_contains is not None and fault.path_contains not in path:
                continue
            if fault.fired and fault.sticky:
                hit = hit or fault
                continue
            if fault.fired:
                continue
            fault.countdown -= 1
            if fault.countdown == 0:
                fault.fired += 1
                hit = hit or fault
        return hit

    # --- the crash model ----------------------------------------------------------------------

    def _enter(self, op: str, path: str) -> None:
        """Bookkeeping at the start of every call (caller holds the mutex)."""
        if self.halted or self._dead:
            raise SimulatedCrash(f"file system halted; {op} {path} never happened")
        self.counts[op] += 1
        if op in MUTATING:
            if self._halt_in is not None:
                if self._halt_in == 0:
                    self.halted = True
                    self._halt_in = None
                    raise SimulatedCrash(f"halted before {op} {path}")
                self._halt_in -= 1
            self.journal.append((op, path))

    def crash(self) -> None:
        """A killed process: close every descriptor and drop its locks; keep the page cache."""
        with self._mutex:
            for desc in self._fds.values():
                if desc.node.lock_owner is desc:
                    desc.node.lock_owner = None
            self._fds.clear()
            self.halted = False
            self._halt_in = None
            self._faults.clear()

    def power_loss(
        self, mode: PowerLossMode = "drop_unsynced", rng: random.Random | None = None
    ) -> None:
        """Lose power: keep only what was synced (or a random part of the rest), reset fds."""
        if mode not in ("drop_unsynced", "random_subset"):
            raise ValueError(f"unknown power-loss mode {mode!r}")
        rng = rng or random.Random(0)
        with self._mutex:
            self.crash()
            self._boot = os.urandom(16)
            seen: dict[int, _File | _Dir] = {}
            self._root = self._restore_dir(self._root, mode, rng, seen)

    def _restore_dir(
        self, node: _Dir, mode: PowerLossMode, rng: random.Random, seen: dict[int, _File | _Dir]
    ) -> _Dir:
        done = seen.get(id(node))
        if done is not None:
            assert isinstance(done, _Dir)
            return done
        new = _Dir(node.mtime)
        seen[id(node)] = new
        source = node.durable
        if mode == "random_subset" and node.entries != node.durable and rng.random() < 0.5:
            source = node.entries
        for name, child in source.items():
            if isinstance(child, _Dir):
                new.entries[name] = self._restore_dir(child, mode, rng, seen)
            else:
                new.entries[name] = self._restore_file(child, mode, rng, seen)
        new.durable = dict(new.entries)
        return new

    def _restore_file(
        self, node: _File, mode: PowerLossMode, rng: random.Random, seen: dict[int, _File | _Dir]
    ) -> _File:
        done = seen.get(id(node))
        if done is not None:
            assert isinstance(done, _File)
            return done
        new = _File(node.mtime)
        seen[id(node)] = new
        if mode == "drop_unsynced" or bytes(node.data) == node.durable:
            new.data = bytearray(node.durable)
        else:
            new.data = self._random_survivor(node.data, node.durable, rng)
        new.durable = bytes(new.data)
        return new

    def _random_survivor(self, live: bytearray, durable: bytes, rng: random.Random) -> bytearray:
        lo, hi = sorted((len(durable), len(live)))
        length = rng.choice((len(durable), len(live), rng.randint(lo, hi)))
        out = bytearray(length)
        for start in range(0, length, self.sector):
            end = min(start + self.sector, length)
            old = durable[start:end].ljust(end - start, b"\0")
            new = bytes(live[start:end]).ljust(end - start, b"\0")
            out[start:end] = new if old != new and rng.random() < 0.5 else old
        return out

    def reboot(
        self, mode: PowerLossMode | None = None, rng: random.Random | None = None
    ) -> FaultFS:
        """End this "process" and return the file system the next one sees.

        ``mode=None`` is a process crash (the page cache survives); otherwise a power loss in
        that mode. This instance stays dead: every later call on it raises ``SimulatedCrash``,
        so threads and objects of the old process can never touch the new state.
        """
        with self._mutex:
            survivor = self.clone()
            self._dead = True
        if mode is not None:
            survivor.power_loss(mode, rng)
        return survivor

    def sync_all(self) -> None:
        """Make the whole live state durable (a clean shutdown followed by ``sync``)."""
        with self._mutex:
            stack: list[_File | _Dir] = [self._root]
            while stack:
                node = stack.pop()
                if isinstance(node, _Dir):
                    node.durable = dict(node.entries)
                    stack.extend(node.entries.values())
                else:
                    node.durable = bytes(node.data)

    def clone(self) -> FaultFS:
        """An independent copy of the live and durable state, with no descriptors or faults."""
        with self._mutex:
            copy = FaultFS(sector=self.sector, clock=self.clock)
            copy._boot = self._boot
            memo: dict[int, _File | _Dir] = {}
            copy._root = self._copy_node(self._root, memo)  # type: ignore[assignment]
            return copy

    def _copy_node(self, node: _File | _Dir, memo: dict[int, _File | _Dir]) -> _File | _Dir:
        done = memo.get(id(node))
        if done is not None:
            return done
        if isinstance(node, _File):
            new_file = _File(node.mtime)
            new_file.data = bytearray(node.data)
            new_file.durable = node.durable
            memo[id(node)] = new_file
            return new_file
        new_dir = _Dir(node.mtime)
        memo[id(node)] = new_dir
        new_dir.entries = {k: self._copy_node(v, memo) for k, v in node.entries.items()}
        new_dir.durable = {k: self._copy_node(v, memo) for k, v in node.durable.items()}
        return new_dir

    # --- test helpers (disk-level edits, outside the engine's view) ---------------------------

    def read_bytes(self, path: str) -> bytes:
        """The live contents of a file (no counters touched)."""
        with self._mutex:
            return bytes(self._file(path).data)

    def durable_bytes(self, path: str) -> bytes:
        """The contents of a file that would survive a power loss right now."""
        with self._mutex:
            return self._file(path).durable

    def set_bytes(self, path: str, data: bytes) -> None:
        """Replace a file's contents, live and durable (damage on disk, e.g. a bit flip)."""
        with self._mutex:
            node = self._file(path)
            node.data = bytearray(data)
            node.durable = bytes(data)

    def write_durable(self, path: str, data: bytes) -> None:
        """Create (parents included) or replace a file, with contents and entries durable."""
        with self._mutex:
            self.makedirs(posixpath.dirname(self._norm(path)))
            fd = self.create_new(path)
            self.write(fd, data)
            self.close(fd)
            self.sync_all()

    def durably_exists(self, path: str) -> bool:
        """True if ``path`` would still exist after a power loss right now."""
        with self._mutex:
            node: _File | _Dir = self._root
            for part in self._parts(path):
                if not isinstance(node, _Dir) or part not in node.durable:
                    return False
                node = node.durable[part]
            return True

    def walk_files(self) -> list[str]:
        """Every live file path, sorted."""
        with self._mutex:
            out: list[str] = []
            stack: list[tuple[str, _Dir]] = [("/", self._root)]
            while stack:
                base, node = stack.pop()
                for name, child in node.entries.items():
                    path = posixpath.join(base, name)
                    if isinstance(child, _Dir):
                        stack.append((path, child))
                    else:
                        out.append(path)
            return sorted(out)

    @property
    def open_fds(self) -> int:
        """Number of open descriptors."""
        with self._mutex:
            return len(self._fds)

    # --- path plumbing ------------------------------------------------------------------------

    @staticmethod
    def _norm(path: str) -> str:
        path = os.fspath(path)
        if not path.startswith("/"):
            raise ValueError(f"FaultFS takes absolute paths, got {path!r}")
        return posixpath.normpath(path)

    def _parts(self, path: str) -> list[str]:
        return [p for p in self._norm(path).split("/") if p]

    def _lookup(self, path: str) -> _File | _Dir:
        node: _File | _Dir = self._root
        for part in self._parts(path):
            if not isinstance(node, _Dir):
                raise _oserror(errno.ENOTDIR, path)
            child = node.entries.get(part)
            if child is None:
                raise _oserror(errno.ENOENT, path)
            node = child
        return node

    def _file(self, path: str) -> _File:
        node = self._lookup(path)
        if isinstance(node, _Dir):
            raise _oserror(errno.EISDIR, path)
        return node

    def _parent(self, path: str) -> tuple[_Dir, str]:
        parts = self._parts(path)
        if not parts:
            raise _oserror(errno.EBUSY, path)
        parent = self._lookup("/" + "/".join(parts[:-1]))
        if not isinstance(parent, _Dir):
            raise _oserror(errno.ENOTDIR, path)
        return parent, parts[-1]

    def _desc(self, fd: int) -> _Description:
        desc = self._fds.get(fd)
        if desc is None:
            raise _oserror(errno.EBADF)
        return desc

    def _new_fd(self, desc: _Description) -> int:
        fd = self._next_fd
        self._next_fd += 1
        self._fds[fd] = desc
        return fd

    def _path_of(self, fd: int) -> str:
        """The name a descriptor was opened under, for fault filters and the journal."""
        desc = self._fds.get(fd)
        return desc.name if desc is not None else f"<fd {fd}>"

    # --- descriptors --------------------------------------------------------------------------

    def open_read(self, path: str) -> int:
        with self._mutex:
            self._enter("open_read", path)
            desc = _Description(self._file(path), self._norm(path), append=False, writable=False)
            return self._new_fd(desc)

    def open_append(self, path: str, *, create: bool = False) -> int:
        with self._mutex:
            self._enter("open_append+create" if create else "open_append", path)
            try:
                node = self._file(path)
            except FileNotFoundError:
                if not create:
                    raise
                parent, name = self._parent(path)
                node = _File(self.clock())
                parent.entries[name] = node
                parent.mtime = node.mtime
            return self._new_fd(_Description(node, self._norm(path), append=True, writable=True))

    def open_write(self, path: str) -> int:
        with self._mutex:
            self._enter("open_write", path)
            node = self._file(path)
            return self._new_fd(_Description(node, self._norm(path), append=False, writable=True))

    def create_exclusive(self, path: str) -> int:
        with self._mutex:
            try:
                self._lookup(path)
            except FileNotFoundError:
                return self.create_new(path)
            raise _oserror(errno.EEXIST, path)

    def create_new(self, path: str) -> int:
        with self._mutex:
            self._enter("create_new", path)
            fault = self._fault_for("create_new", path)
            if fault is not None:
                assert fault.err is not None
                raise _oserror(fault.err, path)
            try:
                node = self._file(path)
                node.data = bytearray()
                node.mtime = self.clock()
            except FileNotFoundError:
                parent, name = self._parent(path)
                node = _File(self.clock())
                parent.entries[name] = node
                parent.mtime = node.mtime
            return self._new_fd(_Description(node, self._norm(path), append=False, writable=True))

    def close(self, fd: int) -> None:
        with self._mutex:
            self._enter("close", f"<fd {fd}>")
            desc = self._desc(fd)
            if desc.node.lock_owner is desc:
                desc.node.lock_owner = None
            del self._fds[fd]

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> int:
        # Counted, journalled and faulted as a "write": the engine's frames go through here.
        with self._mutex:
            desc = self._desc(fd)
            saved = (desc.append, desc.pos)
            desc.append, desc.pos = False, offset
            try:
                return self.write(fd, data)
            finally:
                desc.append, desc.pos = saved

    def preallocate(self, fd: int, offset: int, length: int) -> bool:
        with self._mutex:
            path = self._path_of(fd)
            self._enter("preallocate", path)
            node = self._desc(fd).node
            end = offset + length
            if end > len(node.data):
                node.data.extend(b"\0" * (end - len(node.data)))
            return True

    def write(self, fd: int, data: bytes | bytearray | memoryview) -> int:
        with self._mutex:
            path = self._path_of(fd)
            self._enter("write", path)
            desc = self._desc(fd)
            if not desc.writable:
                raise _oserror(errno.EBADF)
            chunk = bytes(data)
            fault = self._fault_for("write", path)
            if fault is not None and fault.keep is not None:
                landed = chunk[: fault.keep]
                self._put(desc, landed)
                if fault.crash:
                    self.halted = True
                    raise SimulatedCrash(f"died after {len(landed)} bytes of a write to {path}")
                if fault.err is not None:
                    raise _oserror(fault.err, path)
                return len(landed)
            if fault is not None:
                assert fault.err is not None
                raise _oserror(fault.err, path)
            self._put(desc, chunk)
            return len(chunk)

    def _put(self, desc: _Description, chunk: bytes) -> None:
        node = desc.node
        pos = len(node.data) if desc.append else desc.pos
        if pos > len(node.data):
            node.data.extend(b"\0" * (pos - len(node.data)))
        node.data[pos : pos + len(chunk)] = chunk
        desc.pos = pos + len(chunk)
        node.mtime = self.clock()
        self.bytes_written += len(chunk)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        with self._mutex:
            self._enter("pread", f"<fd {fd}>")
            if size < 0 or offset < 0:
                raise _oserror(errno.EINVAL)
            out = bytes(self._desc(fd).node.data[offset : offset + size])
            self.bytes_read += len(out)
            self.largest_read = max(self.largest_read, size)
            return out

    def _sync_fd(self, op: str, fd: int) -> None:
        with self._mutex:
            path = self._path_of(fd)
            self._enter(op, path)
            desc = self._desc(fd)
            fault = self._fault_for(op, path)
            if fault is not None:
                assert fault.err is not None
                raise _oserror(fault.err, path)
            desc.node.durable = bytes(desc.node.data)

    def fsync(self, fd: int) -> None:
        self._sync_fd("fsync", fd)

    def fdatasync(self, fd: int) -> None:
        self._sync_fd("fdatasync", fd)

    def truncate(self, fd: int, length: int) -> None:
        with self._mutex:
            self._enter("truncate", self._path_of(fd))
            desc = self._desc(fd)
            if not desc.writable:
                raise _oserror(errno.EINVAL)
            if length < 0:
                raise _oserror(errno.EINVAL)
            node = desc.node
            if length <= len(node.data):
                del node.data[length:]
            else:
                node.data.extend(b"\0" * (length - len(node.data)))
            node.mtime = self.clock()

    def trim(self, fd: int, length: int) -> None:
        with self._mutex:
            node = self._desc(fd).node
            mtime = node.mtime
            self.truncate(fd, length)
            node.mtime = mtime

    def size(self, fd: int) -> int:
        with self._mutex:
            self._enter("size", f"<fd {fd}>")
            return len(self._desc(fd).node.data)

    @property
    def shared_locks(self) -> bool:
        return False  # one process: multiprocess logs run on the real file system

    def map_shared(self, fd: int, size: int, *, writable: bool = True) -> Any:
        with self._mutex:
            self._enter("map_shared", self._path_of(fd))
            node = self._desc(fd).node
            if len(node.data) < size:
                raise _oserror(errno.EINVAL, self._path_of(fd))
            return _FaultMap(self, node)

    def boot_id(self) -> bytes:
        return self._boot

    def lock(self, fd: int, *, shared: bool = False) -> bool:
        with self._mutex:
            self._enter("lock", f"<fd {fd}>")
            desc = self._desc(fd)
            owner = desc.node.lock_owner
            if owner is not None and owner is not desc:
                return False
            desc.node.lock_owner = desc
            return True

    def is_locked(self, path: str) -> bool:
        with self._mutex:
            self._enter("is_locked", path)
            try:
                node = self._file(path)
            except FileNotFoundError:
                return False
            return node.lock_owner is not None

    # --- paths --------------------------------------------------------------------------------

    def read_file(self, path: str) -> bytes:
        with self._mutex:
            self._enter("read_file", path)
            out = bytes(self._file(path).data)
            self.bytes_read += len(out)
            return out

    def file_size(self, path: str) -> int:
        with self._mutex:
            self._enter("file_size", path)
            node = self._lookup(path)
            return len(node.data) if isinstance(node, _File) else 4096

    def exists(self, path: str) -> bool:
        with self._mutex:
            self._enter("exists", path)
            try:
                self._lookup(path)
            except (FileNotFoundError, NotADirectoryError):
                return False
            return True

    def is_dir(self, path: str) -> bool:
        with self._mutex:
            self._enter("is_dir", path)
            try:
                return isinstance(self._lookup(path), _Dir)
            except (FileNotFoundError, NotADirectoryError):
                return False

    def listdir(self, path: str) -> list[str]:
        with self._mutex:
            self._enter("listdir", path)
            node = self._lookup(path)
            if not isinstance(node, _Dir):
                raise _oserror(errno.ENOTDIR, path)
            return list(node.entries)

    def mkdir(self, path: str) -> None:
        with self._mutex:
            self._enter("mkdir", path)
            parent, name = self._parent(path)
            if name in parent.entries:
                raise _oserror(errno.EEXIST, path)
            parent.entries[name] = _Dir(self.clock())
            parent.mtime = self.clock()

    def makedirs(self, path: str) -> None:
        with self._mutex:
            self._enter("makedirs", path)
            node: _Dir = self._root
            for part in self._parts(path):
                child = node.entries.get(part)
                if child is None:
                    child = _Dir(self.clock())
                    node.entries[part] = child
                    node.mtime = self.clock()
                elif not isinstance(child, _Dir):
                    raise _oserror(errno.EEXIST, path)
                node = child

    def rename(self, src: str, dst: str) -> None:
        with self._mutex:
            self._enter("rename", f"{src} -> {dst}")
            fault = self._fault_for("rename", src)
            if fault is not None:
                assert fault.err is not None
                raise _oserror(fault.err, src)
            src_parent, src_name = self._parent(src)
            node = src_parent.entries.get(src_name)
            if node is None:
                raise _oserror(errno.ENOENT, src)
            dst_parent, dst_name = self._parent(dst)
            if self._norm(src) == self._norm(dst):
                return
            if isinstance(node, _Dir) and self._norm(dst).startswith(self._norm(src) + "/"):
                raise _oserror(errno.EINVAL, dst)
            target = dst_parent.entries.get(dst_name)
            if target is not None:
                if isinstance(node, _Dir) and not isinstance(target, _Dir):
                    raise _oserror(errno.ENOTDIR, dst)
                if isinstance(target, _Dir):
                    if not isinstance(node, _Dir):
                        raise _oserror(errno.EISDIR, dst)
                    if target.entries:
                        raise _oserror(errno.ENOTEMPTY, dst)
            del src_parent.entries[src_name]
            dst_parent.entries[dst_name] = node
            src_parent.mtime = dst_parent.mtime = self.clock()

    def _existing(self, path: str, *, is_dir: bool) -> tuple[_Dir, str, _File | _Dir]:
        """The entry at ``path`` with its parent: ENOENT if missing, EISDIR or ENOTDIR if it
        is not of the kind asked for (as unlink, rmdir and rmtree report)."""
        parent, name = self._parent(path)
        node = parent.entries.get(name)
        if node is None:
            raise _oserror(errno.ENOENT, path)
        if isinstance(node, _Dir) != is_dir:
            raise _oserror(errno.ENOTDIR if is_dir else errno.EISDIR, path)
        return parent, name, node

    def _detach(self, parent: _Dir, name: str) -> None:
        del parent.entries[name]
        parent.mtime = self.clock()

    def unlink(self, path: str) -> None:
        with self._mutex:
            self._enter("unlink", path)
            parent, name, _ = self._existing(path, is_dir=False)
            self._detach(parent, name)

    def rmdir(self, path: str) -> None:
        with self._mutex:
            self._enter("rmdir", path)
            parent, name, node = self._existing(path, is_dir=True)
            assert isinstance(node, _Dir)
            if node.entries:
                raise _oserror(errno.ENOTEMPTY, path)
            self._detach(parent, name)

    def rmtree(self, path: str) -> None:
        # One call, as shutil.rmtree is one call for the engine. Inside, entries vanish from
        # the live tree; like unlinks they become durable at fsync_dir of the parents involved
        # (the removed subtree keeps its own durable entries, which power_loss then restores
        # only if the top-level unlink was not synced).
        with self._mutex:
            self._enter("rmtree", path)
            parent, name, node = self._existing(path, is_dir=True)
            assert isinstance(node, _Dir)
            self._empty_live(node)
            self._detach(parent, name)

    def _empty_live(self, node: _Dir) -> None:
        for child in node.entries.values():
            if isinstance(child, _Dir):
                self._empty_live(child)
        node.entries = {}

    def fsync_dir(self, path: str) -> None:
        with self._mutex:
            self._enter("fsync_dir", path)
            node = self._lookup(path)
            if not isinstance(node, _Dir):
                raise _oserror(errno.ENOTDIR, path)
            fault = self._fault_for("fsync_dir", path)
            if fault is not None:
                assert fault.err is not None
                raise _oserror(fault.err, path)
            node.durable = dict(node.entries)

    def mtime(self, path: str) -> float:
        with self._mutex:
            self._enter("mtime", path)
            return self._lookup(path).mtime

    def remove_quietly(self, path: str) -> None:
        with self._mutex:
            self._enter("remove_quietly", path)
            try:
                parent, name = self._parent(path)
            except FileNotFoundError:
                return
            node = parent.entries.get(name)
            if node is None:
                return
            if isinstance(node, _Dir):
                raise _oserror(errno.EISDIR, path)
            del parent.entries[name]
            parent.mtime = self.clock()
