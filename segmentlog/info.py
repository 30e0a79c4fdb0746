"""The public summaries of a log and of a run: ``LogStats`` and ``RunInfo``.

Strategy and invariants
- Plain frozen msgspec Structs, so they print, compare and encode to JSON (the HTTP API and
  the CLI send them as they are). Each field says what it counts.
"""

from __future__ import annotations

import uuid

import msgspec

__all__ = ["LogStats", "RunInfo"]


class LogStats(msgspec.Struct, frozen=True, kw_only=True):
    """Counters for operators, from ``SegmentLog.stats()``."""

    appends: int
    bytes_written: int
    fsyncs: int
    #: Appends acknowledged per fdatasync (group commit's reach); 0 before any fsync.
    appends_per_fsync: float
    fsync_p50_us: float
    fsync_p99_us: float
    #: Descriptors held: the directory lock, and runs' segments, indexes and mapped state
    #: records (at most ``max_open_files`` of the runs', through the LRU).
    open_files: int
    runs_recovered: int
    bytes_dropped: int
    #: How fsyncs are made durable here: "fdatasync", "F_FULLFSYNC" or "fsync".
    sync_method: str


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
