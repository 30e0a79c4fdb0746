"""The file-system layer: the only module in segmentlog that calls ``os``.

Strategy and invariants
- The engine does every file-system call through a ``FileSystem`` object, so tests can swap
  in a layer that fails the Nth write or fsync, tears writes, counts bytes read, or forgets
  everything unsynced on a simulated power loss (see ``tests/fault/``).
- Calls are thin: no buffering, no retries. ``write`` may write fewer bytes than asked (as
  ``os.write`` may); the caller handles it. An fsync is never retried after an error.
- Paths are ``str``; file descriptors are ``int``. Errors are the ``OSError`` the OS raised.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil

__all__ = ["OS_FS", "FileSystem"]


class FileSystem:
    """The real file system. Subclass and override to inject faults in tests."""

    # --- descriptors ---------------------------------------------------------------------

    def open_read(self, path: str) -> int:
        """Open an existing file for reading."""
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def open_append(self, path: str, *, create: bool = False) -> int:
        """Open a file for appending (every write goes to the end) and reading."""
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        return os.open(path, flags, 0o644)

    def create_new(self, path: str) -> int:
        """Create (or empty) a file for writing and reading."""
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)

    def close(self, fd: int) -> None:
        """Close a descriptor."""
        os.close(fd)

    def write(self, fd: int, data: bytes | bytearray | memoryview) -> int:
        """Write at the descriptor's position; returns bytes written (may be short)."""
        return os.write(fd, data)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        """Read up to ``size`` bytes at ``offset``."""
        return os.pread(fd, size, offset)

    def fsync(self, fd: int) -> None:
        """Flush data and metadata of the file to stable storage."""
        os.fsync(fd)

    def fdatasync(self, fd: int) -> None:
        """Flush the file's data (and the metadata needed to read it) to stable storage."""
        os.fdatasync(fd)

    def truncate(self, fd: int, length: int) -> None:
        """Cut the file to ``length`` bytes."""
        os.ftruncate(fd, length)

    def size(self, fd: int) -> int:
        """The file's current size in bytes."""
        return os.fstat(fd).st_size

    def lock(self, fd: int) -> bool:
        """Take an exclusive, non-blocking lock on an open file; False if another holds it."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    def is_locked(self, path: str) -> bool:
        """True when another open file description holds the lock on ``path``."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return True
            raise
        finally:
            os.close(fd)
        return False

    # --- paths ---------------------------------------------------------------------------

    def read_file(self, path: str) -> bytes:
        """Read a whole (small) file."""
        with open(path, "rb") as f:
            return f.read()

    def file_size(self, path: str) -> int:
        """Size of the file at ``path``."""
        return os.stat(path).st_size

    def exists(self, path: str) -> bool:
        """True if ``path`` names anything."""
        return os.path.lexists(path)

    def is_dir(self, path: str) -> bool:
        """True if ``path`` is a directory."""
        return os.path.isdir(path)

    def listdir(self, path: str) -> list[str]:
        """Names in a directory (unsorted)."""
        return os.listdir(path)

    def mkdir(self, path: str) -> None:
        """Create one directory."""
        os.mkdir(path)

    def makedirs(self, path: str) -> None:
        """Create a directory and its missing parents."""
        os.makedirs(path, exist_ok=True)

    def rename(self, src: str, dst: str) -> None:
        """Atomically rename ``src`` to ``dst`` (replacing ``dst``)."""
        os.replace(src, dst)

    def unlink(self, path: str) -> None:
        """Remove a file."""
        os.unlink(path)

    def rmdir(self, path: str) -> None:
        """Remove an empty directory."""
        os.rmdir(path)

    def rmtree(self, path: str) -> None:
        """Remove a directory and everything below it."""
        shutil.rmtree(path)

    def fsync_dir(self, path: str) -> None:
        """Make a directory's entries (creates, renames, unlinks) durable."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def mtime(self, path: str) -> float:
        """Last modification time of ``path`` (seconds since the epoch)."""
        return os.stat(path).st_mtime

    def remove_quietly(self, path: str) -> None:
        """Remove a file if it exists."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


#: The default, real file system.
OS_FS = FileSystem()
