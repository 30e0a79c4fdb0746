"""What every run of one log shares: its options, its file system, its codec, its hooks.

Strategy and invariants
- One ``RunContext`` per open log, built by the facade and handed to every ``Run``; runs
  read it and never change it (``LogState`` inside it carries the log's one-way state).
- The hooks (``touch``, ``notify``, ``recover``, ``read``) are how a run calls back up into
  the registry and the facade without importing them, so the append path stays downward.
- Derived policy facts are computed here once (``durable_ack``, ``prealloc_limit``,
  ``keep_state``), not on every append.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from ._fs import FileSystem
from .durability import FsyncTimer, LogState
from .frames import FrameEncoder
from .layout import Layout
from .options import FsyncPolicy, LogOptions
from .schema import EnvelopeCodec
from .shared import RunLocks

__all__ = ["RunContext"]

E = TypeVar("E")


class RunContext(Generic[E]):
    """What every run of one log shares."""

    def __init__(
        self,
        fs: FileSystem,
        layout: Layout,
        options: LogOptions,
        state: LogState,
        timer: FsyncTimer,
        touch: Any,
        notify: Any,
        recover: Any,
        read: Any,
        locks: RunLocks | None,
    ) -> None:
        self.fs = fs
        self.layout = layout
        self.options = options
        self.state = state
        self.timer = timer
        self.codec: EnvelopeCodec[E] = EnvelopeCodec(options.event_type)
        self.encoder = FrameEncoder(options.max_record_bytes)
        self.policy: FsyncPolicy = options.fsync
        self.durable_ack = options.fsync.durable_ack
        #: The codec that checks each record before it is written (``validate_events``).
        self.validator = self.codec if options.validate_events else None
        self.interval = options.index_interval_bytes
        self.segment_bytes = options.segment_bytes
        #: How far ahead of a write space may be reserved (0: never).
        # Only durable policies gain from preallocation (an fdatasync that does not grow the
        # file writes no metadata); under "never" and "interval" it would cost a system call.
        self.prealloc_limit = (
            options.segment_bytes if options.preallocate and self.durable_ack else 0
        )
        #: Called with a run whose descriptors were opened (the handle LRU).
        self.touch = touch
        #: Called after appends became visible (wakes ``wait_for``).
        self.notify = notify
        #: Called with a run to recover it from its files (None: it has no directory).
        self.recover = recover
        #: Called as ``read(run, after_seq, limit)`` for envelopes of a run whose commit lock
        #: the caller holds (the read path).
        self.read = read
        #: The per-run locks between processes (``multiprocess=True``), else None.
        self.locks = locks
        self.writable = not options.read_only
        #: Keep each run's shared state record current: between processes it is how writers
        #: find each other's appends, and durable writers publish their watermark in it.
        self.keep_state = self.writable and (locks is not None or self.durable_ack)
        self.boot = fs.boot_id()
