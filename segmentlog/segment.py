"""One segment file: create it, append frames to it, sync, seal, cut and close it.

Strategy and invariants
- A ``Segment`` owns one file (and its sparse index file) and one data end, ``size``: the
  offset after its last frame. It knows nothing of runs, policies or directories; the run
  decides when to sync, roll or cut.
- Frames are written with ``pwrite`` at ``size``, never with ``O_APPEND``, because the file may
  extend past ``size``: space is reserved ahead of the write offset (``preallocate``) in chunks
  that start small and double, so that most fdatasyncs flush data and no file-size metadata.
  Zeros after the last frame are a clean end (``ZERO_FILL``); ``seal`` and a clean ``close``
  trim them.
- A segment is created in place, never over an existing file (``O_EXCL``): an empty file,
  whose header is written together with its first frames in one ``pwrite``; nothing is
  fsynced here. A crash before the header is
  durable leaves an empty, short or zero header with no frames after it, which recovery
  removes as an interrupted creation (rejected: a temp file, fsync and rename per segment,
  which cost three system calls and an fsync per new run for a guarantee recovery already
  gives).
- ``append`` writes a buffer of whole frames; on any error it cuts the file back to where it
  was, so no half frame stays behind, and re-raises. The run then fails stop.
- The index file is created lazily, once the segment holds ``INDEX_FILE_INTERVALS`` intervals, and
  written without fsync: it is a cache (``index.py``); an error writing it is swallowed.
"""

from __future__ import annotations

import contextlib
import uuid

from ._fs import FileSystem
from .durability import FsyncTimer
from .format import (
    MAX_SEGMENT_OFFSET,
    SEGMENT_HEADER_SIZE,
    encode_segment_header,
    index_name,
    segment_name,
)
from .index import SparseIndex

__all__ = ["INDEX_FILE_INTERVALS", "PREALLOCATE_MAX", "PREALLOCATE_MIN", "Segment"]

#: A segment's index is kept in memory only until the segment holds this many index
#: intervals of frames (64 KiB with the default 4 KiB interval).
INDEX_FILE_INTERVALS = 16
#: The first chunk reserved ahead of the write offset, and the largest one.
PREALLOCATE_MIN = 64 * 1024
PREALLOCATE_MAX = 8 * 1024 * 1024


class Segment:
    """A segment file of one run: its name, extent, descriptors and sparse index."""

    __slots__ = (
        "allocated",
        "base_seq",
        "dir",
        "fd",
        "header",
        "index",
        "index_fd",
        "index_file",
        "last_seq",
        "path",
        "size",
        "synced",
    )

    def __init__(self, directory: str, base_seq: int, index: SparseIndex) -> None:
        self.dir = directory
        self.base_seq = base_seq
        self.path = f"{directory}/{segment_name(base_seq)}"
        #: Offset after the last frame (the data end).
        self.size = SEGMENT_HEADER_SIZE
        #: The file's size: ``size`` plus any preallocated zeros.
        self.allocated = SEGMENT_HEADER_SIZE
        self.last_seq = base_seq - 1
        #: Offset up to which the file is known to be on stable storage.
        self.synced = 0
        self.fd: int | None = None
        self.index_fd: int | None = None
        self.index = index
        #: A new segment's header, until it is written with the first frames.
        self.header: bytes | None = None
        #: True once the index file exists (so new points are appended to it).
        self.index_file = False

    @property
    def index_path(self) -> str:
        """Path of this segment's sparse index file."""
        return f"{self.dir}/{index_name(self.base_seq)}"

    @property
    def index_file_min(self) -> int:
        """Below this size the segment's index stays in memory (``write_index``)."""
        return SEGMENT_HEADER_SIZE + INDEX_FILE_INTERVALS * self.index.interval

    @property
    def frames(self) -> int:
        """Number of frames in the segment."""
        return self.last_seq - self.base_seq + 1

    # --- creation ------------------------------------------------------------------------

    @classmethod
    def create(
        cls, fs: FileSystem, directory: str, run_id: uuid.UUID, base_seq: int, interval: int
    ) -> Segment:
        """Create a new, empty segment file, open for writing. No fsync.

        Its header is written with its first frames, in one ``pwrite``. The file must not
        exist (``FileExistsError``): a view that believes it does not, while it does, is
        stale, and must fail loudly rather than empty another writer's segment.
        """
        seg = cls(directory, base_seq, SparseIndex(base_seq, interval))
        seg.fd = fs.create_exclusive(seg.path)
        seg.header = encode_segment_header(run_id, base_seq)
        seg.allocated = 0
        return seg

    # --- descriptors ---------------------------------------------------------------------

    def open_writer(self, fs: FileSystem) -> None:
        """Open the segment for writing (no-op when already open)."""
        if self.fd is None:
            self.fd = fs.open_write(self.path)
            self.allocated = max(self.size, fs.size(self.fd))

    @property
    def open_files(self) -> int:
        """Descriptors this segment holds open."""
        return (self.fd is not None) + (self.index_fd is not None)

    def close(self, fs: FileSystem, *, trim: bool = False) -> None:
        """Close the descriptors, if open; with ``trim``, first cut preallocated zeros."""
        fd, ifd = self.fd, self.index_fd
        self.fd = self.index_fd = None
        if fd is not None:
            if trim and self.allocated > self.size:
                with contextlib.suppress(OSError):
                    fs.trim(fd, self.size)
                    self.allocated = self.size
            fs.close(fd)
        if ifd is not None:
            fs.close(ifd)

    # --- writing -------------------------------------------------------------------------

    def room_for(self, nbytes: int, segment_bytes: int) -> bool:
        """True if ``nbytes`` more fit (an empty segment always takes one record)."""
        if self.last_seq < self.base_seq:
            return self.size + nbytes <= MAX_SEGMENT_OFFSET
        return self.size + nbytes <= segment_bytes

    def append(
        self,
        fs: FileSystem,
        data: bytes | bytearray,
        last_seq: int,
        preallocate_to: int = 0,
    ) -> None:
        """Write whole frames at the data end; on error cut the file back and re-raise.

        ``preallocate_to`` bounds how far ahead space may be reserved (0: never).
        """
        start = self.size
        end = start + len(data)
        if end > self.allocated and preallocate_to > end:
            self._reserve(fs, end, preallocate_to)
        header = self.header
        try:
            if header is None:
                assert self.fd is not None, "open_writer first"
                written = fs.pwrite(self.fd, data, start)
                if written != len(data):
                    self._write_rest(fs, data, start, written)
            else:
                self._write_rest(fs, header + data, 0, 0)
                start = 0
                self.header = None
        except BaseException:
            # Even a failed write may have landed a prefix: always cut back to the frame
            # boundary. If that fails too, recovery cuts the torn tail on reopen.
            with contextlib.suppress(OSError):
                assert self.fd is not None
                fs.truncate(self.fd, start)
                self.allocated = start
            raise
        self.size = end
        self.allocated = max(self.allocated, end)
        self.last_seq = last_seq

    def _reserve(self, fs: FileSystem, end: int, limit: int) -> None:
        chunk = min(PREALLOCATE_MAX, max(PREALLOCATE_MIN, self.size - SEGMENT_HEADER_SIZE))
        target = min(limit, max(end, self.allocated) + chunk)
        assert self.fd is not None
        try:
            if fs.preallocate(self.fd, self.allocated, target - self.allocated):
                self.allocated = target
        except OSError:
            pass  # a full disk: the write itself says whether the frames still fit

    def _write_rest(self, fs: FileSystem, data: bytes | bytearray, offset: int, done: int) -> None:
        """Write ``data[done:]`` at ``offset + done`` (after a short write, or all of it)."""
        fd = self.fd
        assert fd is not None, "open_writer first"
        with memoryview(data) as view:
            while done < len(view):
                done += fs.pwrite(fd, view[done:], offset + done)

    def write_index(self, fs: FileSystem, entries: bytes) -> None:
        """Persist index entries just added (a cache: errors are swallowed, and cost only a
        longer scan later).

        A segment holds its index in memory only until it reaches ``index_file_min`` bytes:
        below that a reopen scans it whole at no real cost, and a small run saves the file.
        The file is then written with every point so far, and appended to after that.
        """
        if not entries:
            return
        with contextlib.suppress(OSError):
            if self.index_fd is None:
                if not self.index_file and self.size < self.index_file_min:
                    return
                self.index_fd = fs.open_append(self.index_path, create=True)
                if not self.index_file and fs.size(self.index_fd) == 0:
                    entries = self.index.to_bytes()  # the first write holds every point
                self.index_file = True
            fs.write(self.index_fd, entries)

    def sync(self, fs: FileSystem, timer: FsyncTimer) -> None:
        """fdatasync the file; everything written so far is durable afterwards."""
        assert self.fd is not None
        target = self.size
        timer.run(fs.fdatasync, self.fd, self.path)
        self.synced = max(self.synced, target)

    def cut(self, fs: FileSystem, end: int, last_seq: int) -> None:
        """Truncate the file to ``end`` (keeping seqs up to ``last_seq``); forget index points
        past it."""
        self.index.truncate(end)
        self.last_seq = last_seq
        self.size = end
        if self.fd is not None:
            fs.truncate(self.fd, end)
            self.allocated = end
        self.synced = min(self.synced, end)

    def seal(self, fs: FileSystem, timer: FsyncTimer) -> None:
        """Trim the preallocated tail and make the whole file durable (before a roll)."""
        assert self.fd is not None
        if self.allocated > self.size:
            fs.trim(self.fd, self.size)
            self.allocated = self.size
        if self.synced < self.size:
            self.sync(fs, timer)
