"""segmentlog: an embedded, crash-safe, append-only event log.

Each run gets its own chain of segment files holding length-prefixed, checksummed msgspec
records, with a sparse seq index so ``list_after`` seeks instead of scanning.
"""

from __future__ import annotations

from .durability import FsyncPolicy
from .errors import (
    AppendError,
    CorruptionError,
    FormatVersionError,
    InvalidEventError,
    LockedError,
    LogClosedError,
    LogFailedError,
    NotASegmentLogError,
    NotFoundError,
    ReadOnlyError,
    RecordTooLargeError,
    SegmentLogError,
)
from .events import (
    AgentEvent,
    AssistantMessageCommitted,
    CacheMetrics,
    CompactionCircuitOpened,
    ContextBuilt,
    DoomLoopDetected,
    Envelope,
    Failure,
    FinishReason,
    ModelStarted,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunStarted,
    Success,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallCompleted,
    ToolCallDelta,
    ToolCallStarted,
    ToolExecutionFinished,
    ToolExecutionResult,
    ToolExecutionStarted,
    ToolMessageCommitted,
    UsageRecorded,
    new_event_id,
)
from .log import LogOptions, LogStats, RunInfo, SegmentLog, open
from .memory import FailingEventStore, MemoryEventStore
from .recovery import Problem, RecoveryMode, RecoveryReport
from .store import DEFAULT_PAGE_LIMIT, EventStore

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PAGE_LIMIT",
    "AgentEvent",
    "AppendError",
    "AssistantMessageCommitted",
    "CacheMetrics",
    "CompactionCircuitOpened",
    "ContextBuilt",
    "CorruptionError",
    "DoomLoopDetected",
    "Envelope",
    "EventStore",
    "FailingEventStore",
    "Failure",
    "FinishReason",
    "FormatVersionError",
    "FsyncPolicy",
    "InvalidEventError",
    "LockedError",
    "LogClosedError",
    "LogFailedError",
    "LogOptions",
    "LogStats",
    "MemoryEventStore",
    "ModelStarted",
    "NotASegmentLogError",
    "NotFoundError",
    "Problem",
    "ReadOnlyError",
    "RecordTooLargeError",
    "RecoveryMode",
    "RecoveryReport",
    "RunCancelled",
    "RunCompleted",
    "RunFailed",
    "RunInfo",
    "RunStarted",
    "SegmentLog",
    "SegmentLogError",
    "Success",
    "TextDelta",
    "TokenUsage",
    "ToolCall",
    "ToolCallCompleted",
    "ToolCallDelta",
    "ToolCallStarted",
    "ToolExecutionFinished",
    "ToolExecutionResult",
    "ToolExecutionStarted",
    "ToolMessageCommitted",
    "UsageRecorded",
    "__version__",
    "new_event_id",
    "open",
]
