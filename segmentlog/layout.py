"""The log directory: its marker, its lock, and the rooms ``runs/``, ``trash/``, ``quarantine/``.

Strategy and invariants
- ``<dir>/SEGMENTLOG`` marks a segmentlog directory (format and version, JSON); segmentlog
  never writes into a non-empty directory without it. It is written once, atomically.
- ``<dir>/LOCK`` carries the writer lock (``flock``): exclusive for the one writer process,
  or shared by every writer opened with ``multiprocess=True`` (whose per-run locks are bytes
  of ``<dir>/LOCKS``, see ``shared.py``).
- ``<dir>/runs/<uuid>/`` holds a run's segments and indexes; a run id is always a
  ``uuid.UUID``, so no path is ever built from user text. ``<dir>/trash/`` holds runs being
  deleted; ``<dir>/quarantine/`` holds bytes repair took out of runs (never deleted by the
  engine; see ``repair.py``).
- This module knows paths and names; it does its I/O through the ``FileSystem`` it is given.
"""

from __future__ import annotations

import contextlib
import json
import os.path
import re
import uuid

from ._fs import FileSystem
from .errors import FormatVersionError, LockedError, NotASegmentLogError
from .events import uuid_from_canonical
from .format import FORMAT_VERSION, TMP_SUFFIX, index_name, parse_segment_name, segment_name

__all__ = [
    "LOCK",
    "MARKER",
    "QUARANTINE",
    "RUNS",
    "TRASH",
    "Layout",
    "check_directory",
    "list_run_ids",
    "list_segments",
]

MARKER = "SEGMENTLOG"
LOCK = "LOCK"
RUNS = "runs"
TRASH = "trash"
QUARANTINE = "quarantine"

_RUN_NAME = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Layout:
    """The paths of one log directory."""

    __slots__ = ("lock", "marker", "quarantine", "root", "runs", "trash")

    def __init__(self, root: str) -> None:
        self.root = root
        self.marker = f"{root}/{MARKER}"
        self.lock = f"{root}/{LOCK}"
        self.runs = f"{root}/{RUNS}"
        self.trash = f"{root}/{TRASH}"
        self.quarantine = f"{root}/{QUARANTINE}"

    def run_dir(self, run_id: uuid.UUID) -> str:
        """The directory of a run."""
        return f"{self.runs}/{run_id}"


def segment_path(run_dir: str, base_seq: int) -> str:
    """Path of segment ``base_seq`` in ``run_dir``."""
    return f"{run_dir}/{segment_name(base_seq)}"


def index_path(run_dir: str, base_seq: int) -> str:
    """Path of the index of segment ``base_seq`` in ``run_dir``."""
    return f"{run_dir}/{index_name(base_seq)}"


def check_directory(fs: FileSystem, path: str) -> None:
    """Raise unless ``path`` is a segmentlog directory this version can read."""
    if not fs.is_dir(path):
        raise NotASegmentLogError(
            f"{path} is not a segmentlog directory (it does not exist); check the path"
        )
    marker = f"{path}/{MARKER}"
    if not fs.exists(marker):
        raise NotASegmentLogError(
            f"{path} is not a segmentlog directory (no {MARKER} file); "
            "segmentlog only writes into empty or new directories: choose another path"
        )
    try:
        info = json.loads(fs.read_file(marker))
        version = int(info["version"])
        fmt = info["format"]
    except (ValueError, KeyError, TypeError) as exc:
        raise NotASegmentLogError(
            f"{marker} is unreadable ({exc}); this is not a segmentlog directory or its "
            "marker was damaged"
        ) from exc
    if fmt != "segmentlog":
        raise NotASegmentLogError(f"{marker} names format {fmt!r}, not segmentlog")
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"{path} was written by on-disk format version {version}; this segmentlog reads "
            f"up to version {FORMAT_VERSION}. Upgrade segmentlog to open it."
        )


def is_fresh(fs: FileSystem, path: str) -> bool:
    """True for a missing directory, an empty one, or one left by a crash during creation."""
    if not fs.exists(path):
        return True
    if not fs.is_dir(path):
        return False
    names = fs.listdir(path)
    return all(n.startswith(f"{MARKER}.") and n.endswith(TMP_SUFFIX) for n in names)


def init_directory(fs: FileSystem, path: str) -> None:
    """Make ``path`` a segmentlog directory (it is missing or empty).

    The marker is written first (a temp file of this process, fsync, rename), so a crash
    part-way leaves either an empty directory, one holding only ``SEGMENTLOG.*.tmp`` files
    (both still count as fresh), or a complete marker. Processes that create the same
    directory at the same moment each write their own temp file and rename it over the
    other's identical marker, so neither fails. ``runs/`` and ``trash/`` are (re)created by
    every writable open.
    """
    fs.makedirs(path)
    tmp = f"{path}/{MARKER}.{uuid.uuid4().hex}{TMP_SUFFIX}"
    fd = fs.create_new(tmp)
    try:
        data = json.dumps({"format": "segmentlog", "version": FORMAT_VERSION}).encode() + b"\n"
        fs.write(fd, data)
        fs.fsync(fd)
    finally:
        fs.close(fd)
    fs.rename(tmp, f"{path}/{MARKER}")
    fs.fsync_dir(path)
    fs.fsync_dir(os.path.dirname(os.path.abspath(path)))


def open_for_writing(fs: FileSystem, path: str, *, shared: bool = False) -> int:
    """Create or check the directory for a writer and take its lock; returns the lock's fd.

    An exclusive writer takes the lock exclusively; ``shared`` (``multiprocess=True``)
    writers share it with each other, and the two kinds exclude each other.

    Raises ``LockedError`` when the lock is taken in the other way, and
    ``NotASegmentLogError``/``FormatVersionError`` as ``check_directory`` does.
    """
    if is_fresh(fs, path):
        init_directory(fs, path)
    elif not fs.is_dir(path):
        raise NotASegmentLogError(f"{path} is a file, not a directory; choose another path")
    check_directory(fs, path)
    layout = Layout(path)
    fd = fs.open_append(layout.lock, create=True)
    if not fs.lock(fd, shared=shared):
        fs.close(fd)
        if shared:
            raise LockedError(
                f"{path} is open by an exclusive writer in another process; close it, or "
                "open every writer with multiprocess=True (or read_only=True to inspect it)"
            )
        raise LockedError(
            f"{path} is open for writing in another process; close that writer, open every "
            "writer with multiprocess=True, or open with read_only=True to inspect the log"
        )
    try:
        missing = [sub for sub in (layout.runs, layout.trash) if not fs.is_dir(sub)]
        for sub in missing:
            fs.makedirs(sub)
        if missing:  # runs/ must survive a power loss, or every run in it would vanish
            fs.fsync_dir(path)
        for name in fs.listdir(layout.trash):
            with contextlib.suppress(FileNotFoundError):  # another writer emptied it first
                fs.rmtree(f"{layout.trash}/{name}")
    except BaseException:
        fs.close(fd)
        raise
    return fd


def list_run_ids(fs: FileSystem, path: str) -> list[uuid.UUID]:
    """Run ids with a directory under ``path/runs``, sorted.

    Only canonical lowercase UUID names count (the engine never writes anything else).
    Canonical names sort as their UUIDs do, so they are sorted as strings, which is far
    cheaper than comparing 100 000 UUID objects.
    """
    names = [n for n in fs.listdir(f"{path}/{RUNS}") if _RUN_NAME.fullmatch(n)]
    names.sort()
    return [uuid_from_canonical(n) for n in names]


def parse_run_name(name: str) -> uuid.UUID | None:
    """The run id a directory name stands for, or None for any other name."""
    return uuid_from_canonical(name) if _RUN_NAME.fullmatch(name) else None


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
