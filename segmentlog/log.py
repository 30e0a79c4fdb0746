"""SegmentLog: runs, handles, locking and fsync policies over segment files.

Strategy and invariants
- Layout: ``<dir>/SEGMENTLOG`` (marker: format and version), ``<dir>/LOCK`` (flock of the one
  writer process), ``<dir>/runs/<uuid>/<base seq:020d>.seg|.idx``, ``<dir>/trash/`` (runs being
  deleted). A run id is always a ``uuid.UUID``, so no path is ever built from user text.
- Opening touches no run directory: a run is recovered on its first touch (``recovery.py``).
- Each run has a lock; its seq is assigned, its frames encoded and written under that lock,
  so frames never interleave and seqs are never reused. Frames reach the kernel before
  ``append`` returns under every policy.
- Durability per policy (``durability.py``): ``always`` fdatasyncs under the run lock;
  ``batch`` is group commit: after writing, an appender takes the run's sync lock; whoever
  holds it fdatasyncs everything written so far, so one fsync covers every waiting appender.
- Reads see a run up to ``visible_seq``: acknowledged appends only (under ``batch`` an append
  becomes visible once its fsync is done), so a failed append is never read or delivered.
- A write or fsync error makes the log fail-stop: unacknowledged bytes are cut off, that
  append raises ``LogFailedError`` and so does every later one until the log is reopened.
- Writer descriptors are held for at most ``max_open_files`` files (LRU); readers open and
  close their own descriptors per call, so eviction never pulls a descriptor from under them.
- Public methods check closed/failed state first, then take the lock, then call a private
  twin that does the work.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os.path
import re
import struct
import threading
import time
import uuid
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from types import TracebackType
from typing import Any, Generic, TypeVar

import msgspec

from ._fs import OS_FS, FileSystem
from .codec import (
    DEFAULT_MAX_RECORD_BYTES,
    FORMAT_VERSION,
    FRAME_HEADER_SIZE,
    MAX_SEGMENT_OFFSET,
    SEGMENT_HEADER_SIZE,
    EnvelopeCodec,
    FrameCorruption,
    FrameEncoder,
    walk_frames,
)
from .durability import FsyncPolicy, FsyncTimer, IntervalFlusher, logger
from .errors import (
    CorruptionError,
    FormatVersionError,
    LockedError,
    LogClosedError,
    LogFailedError,
    NotASegmentLogError,
    NotFoundError,
    ReadOnlyError,
    SchemaMismatchError,
)
from .events import AgentEvent, Envelope, new_event_id, utcnow, uuid_from_canonical
from .index import SparseIndex
from .recovery import RecoveryMode, RecoveryReport, list_segments, recover_run
from .segment import Segment, scan, segment_name
from .store import DEFAULT_PAGE_LIMIT, check_page_args

__all__ = ["LogOptions", "LogStats", "RunInfo", "SegmentLog", "open"]

E = TypeVar("E")

MARKER = "SEGMENTLOG"
LOCK = "LOCK"
RUNS = "runs"
TRASH = "trash"

_MIB = 1024 * 1024
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class LogOptions:
    """Every option of ``segmentlog.open``; unset fields take these defaults."""

    #: When appends reach stable storage: "always", "batch" (group commit), "interval",
    #: "never". Default "batch".
    fsync: FsyncPolicy = FsyncPolicy.BATCH
    #: Background sync period for ``fsync="interval"``, in milliseconds. Default 1000.
    fsync_interval_ms: int = 1000
    #: A segment file rolls over once it would grow past this many bytes (4 KiB .. 1 GiB).
    #: Default 64 MiB.
    segment_bytes: int = 64 * _MIB
    #: A sparse index entry is recorded every this many bytes of frames. Default 4096.
    index_interval_bytes: int = 4096
    #: Largest encoded envelope accepted by ``append`` (and trusted when reading).
    #: Default 8 MiB.
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    #: Most writer file descriptors held open at once (LRU); two per active run. Default 256.
    max_open_files: int = 256
    #: What to do with damage: "strict", "tolerate_tail" (torn tails only), "salvage".
    #: Default "tolerate_tail".
    recovery: RecoveryMode = RecoveryMode.TOLERATE_TAIL
    #: Open for inspection: no lock, no writes, sees what writers have acknowledged.
    #: Default False.
    read_only: bool = False
    #: The msgspec type of events (a Struct or tagged union whose values have ``run_id``).
    #: Default ``AgentEvent``.
    event_type: Any = AgentEvent
    #: fsyncs slower than this many seconds are logged as warnings. Default 1.0.
    slow_fsync_seconds: float = 1.0
    #: Decode each record before writing it, so a field of the wrong type (msgspec does not
    #: check types when a Struct is built) is refused instead of poisoning later reads.
    #: Costs about a microsecond per append; turn off only for trusted, typed producers.
    #: Default True.
    validate_events: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "fsync", FsyncPolicy.parse(self.fsync))
        object.__setattr__(self, "recovery", RecoveryMode.parse(self.recovery))
        _check_range("fsync_interval_ms", self.fsync_interval_ms, 1, 3_600_000)
        _check_range("segment_bytes", self.segment_bytes, 4096, 1 << 30)
        _check_range("index_interval_bytes", self.index_interval_bytes, 64, 1 << 30)
        _check_range("max_record_bytes", self.max_record_bytes, 64, 256 * _MIB)
        _check_range("max_open_files", self.max_open_files, 2, 1 << 20)
        for name in ("read_only", "validate_events"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        slow = self.slow_fsync_seconds
        if isinstance(slow, bool) or not isinstance(slow, int | float):
            raise TypeError(f"slow_fsync_seconds must be a number, got {slow!r}")
        if not slow >= 0:
            raise ValueError(f"slow_fsync_seconds must be >= 0, got {slow!r}")


def _check_range(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")


class LogStats(msgspec.Struct, frozen=True, kw_only=True):
    """Counters for operators, from ``SegmentLog.stats()``."""

    appends: int
    bytes_written: int
    fsyncs: int
    fsync_p50_us: float
    fsync_p99_us: float
    open_files: int
    runs_recovered: int
    bytes_dropped: int


class RunInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A summary of one run, from ``SegmentLog.run_info()``."""

    run_id: uuid.UUID
    events: int
    first_seq: int | None
    last_seq: int | None
    bytes: int
    segments: int
    session_id: uuid.UUID | None
    terminal: bool
    #: Last modification time of the run's newest segment (seconds since the epoch).
    mtime: float


class _Run:
    """In-memory state of one run. Guarded by ``lock``.

    ``sync_cond`` guards ``syncing`` (one fsync of the run at a time) and wakes appenders
    waiting for their seq to become durable.
    """

    __slots__ = (
        "appends",
        "bases",
        "bytes_written",
        "dir",
        "dirs_pending",
        "durable_seq",
        "fingerprint",
        "id",
        "last_seq",
        "loaded",
        "lock",
        "segments",
        "session_id",
        "sync_cond",
        "syncing",
        "tail_payload",
        "terminal",
        "visible_seq",
    )

    def __init__(self, run_id: uuid.UUID, run_dir: str) -> None:
        self.id = run_id
        self.dir = run_dir
        self.lock = threading.Lock()
        self.sync_cond = threading.Condition(threading.Lock())
        self.syncing = False
        self.segments: list[Segment] = []
        self.bases: list[int] = []
        self.last_seq = 0
        self.visible_seq = 0
        self.durable_seq = 0
        self.session_id: uuid.UUID | None = None
        self.terminal = False
        #: The last record's payload, decoded lazily for session id and terminal state (so
        #: recovery never needs the event type).
        self.tail_payload: bytes | None = None
        #: Read-only: identifies the run's incarnation (see SegmentLog._refresh).
        self.fingerprint: bytes | None = None
        #: Under fsync="never": directory entries created without an fsync.
        self.dirs_pending = False
        self.loaded = False
        self.appends = 0
        self.bytes_written = 0

    def reset(self) -> None:
        self.segments = []
        self.bases = []
        self.last_seq = self.visible_seq = self.durable_seq = 0
        self.session_id = None
        self.terminal = False
        self.tail_payload = None


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


_RUN_NAME = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def list_run_ids(fs: FileSystem, path: str) -> list[uuid.UUID]:
    """Run ids with a directory under ``path/runs``, sorted.

    Only canonical lowercase UUID names count (the engine never writes anything else).
    Canonical names sort as their UUIDs do, so they are sorted as strings, which is far
    cheaper than comparing 100 000 UUID objects.
    """
    names = [n for n in fs.listdir(f"{path}/{RUNS}") if _RUN_NAME.fullmatch(n)]
    names.sort()
    return [uuid_from_canonical(n) for n in names]


def _init_directory(fs: FileSystem, path: str) -> None:
    """Make ``path`` a segmentlog directory (it is missing or empty).

    The marker is written first (tmp, fsync, rename), so a crash part-way leaves either an
    empty directory, one holding only ``SEGMENTLOG.tmp`` (both still count as empty), or a
    complete marker; ``runs/`` and ``trash/`` are (re)created by every writable open.
    """
    fs.makedirs(path)
    tmp = f"{path}/{MARKER}.tmp"
    fd = fs.create_new(tmp)
    try:
        data = json.dumps({"format": "segmentlog", "version": FORMAT_VERSION}).encode() + b"\n"
        fs.write(fd, data)
        fs.fsync(fd)
    finally:
        fs.close(fd)
    fs.rename(tmp, f"{path}/{MARKER}")
    fs.fsync_dir(path)
    parent = os.path.dirname(os.path.abspath(path))
    fs.fsync_dir(parent)


def _is_fresh(fs: FileSystem, path: str) -> bool:
    """True for a missing directory, an empty one, or one left by a crash during creation."""
    if not fs.exists(path):
        return True
    return fs.is_dir(path) and set(fs.listdir(path)) <= {f"{MARKER}.tmp"}


def open(
    path: str | os.PathLike[str], *, fs: FileSystem | None = None, **options: Any
) -> SegmentLog[Any]:
    """Open (creating if missing or empty) the log directory at ``path``.

    ``options`` are the fields of ``LogOptions`` (each documents its default). ``fs`` swaps
    the file-system layer (tests inject faults through it).

    Raises ``LockedError`` if another process has it open for writing,
    ``NotASegmentLogError`` for a non-empty foreign directory (or a missing one when
    ``read_only``), ``FormatVersionError`` for a directory of a newer format, and
    ``ValueError``/``TypeError`` for a bad option.
    """
    unknown = set(options) - {f.name for f in fields(LogOptions)}
    if unknown:
        raise TypeError(
            f"unknown option(s) {', '.join(sorted(unknown))}; see segmentlog.LogOptions"
        )
    opts = LogOptions(**options)
    return SegmentLog(os.fspath(path), opts, fs or OS_FS)


class SegmentLog(Generic[E]):
    """A directory of per-run segment logs. Create it with ``segmentlog.open``.

    Thread-safe. One process may write a directory; any number may read it with
    ``read_only=True``. Use it as a context manager, or call ``close()``.
    """

    def __init__(self, path: str, options: LogOptions, fs: FileSystem) -> None:
        self.path = path
        self.options = options
        self._fs = fs
        self._runs_dir = f"{path}/{RUNS}"
        self._policy = options.fsync
        self._read_only = options.read_only
        self._codec: EnvelopeCodec[E] = EnvelopeCodec(options.event_type)
        self._encoder = FrameEncoder(options.max_record_bytes)
        self._timer = FsyncTimer(options.slow_fsync_seconds)
        self._runs: dict[uuid.UUID, _Run] = {}
        self._runs_lock = threading.Lock()
        self._lru: OrderedDict[uuid.UUID, _Run] = OrderedDict()
        self._lru_lock = threading.Lock()
        self._lru_capacity = max(1, options.max_open_files // 2)
        self._failed: BaseException | None = None
        self._closed = False
        self._reports: list[RecoveryReport] = []
        self._runs_recovered = 0
        self._appended = threading.Condition()
        self._waiters = 0
        self._lock_fd: int | None = None
        self._flusher: IntervalFlusher | None = None
        self._open_directory()
        if self._policy is FsyncPolicy.INTERVAL and not self._read_only:
            self._flusher = IntervalFlusher(options.fsync_interval_ms / 1000, self._flush_dirty)

    # --- opening -------------------------------------------------------------------------

    def _open_directory(self) -> None:
        fs, path = self._fs, self.path
        if self._read_only:
            check_directory(fs, path)
            return
        if _is_fresh(fs, path):
            _init_directory(fs, path)
        elif not fs.is_dir(path):
            raise NotASegmentLogError(f"{path} is a file, not a directory; choose another path")
        check_directory(fs, path)
        fd = fs.open_append(f"{path}/{LOCK}", create=True)
        if not fs.lock(fd):
            fs.close(fd)
            raise LockedError(
                f"{path} is open for writing in another process; close that writer, or open "
                "with read_only=True to inspect the log beside it"
            )
        self._lock_fd = fd
        missing = [sub for sub in (RUNS, TRASH) if not fs.is_dir(f"{path}/{sub}")]
        for sub in missing:
            fs.makedirs(f"{path}/{sub}")
        if missing:  # runs/ must survive a power loss, or every run in it would vanish
            fs.fsync_dir(path)
        self._empty_trash()

    def _empty_trash(self) -> None:
        trash = f"{self.path}/{TRASH}"
        for name in self._fs.listdir(trash):
            self._fs.rmtree(f"{trash}/{name}")

    # --- context manager -----------------------------------------------------------------

    def __enter__(self) -> SegmentLog[E]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("failed" if self._failed else "open")
        return f"<SegmentLog {self.path!r} fsync={self._policy.value} {state}>"

    # --- state checks --------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError(f"the log at {self.path} is closed; open it again")

    def _check_writable(self) -> None:
        if self._closed:
            raise LogClosedError(f"the log at {self.path} is closed; open it again")
        if self._read_only:
            raise ReadOnlyError(
                f"the log at {self.path} was opened read_only; open it without read_only to write"
            )
        if self._failed is not None:
            raise LogFailedError(
                f"the log at {self.path} stopped accepting appends after an I/O error "
                f"({self._failed}); fix the cause (disk full? failing disk?) and reopen it",
                self._failed,
            )

    def _fail(self, exc: BaseException) -> LogFailedError:
        if self._failed is None:
            self._failed = exc
        return LogFailedError(
            f"append failed and was rolled back: {exc}. The log now refuses appends until "
            "it is reopened; fix the cause (disk full? failing disk?) and reopen it",
            exc,
        )

    # --- runs ----------------------------------------------------------------------------

    def _get_run(self, run_id: uuid.UUID) -> _Run:
        """The run's state object, loaded (recovered) on first touch."""
        run = self._runs.get(run_id)
        if run is None:
            with self._runs_lock:
                run = self._runs.get(run_id)
                if run is None:
                    run = _Run(run_id, f"{self._runs_dir}/{run_id}")
                    self._runs[run_id] = run
        if not run.loaded:
            with run.lock:
                if not run.loaded:
                    self._load(run)
        return run

    def _load(self, run: _Run) -> None:
        fs = self._fs
        if not fs.is_dir(run.dir):
            run.loaded = True
            return
        writable = not self._read_only
        recovered = recover_run(
            fs,
            run.id,
            run.dir,
            mode=self.options.recovery,
            max_record_bytes=self.options.max_record_bytes,
            index_interval=self.options.index_interval_bytes,
            writable=writable,
            sync_after_repair=self._policy is not FsyncPolicy.NEVER,
        )
        self._runs_recovered += 1
        self._reports.extend(recovered.reports)
        run.segments = recovered.segments
        run.bases = [s.base_seq for s in run.segments]
        run.last_seq = run.visible_seq = recovered.last_seq
        # Sealed segments are durable; the last one's tail may not be (no fsync at recovery),
        # so the next sync() or group commit covers it.
        run.durable_seq = run.segments[-2].last_seq if len(run.segments) > 1 else 0
        # A writer under fsync="never" created entries without directory fsyncs, and which
        # policy the last writer had is not recorded: the first sync covers them too.
        run.dirs_pending = writable and bool(run.segments)
        run.tail_payload = recovered.last_payload
        if self._read_only and run.segments:
            run.fingerprint = self._fingerprint(run)
        if writable and not run.segments:
            with contextlib.suppress(OSError):
                fs.rmdir(run.dir)
        run.loaded = True

    def _refresh(self, run: _Run) -> None:
        """Read-only: pick up frames and segments a writer added since the last look.

        A run the writer deleted (and perhaps re-created) since is noticed by its first
        frame's checksum (its fingerprint) or a shrunken last segment, and loaded afresh.
        """
        with run.lock:
            stale = run.loaded and bool(run.segments) and self._fingerprint(run) != run.fingerprint
            if stale or not run.loaded or not run.segments:
                self._reload(run)
                return
            bases = list_segments(self._fs, run.dir, writable=False)
            for base in bases:
                if base > run.bases[-1]:
                    if not self._extend_tail(run) or run.last_seq + 1 != base:
                        return
                    seg = Segment(
                        run.dir, base, SparseIndex(base, self.options.index_interval_bytes)
                    )
                    run.segments.append(seg)
                    run.bases.append(base)
            if not self._extend_tail(run) and self._shrunk(run):
                self._reload(run)

    def _reload(self, run: _Run) -> None:
        """Read-only: forget what is known of the run and load it again."""
        run.reset()
        run.loaded = False
        self._load(run)

    def _fingerprint(self, run: _Run) -> bytes | None:
        """The checksum field of the run's first frame (None if unreadable)."""
        try:
            fd = self._fs.open_read(f"{run.dir}/{segment_name(1)}")
        except FileNotFoundError:
            return None
        try:
            return self._fs.pread(fd, 8, SEGMENT_HEADER_SIZE + 4)
        finally:
            self._fs.close(fd)

    def _shrunk(self, run: _Run) -> bool:
        seg = run.segments[-1]
        try:
            return self._fs.file_size(seg.path) < seg.size
        except FileNotFoundError:
            return True

    def _extend_tail(self, run: _Run) -> bool:
        """Read-only: verify frames appended to the last segment; True if it reached EOF."""
        seg = run.segments[-1]
        fs = self._fs
        try:
            fd = fs.open_read(seg.path)
        except FileNotFoundError:
            return False
        try:
            size = fs.size(fd)
            if size <= seg.size:
                return size == seg.size
            buf = fs.pread(fd, size - seg.size, seg.size)
        finally:
            fs.close(fd)
        result = scan(buf, seg.size, seg.last_seq + 1, self.options.max_record_bytes, seg.index)
        for s, o in result.index_points:
            if o < result.batch_start:
                seg.index.seqs.append(s)
                seg.index.offsets.append(o)
                seg.index.last_offset = o
        if result.batch_start > seg.size:
            seg.size = result.batch_start
            seg.last_seq = result.batch_start_seq
            run.last_seq = run.visible_seq = seg.last_seq
            if result.last_payload is not None:
                run.tail_payload = result.last_payload
        return result.damage is None and result.batch_start == size

    def runs(self) -> list[uuid.UUID]:
        """Ids of the runs in the log (sorted). Lists directories; touches no run."""
        self._check_open()
        return list_run_ids(self._fs, self.path)

    def last_seq(self, run_id: uuid.UUID) -> int | None:
        """The run's last acknowledged seq, or None if it has no events."""
        self._check_open()
        run = self._get_run(run_id)
        if self._read_only:
            self._refresh(run)
        return run.visible_seq or None

    def run_info(self, run_id: uuid.UUID) -> RunInfo:
        """A summary of one run; raises ``NotFoundError`` for a run with no events."""
        self._check_open()
        run = self._get_run(run_id)
        if self._read_only:
            self._refresh(run)
        with run.lock:
            if not run.visible_seq:
                raise NotFoundError(run_id)
            self._load_tail(run)
            size = sum(s.size for s in run.segments)
            mtime = self._fs.mtime(run.segments[-1].path)
            return RunInfo(
                run_id=run_id,
                events=run.visible_seq,
                first_seq=1,
                last_seq=run.visible_seq,
                bytes=size,
                segments=len(run.segments),
                session_id=run.session_id,
                terminal=run.terminal,
                mtime=mtime,
            )

    # --- appending -----------------------------------------------------------------------

    def append(self, event: E) -> Envelope[E]:
        """Append one event to its run and return its envelope.

        The frame is in the kernel before this returns; under ``fsync="always"`` or
        ``"batch"`` it is also on stable storage. Raises ``InvalidEventError`` for an
        object that is not one of the log's event types, ``RecordTooLargeError`` above
        ``max_record_bytes``, ``LogFailedError`` after an I/O error (nothing was stored),
        ``ReadOnlyError`` and ``LogClosedError``.
        """
        if self._failed is not None or self._closed or self._read_only:
            self._check_writable()
        run_id = self._codec.run_id_of(event)
        run = self._runs.get(run_id)
        if run is None or not run.loaded:
            run = self._get_run(run_id)
        return self._append_run(run, [event], None)[0]

    def append_batch(self, events: Sequence[E]) -> list[Envelope[E]]:
        """Append several events; atomic per run (all or none), one fsync per run.

        Envelopes come back in input order. Every event of every run is encoded and checked
        before anything is written, so a bad event stores nothing.
        """
        self._check_writable()
        events = list(events)
        groups: dict[uuid.UUID, list[int]] = {}
        for i, event in enumerate(events):
            groups.setdefault(self._codec.run_id_of(event), []).append(i)
        if len(groups) == 1:
            (run_id,) = groups
            return self._append_run(self._get_run(run_id), events, None)
        work = [(self._get_run(rid), [events[i] for i in pos], None) for rid, pos in groups.items()]
        written = self._append_runs(work)
        out: list[Envelope[E] | None] = [None] * len(events)
        for positions, envelopes in zip(groups.values(), written, strict=True):
            for i, env in zip(positions, envelopes, strict=True):
                out[i] = env
        return out  # type: ignore[return-value]

    def import_envelopes(self, envelopes: Iterable[Envelope[E]]) -> int:
        """Append envelopes as they are (event ids, seqs, timestamps kept).

        Each envelope's seq must be its run's last seq + 1: import refuses to create gaps or
        overwrite seqs (``ValueError``, nothing of that envelope's group written).
        Returns the number imported.
        """
        self._check_writable()
        count = 0
        pending: list[Envelope[E]] = []
        for env in envelopes:
            if not isinstance(env, Envelope):
                raise TypeError(f"import_envelopes takes Envelopes, got {type(env).__name__}")
            if self._codec.run_id_of(env.event) != env.run_id:
                raise ValueError(f"envelope seq {env.seq}: event.run_id differs from run_id")
            if pending and pending[-1].run_id != env.run_id:
                count += self._import_group(pending)
                pending = []
            pending.append(env)
            if len(pending) >= 1000:
                count += self._import_group(pending)
                pending = []
        if pending:
            count += self._import_group(pending)
        return count

    def _import_group(self, envelopes: list[Envelope[E]]) -> int:
        run = self._get_run(envelopes[0].run_id)
        self._append_run(run, [e.event for e in envelopes], envelopes)
        return len(envelopes)

    def _append_run(
        self, run: _Run, events: list[E], imported: list[Envelope[E]] | None
    ) -> list[Envelope[E]]:
        """Append to one run: prepare (encode, validate), commit (write), then sync."""
        with run.lock:
            envelopes, buf = self._prepare(run, events, imported)
            self._commit(run, envelopes, buf)
        self._after_commit(run, envelopes[-1].seq)
        return envelopes

    def _append_runs(
        self, work: Sequence[tuple[_Run, list[E], list[Envelope[E]] | None]]
    ) -> list[list[Envelope[E]]]:
        """Append to several runs: every group is prepared before any is written.

        The runs' locks are taken in run-id order, so two batches never deadlock.
        """
        with contextlib.ExitStack() as stack:
            for run in sorted({id(w[0]): w[0] for w in work}.values(), key=lambda r: r.id):
                stack.enter_context(run.lock)
            prepared = [self._prepare(run, events, imp) for run, events, imp in work]
            for (run, _, _), (envelopes, buf) in zip(work, prepared, strict=True):
                self._commit(run, envelopes, buf)
        for (run, _, _), (envelopes, _) in zip(work, prepared, strict=True):
            self._after_commit(run, envelopes[-1].seq)
        return [envelopes for envelopes, _ in prepared]

    def _prepare(
        self, run: _Run, events: list[E], imported: list[Envelope[E]] | None
    ) -> tuple[list[Envelope[E]], bytearray]:
        """Assign seqs and encode (so validate) a run's events. Holds run.lock; no I/O."""
        if self._failed is not None or self._closed:
            self._check_writable()
        if imported is None:
            envelopes = self._make_envelopes(run, events)
        else:
            envelopes = self._check_import(run, imported)
        if run.segments:
            durable = run.segments[-1].synced
        else:
            durable = Segment.initial_synced(self._policy is not FsyncPolicy.NEVER)
        return envelopes, self._encode(durable, envelopes)

    def _commit(self, run: _Run, envelopes: list[Envelope[E]], buf: bytearray) -> None:
        """Write prepared frames (creating or rolling the segment first). Holds run.lock."""
        policy = self._policy
        seg = run.segments[-1] if run.segments else self._create_first_segment(run)
        if seg.fd is None:
            self._open_writer(run, seg)
        if not seg.room_for(len(buf), self.options.segment_bytes):
            seg = self._roll(run)
            buf = self._encode(seg.synced, envelopes)
        start = seg.size
        tail = envelopes[-1]
        last = tail.seq
        try:
            seg.append(self._fs, buf, last)
        except OSError as exc:
            raise self._fail(exc) from exc
        if seg.size - seg.index.last_offset >= seg.index.interval:
            self._index_frames(seg, start, buf, envelopes)
        if policy is FsyncPolicy.ALWAYS:
            try:
                self._timer.run(self._fs.fdatasync, seg.fd, seg.path)  # type: ignore[arg-type]
            except OSError as exc:
                self._rollback(seg, start, run.last_seq)
                raise self._fail(exc) from exc
            seg.synced = seg.size
            run.durable_seq = last
            if run.dirs_pending:
                self._sync_dirs(run)
        run.last_seq = last
        run.session_id = tail.session_id
        run.terminal = getattr(type(tail.event), "terminal", False)
        run.tail_payload = None
        run.appends += len(envelopes)
        run.bytes_written += len(buf)
        if policy is not FsyncPolicy.BATCH:
            run.visible_seq = last

    def _after_commit(self, run: _Run, last: int) -> None:
        """Outside the run lock: group-commit fsync (batch), then wake waiters."""
        if self._policy is FsyncPolicy.BATCH:
            self._sync_run(run, last)
        if self._waiters:
            with self._appended:
                self._appended.notify_all()

    def _check_import(self, run: _Run, imported: list[Envelope[E]]) -> list[Envelope[E]]:
        expected = run.last_seq + 1
        if imported[0].seq != expected:
            raise ValueError(
                f"run {run.id}: import of seq {imported[0].seq} refused; the run's next seq "
                f"is {expected} (import never creates gaps or overwrites)"
            )
        for prev, env in itertools.pairwise(imported):
            if env.seq != prev.seq + 1:
                raise ValueError(f"run {run.id}: import seqs jump from {prev.seq} to {env.seq}")
        return imported

    def _decode(self, payload: bytes | memoryview) -> Envelope[E]:
        try:
            return self._codec.decode(payload)
        except msgspec.ValidationError as exc:
            raise SchemaMismatchError(
                f"a record in {self.path} does not decode as this log's event_type ({exc}); "
                "open the log with the event_type it was written with"
            ) from exc

    def _load_tail(self, run: _Run) -> None:
        """Decode the recovered last record (once) for the run's session id and state."""
        payload = run.tail_payload
        if payload is not None:
            env = self._decode(payload)
            run.session_id = env.session_id
            run.terminal = env.is_terminal
            run.tail_payload = None

    def _make_envelopes(self, run: _Run, events: list[E]) -> list[Envelope[E]]:
        if run.tail_payload is not None:
            self._load_tail(run)
        seq = run.last_seq
        session = run.session_id
        run_id = run.id
        session_of = self._codec.session_of
        out: list[Envelope[E]] = []
        for event in events:
            seq += 1
            started = session_of(event)
            if started is not None:
                session = started
            out.append(Envelope(new_event_id(), seq, run_id, session, event, utcnow()))
        return out

    def _encode(self, durable: int, envelopes: list[Envelope[E]]) -> bytearray:
        durable = min(durable, MAX_SEGMENT_OFFSET)
        buf = bytearray()
        encode = self._encoder.encode
        check = self._codec.check_payload if self.options.validate_events else None
        last = len(envelopes) - 1
        for i, env in enumerate(envelopes):
            start = len(buf)
            size = encode(buf, env, durable, i < last)
            if check is not None:
                check(buf[start + FRAME_HEADER_SIZE : start + size], env)
        return buf

    def _index_frames(
        self, seg: Segment, start: int, buf: bytearray, envelopes: list[Envelope[E]]
    ) -> None:
        index = seg.index
        entries = b""
        pos = 0
        for env in envelopes:
            entry = index.observe(env.seq, start + pos)
            if entry:
                entries += entry
            (length,) = _LENGTH.unpack_from(buf, pos + 12)
            pos += FRAME_HEADER_SIZE + length
        # The index is a cache: an error writing it costs a longer scan, never data.
        with contextlib.suppress(OSError):
            seg.write_index(self._fs, entries)

    def _rollback(self, seg: Segment, start: int, last_kept: int) -> None:
        """Cut unacknowledged frames off after an fsync error (best effort)."""
        seg.last_seq = last_kept
        if seg.fd is None:
            return
        with contextlib.suppress(OSError):
            seg.cut(self._fs, seg.fd, start)

    def _create_first_segment(self, run: _Run) -> Segment:
        fs = self._fs
        durable = self._policy is not FsyncPolicy.NEVER
        try:
            if not fs.is_dir(run.dir):
                fs.mkdir(run.dir)
                if durable:
                    fs.fsync_dir(self._runs_dir)
            seg = Segment.create(
                fs,
                run.dir,
                run.id,
                1,
                SparseIndex(1, self.options.index_interval_bytes),
                durable,
            )
        except OSError as exc:
            raise self._fail(exc) from exc
        run.segments = [seg]
        run.bases = [1]
        run.dirs_pending = not durable
        return seg

    def _sync_dirs(self, run: _Run) -> None:
        """Make directory entries created without an fsync (fsync="never") durable."""
        if run.dirs_pending:
            self._fs.fsync_dir(self._runs_dir)
            self._fs.fsync_dir(run.dir)
            run.dirs_pending = False

    def _roll(self, run: _Run) -> Segment:
        """Seal the active segment (fsync it) and start the next one. Holds run.lock."""
        fs = self._fs
        old = run.segments[-1]
        durable = self._policy is not FsyncPolicy.NEVER
        try:
            if old.synced < old.size:
                assert old.fd is not None
                self._timer.run(fs.fdatasync, old.fd, old.path)
                old.synced = old.size
            self._sync_dirs(run)  # a sealed segment's name must be durable too
            if self._policy.durable_ack:
                run.durable_seq = max(run.durable_seq, old.last_seq)
                run.visible_seq = max(run.visible_seq, old.last_seq)
            new = Segment.create(
                fs,
                run.dir,
                run.id,
                old.last_seq + 1,
                SparseIndex(old.last_seq + 1, self.options.index_interval_bytes),
                durable,
            )
            new.open_writer(fs)
        except OSError as exc:
            raise self._fail(exc) from exc
        old.close(fs)
        run.segments.append(new)
        run.bases.append(new.base_seq)
        run.dirs_pending = not durable
        return new

    def _sync_run(self, run: _Run, seq: int) -> None:
        """Group commit: return once ``seq`` is durable, fsyncing if nobody else is.

        Appenders whose bytes an fsync covered are woken by it and return at once; the first
        one still uncovered leads the next fsync, which covers everything written meanwhile.
        (Rejected: a plain lock around the fsync. Covered appenders then had to queue for the
        lock behind the next leader's fsync, and one fsync covered about two appends.)
        """
        if run.durable_seq >= seq:
            return
        cond = run.sync_cond
        with cond:
            while run.durable_seq < seq:
                if self._failed is not None:
                    self._check_writable()
                if not run.syncing:
                    break
                cond.wait()
            else:
                return
            run.syncing = True
        try:
            self._sync_now(run)
        finally:
            with cond:
                run.syncing = False
                cond.notify_all()

    def _sync_now(self, run: _Run) -> None:
        """fdatasync the run's active segment up to what is written now. Caller leads."""
        with run.lock:
            if self._failed is not None:
                self._check_writable()
            seg = run.segments[-1]
            if seg.fd is None:
                self._open_writer(run, seg)
            fd = seg.fd
            target_seq = run.last_seq
            target_off = seg.size
        try:
            self._timer.run(self._fs.fdatasync, fd, seg.path)  # type: ignore[arg-type]
            self._sync_dirs(run)
        except OSError as exc:
            with run.lock:
                if self._policy is FsyncPolicy.BATCH:
                    kept = max(seg.base_seq - 1, run.durable_seq)
                    self._rollback(seg, seg.synced, kept)
                    run.last_seq = run.durable_seq
                raise self._fail(exc) from exc
        seg.synced = max(seg.synced, target_off)
        run.durable_seq = max(run.durable_seq, target_seq)
        if run.visible_seq < target_seq:
            run.visible_seq = target_seq

    @contextlib.contextmanager
    def _sync_excluded(self, run: _Run) -> Iterator[None]:
        """Hold off fsyncs of ``run`` (waiting for one in flight) for the block."""
        with run.sync_cond:
            while run.syncing:
                run.sync_cond.wait()
            run.syncing = True
        try:
            yield
        finally:
            with run.sync_cond:
                run.syncing = False
                run.sync_cond.notify_all()

    def _open_writer(self, run: _Run, seg: Segment) -> None:
        """Open the active segment's descriptors, evicting idle runs past the LRU bound."""
        try:
            seg.open_writer(self._fs)
        except OSError as exc:
            raise self._fail(exc) from exc
        with self._lru_lock:
            self._lru[run.id] = run
            self._lru.move_to_end(run.id)
            over = len(self._lru) - self._lru_capacity
            if over <= 0:
                return
            victims = [r for r in self._lru.values() if r is not run][: over + 4]
        for victim in victims:
            if self._evict(victim):
                over -= 1
                if over <= 0:
                    break

    def _evict(self, run: _Run) -> bool:
        if not run.sync_cond.acquire(blocking=False):
            return False
        try:
            if run.syncing:  # an fsync of this run is in flight on its descriptor
                return False
            if not run.lock.acquire(blocking=False):
                return False
            try:
                if run.segments:
                    seg = run.segments[-1]
                    if (
                        seg.fd is not None
                        and seg.synced < seg.size
                        and self._policy
                        in (
                            FsyncPolicy.INTERVAL,
                            FsyncPolicy.BATCH,
                        )
                    ):
                        try:
                            self._timer.run(self._fs.fdatasync, seg.fd, seg.path)
                            seg.synced = seg.size
                        except OSError as exc:
                            self._fail(exc)
                            return False
                    for s in run.segments:
                        s.close(self._fs)
                with self._lru_lock:
                    self._lru.pop(run.id, None)
                return True
            finally:
                run.lock.release()
        finally:
            run.sync_cond.release()

    # --- syncing -------------------------------------------------------------------------

    def sync(self) -> None:
        """Make every acknowledged append durable now (whatever the fsync policy).

        Covers the runs this process has touched, including tails that a crashed process
        wrote but never synced.
        """
        self._check_open()
        if self._read_only:
            return
        self._sync_runs(only_appended=False)
        if self._failed is not None:
            self._check_writable()

    def _sync_runs(self, only_appended: bool) -> None:
        for run in list(self._runs.values()):
            if only_appended and not run.appends:
                continue
            if run.segments and run.durable_seq < run.last_seq:
                self._sync_run(run, run.last_seq)

    def _flush_dirty(self) -> None:
        """The interval flusher's tick: sync every run with unsynced appends."""
        for run in list(self._runs.values()):
            if self._closed or self._failed is not None:
                return
            if run.segments and run.durable_seq < run.last_seq:
                try:
                    self._sync_run(run, run.last_seq)
                except (LogFailedError, LogClosedError):
                    return

    # --- reading -------------------------------------------------------------------------

    def list_after(
        self, run_id: uuid.UUID, after_seq: int | None = None, limit: int = DEFAULT_PAGE_LIMIT
    ) -> list[Envelope[E]]:
        """Return the run's envelopes with ``seq > after_seq`` in order, at most ``limit``.

        ``after_seq`` of ``None`` or ``0`` reads from the start. Seeks through the sparse
        index, so the cost does not grow with the run's length. Raises ``NotFoundError`` for
        a run with no events and ``CorruptionError`` for damage met on the way.
        """
        after = check_page_args(run_id, after_seq, limit)
        self._check_open()
        run = self._get_run(run_id)
        if self._read_only:
            self._refresh(run)
        with run.lock:
            visible = run.visible_seq
            if not visible:
                raise NotFoundError(run_id)
            if after >= visible:
                return []
            first = after + 1
            last = min(visible, after + limit)
            i = bisect_right(run.bases, first) - 1
            plan: list[tuple[Segment, int]] = []
            for seg in run.segments[i:]:
                plan.append((seg, seg.size))
                if seg.last_seq >= last:
                    break
        payloads: list[bytes] = []
        for seg, size in plan:
            self._read_segment(seg, size, first, last, payloads)
            first = seg.last_seq + 1
            if len(payloads) >= last - after:
                break
        try:
            return self._codec.decode_many(payloads)
        except msgspec.ValidationError:
            for p in payloads:
                self._decode(p)  # raises SchemaMismatchError naming the fix
            raise

    def _read_segment(
        self,
        seg: Segment,
        size: int,
        first: int,
        last: int,
        out: list[bytes],
    ) -> None:
        """Append payloads of seqs ``first..last`` found in ``seg`` (up to ``size``) to out.

        Starts at the sparse index point at or before ``first`` and walks frame headers; the
        skipped frames (at most one index interval) are neither checksummed nor decoded.
        """
        fs = self._fs
        max_record = self.options.max_record_bytes
        expected, pos = seg.index.floor(first)
        frames = max(1, seg.last_seq - seg.base_seq + 1)
        avg = max(64, (size - SEGMENT_HEADER_SIZE) // frames)
        chunk = self.options.index_interval_bytes + avg * (last - first + 1) + 1024
        fd = fs.open_read(seg.path)
        try:
            while expected <= last and pos < size:
                buf = fs.pread(fd, min(chunk, size - pos), pos)
                bpos, expected, stop = walk_frames(buf, 0, expected, first, last, max_record, out)
                if stop is None:
                    break
                if isinstance(stop, FrameCorruption):
                    if bpos == 0 and pos > SEGMENT_HEADER_SIZE and stop.seq != expected:
                        # The index point names another seq: the cache is stale, not the
                        # data. Forget it from there and walk from the previous point.
                        logger.warning("stale index entry in %s at %d; dropped", seg.path, pos)
                        seg.index.truncate(pos)
                        expected, pos = seg.index.floor(first)
                        continue
                    self._read_damage(seg, pos + stop.offset, stop.reason, expected)
                if bpos == 0:  # one frame is larger than the chunk read
                    needed = FRAME_HEADER_SIZE
                    if len(buf) >= FRAME_HEADER_SIZE:
                        needed += _LENGTH.unpack_from(buf, 12)[0]
                    if pos + needed > size or len(buf) >= needed:
                        self._read_damage(seg, pos, "frame runs past the segment end", expected)
                    chunk = needed
                    continue
                pos += bpos
                chunk = max(chunk, 256 * 1024)
        finally:
            fs.close(fd)
        if expected <= min(last, seg.last_seq):
            self._read_damage(seg, pos, "segment ends before its last seq", expected)

    def _read_damage(self, seg: Segment, offset: int, reason: str, seq: int) -> None:
        raise CorruptionError(
            reason, path=seg.path, offset=offset, first_seq=seq, last_seq=seg.last_seq
        )

    def wait_for(self, run_id: uuid.UUID, after_seq: int, timeout: float | None = None) -> bool:
        """Block until the run has an acknowledged seq above ``after_seq``; False on timeout.

        A read-only log polls the files (every 20 ms); a writer is woken by its appends.
        """
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._read_only:
            while True:
                run = self._get_run(run_id)
                self._refresh(run)
                if run.visible_seq > after_seq:
                    return True
                if self._closed:
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                time.sleep(0.02 if remaining is None else min(0.02, remaining))
        run = self._get_run(run_id)
        with self._appended:
            self._waiters += 1
            try:
                while run.visible_seq <= after_seq:
                    if self._closed:
                        return False
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._appended.wait(0.5 if remaining is None else min(0.5, remaining))
                    run = self._get_run(run_id)
                return True
            finally:
                self._waiters -= 1

    def subscribe(
        self, run_id: uuid.UUID, after_seq: int | None = None, *, poll_interval: float = 0.5
    ) -> Iterator[Envelope[E]]:
        """Replay the run after ``after_seq``, then follow new events until a terminal one.

        Yields each seq exactly once, in order, with no gap at the seam between replay and
        live. Only acknowledged (persisted) events are delivered. A slow consumer reads from
        the log, never from an unbounded buffer.
        """
        cursor = check_page_args(run_id, after_seq, 1)
        while True:
            try:
                page = self.list_after(run_id, cursor, DEFAULT_PAGE_LIMIT)
            except NotFoundError:
                page = []
            for env in page:
                yield env
                cursor = env.seq
                if env.is_terminal:
                    return
            if not page:
                self._check_open()
                self.wait_for(run_id, cursor, poll_interval)

    # --- retention -----------------------------------------------------------------------

    def delete_run(self, run_id: uuid.UUID) -> bool:
        """Remove a run crash-safely (rename into trash, then delete). False if absent."""
        self._check_writable()
        run = self._get_run(run_id)
        fs = self._fs
        with self._sync_excluded(run), run.lock:
            if not fs.is_dir(run.dir):
                run.reset()
                return False
            for seg in run.segments:
                seg.close(fs)
            with self._lru_lock:
                self._lru.pop(run.id, None)
            trash = f"{self.path}/{TRASH}/{run_id}.{new_event_id().hex}"
            try:
                fs.rename(run.dir, trash)
                # Under every policy: a deletion that a power loss undoes would bring back
                # data the caller was told is gone.
                fs.fsync_dir(self._runs_dir)
                fs.fsync_dir(f"{self.path}/{TRASH}")
            except OSError as exc:
                raise self._fail(exc) from exc
            run.reset()
        with contextlib.suppress(OSError):  # emptied at the next open
            fs.rmtree(trash)
        return True

    def retain(
        self,
        max_age: float | None = None,
        max_bytes: int | None = None,
        only_terminal: bool = True,
    ) -> list[uuid.UUID]:
        """Delete whole runs older than ``max_age`` seconds, then the oldest runs until the
        log holds at most ``max_bytes``. With ``only_terminal`` (default) only finished runs
        (last event terminal) are deleted. Returns the deleted run ids.
        """
        self._check_writable()
        now = time.time()
        infos: list[RunInfo] = []
        for rid in self.runs():
            try:
                infos.append(self.run_info(rid))
            except NotFoundError:
                continue
        infos.sort(key=lambda info: info.mtime)
        total = sum(info.bytes for info in infos)
        deleted: list[uuid.UUID] = []
        for info in infos:
            if only_terminal and not info.terminal:
                continue
            too_old = max_age is not None and now - info.mtime > max_age
            too_big = max_bytes is not None and total > max_bytes
            if (too_old or too_big) and self.delete_run(info.run_id):
                deleted.append(info.run_id)
                total -= info.bytes
        return deleted

    # --- introspection and shutdown ------------------------------------------------------

    @property
    def recovery_reports(self) -> list[RecoveryReport]:
        """Every repair recovery made (or, read-only, would make) since open."""
        return list(self._reports)

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closed

    def stats(self) -> LogStats:
        """Counters for operators (appends, bytes, fsync latency percentiles, ...)."""
        with self._lru_lock:
            open_files = sum(
                (s.fd is not None) + (s.index_fd is not None)
                for r in self._lru.values()
                for s in r.segments[-1:]
            )
        runs = list(self._runs.values())
        return LogStats(
            appends=sum(r.appends for r in runs),
            bytes_written=sum(r.bytes_written for r in runs),
            fsyncs=self._timer.count,
            fsync_p50_us=self._timer.percentile_us(0.5),
            fsync_p99_us=self._timer.percentile_us(0.99),
            open_files=open_files + (self._lock_fd is not None),
            runs_recovered=self._runs_recovered,
            bytes_dropped=sum(r.bytes_dropped for r in self._reports),
        )

    def close(self) -> None:
        """Sync per the fsync policy, release descriptors and the lock. Idempotent."""
        if self._closed:
            return
        if self._flusher is not None:
            self._flusher.stop()
        if self._failed is None and not self._read_only and self._policy is not FsyncPolicy.NEVER:
            # Only what this process appended: a reader that merely recovered runs should
            # not pay an fsync per run it looked at (``sync()`` covers those on request).
            with contextlib.suppress(LogFailedError):
                self._sync_runs(only_appended=True)
        self._closed = True
        with self._appended:
            self._appended.notify_all()
        for run in list(self._runs.values()):
            with run.lock:
                for seg in run.segments:
                    seg.close(self._fs)
        with self._lru_lock:
            self._lru.clear()
        if self._lock_fd is not None:
            self._fs.close(self._lock_fd)
            self._lock_fd = None
