"""Every option of ``segmentlog.open``: its name, its default and how it is parsed.

Strategy and invariants
- One frozen ``LogOptions`` holds them all; each field's comment states its default, and an
  unset field takes it. Values are checked once, here, with messages that name the option and
  the accepted range, so the engine never re-validates.
- Options that take one of a few names (``fsync``, ``recovery``) are ``OptionEnum``s: a
  member or its string value is accepted.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

from .events import AgentEvent
from .format import DEFAULT_MAX_RECORD_BYTES
from .schema import event_classes

__all__ = ["FsyncPolicy", "LogOptions", "OptionEnum", "RecoveryMode", "parse_options"]

_MIB = 1024 * 1024

Choice = TypeVar("Choice", bound="OptionEnum")


class OptionEnum(enum.Enum):
    """An option that takes one of a few names (``fsync``, ``recovery``)."""

    #: The option's name, for error messages.
    __option__: ClassVar[str] = "option"

    @classmethod
    def parse(cls: type[Choice], value: Choice | str) -> Choice:
        """Accept a member or its name; raise ValueError naming the choices otherwise."""
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in cls)
            raise ValueError(f"{cls.__option__} must be one of {choices}, got {value!r}") from None


class FsyncPolicy(OptionEnum):
    """When appended bytes are made durable. See the README for what each can lose."""

    __option__ = "fsync"

    ALWAYS = "always"
    BATCH = "batch"
    INTERVAL = "interval"
    NEVER = "never"

    @property
    def durable_ack(self) -> bool:
        """True when an acknowledged append survives power loss."""
        return self in (FsyncPolicy.ALWAYS, FsyncPolicy.BATCH)


class RecoveryMode(OptionEnum):
    """What recovery does with damage (see ``recovery.py`` and the README)."""

    __option__ = "recovery"

    STRICT = "strict"
    TOLERATE_TAIL = "tolerate_tail"
    SALVAGE = "salvage"


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
    #: Most file descriptors runs hold open at once: an LRU of segments, indexes and mapped
    #: state records, kept under half of the process's ``ulimit -n`` too. Default 256.
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
    #: Reserve disk space ahead of the write offset, in chunks that start small and grow, so
    #: that most fsyncs flush data only (no file-size metadata). Segments are trimmed to their
    #: last frame when sealed and on a clean close. Turn off on copy-on-write file systems,
    #: where preallocation buys nothing. Default True.
    preallocate: bool = True
    #: Let several processes write this directory at once, each opened with
    #: ``multiprocess=True``: per-run locks between processes and a shared state record per
    #: run. Costs a few system calls per append. Needs open-file-description locks (Linux).
    #: Default False: one exclusive writer process.
    multiprocess: bool = False
    #: On macOS, make fsyncs durable with ``fcntl(F_FULLFSYNC)``, which flushes the drive's
    #: cache; False uses plain ``fsync``, faster but not durable across power loss there.
    #: Ignored elsewhere. Default True.
    full_fsync: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "fsync", FsyncPolicy.parse(self.fsync))
        object.__setattr__(self, "recovery", RecoveryMode.parse(self.recovery))
        event_classes(self.event_type)  # a Struct, or a union of them, with run_id
        _check_range("fsync_interval_ms", self.fsync_interval_ms, 1, 3_600_000)
        _check_range("segment_bytes", self.segment_bytes, 4096, 1 << 30)
        _check_range("index_interval_bytes", self.index_interval_bytes, 64, 1 << 30)
        _check_range("max_record_bytes", self.max_record_bytes, 64, 256 * _MIB)
        _check_range("max_open_files", self.max_open_files, 2, 1 << 20)
        for name in ("read_only", "validate_events", "preallocate", "full_fsync", "multiprocess"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        slow = self.slow_fsync_seconds
        if isinstance(slow, bool) or not isinstance(slow, int | float):
            raise TypeError(f"slow_fsync_seconds must be a number, got {slow!r}")
        if not slow >= 0:
            raise ValueError(f"slow_fsync_seconds must be >= 0, got {slow!r}")


def parse_options(options: dict[str, Any]) -> LogOptions:
    """Build ``LogOptions`` from keyword arguments, refusing unknown names."""
    unknown = set(options) - {f.name for f in fields(LogOptions)}
    if unknown:
        raise TypeError(
            f"unknown option(s) {', '.join(sorted(unknown))}; see segmentlog.LogOptions"
        )
    return LogOptions(**options)


def _check_range(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
