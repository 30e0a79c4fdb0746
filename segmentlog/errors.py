"""Typed errors. Every error segmentlog raises on purpose is a ``SegmentLogError``.

Strategy and invariants
- One hierarchy under an abstract base, so ``except SegmentLogError`` catches everything ours.
- Each class's docstring says when it is raised; each message says what to do next.
- Errors about bad input also derive from the matching builtin (``TypeError``/``ValueError``),
  so generic callers still see a familiar type.
"""

from __future__ import annotations

import uuid
from abc import ABC

__all__ = [
    "AppendError",
    "CorruptionError",
    "FormatVersionError",
    "IdempotencyConflictError",
    "InvalidEventError",
    "InvalidKeyError",
    "LockedError",
    "LogClosedError",
    "LogFailedError",
    "LogForkedError",
    "NotASegmentLogError",
    "NotFoundError",
    "ReadOnlyError",
    "RecordTooLargeError",
    "RepairError",
    "SchemaMismatchError",
    "SegmentLogError",
    "SeqConflictError",
    "UnsupportedPlatformError",
]


class SegmentLogError(Exception, ABC):
    """Base of every error segmentlog raises on purpose."""


class AppendError(SegmentLogError):
    """Raised when an append could not be persisted. The event was *not* stored."""


class NotFoundError(SegmentLogError, LookupError):
    """Raised by ``list_after`` (and friends) when the run has no recorded events."""

    def __init__(self, run_id: uuid.UUID) -> None:
        self.run_id = run_id
        super().__init__(
            f"no events recorded for run {run_id}; check the run id, or list runs with log.runs()"
        )


class InvalidEventError(AppendError, TypeError):
    """Raised by ``append`` when the object is not an event the log was opened for.

    Nothing was written. Pass an instance of the log's ``event_type`` (``AgentEvent`` by default)
    with a ``run_id: uuid.UUID``.
    """


class RecordTooLargeError(AppendError, ValueError):
    """Raised by ``append`` when the encoded record exceeds ``max_record_bytes``.

    Nothing was written. Split the event, or open the log with a larger ``max_record_bytes``.
    """


class InvalidKeyError(AppendError, ValueError):
    """Raised by ``append``/``append_batch`` when an idempotency key is not acceptable.

    A key must be a non-empty ``str`` of at most 256 bytes of UTF-8. Nothing was written.
    """


class IdempotencyConflictError(AppendError):
    """Raised when an idempotency key the run already holds comes with a different event,
    or when a batch mixes keys the run holds with new ones. Nothing was written.

    ``run_id`` and ``key`` name the conflict; ``seq`` is the stored event's seq. Use a new
    key for a new event, or retry with exactly the event that was first appended.
    """

    def __init__(self, message: str, *, run_id: uuid.UUID, key: str, seq: int | None) -> None:
        self.run_id = run_id
        self.key = key
        self.seq = seq
        super().__init__(message)


class SeqConflictError(AppendError):
    """Raised by a conditional append (``expected_seq=``) when the run's last seq differs.

    ``expected`` is what the caller passed, ``actual`` the run's last seq (0 for a run with
    no events). Nothing was written: read the run again, then decide whether to append.
    """

    def __init__(self, run_id: uuid.UUID, expected: int, actual: int) -> None:
        self.run_id = run_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"run {run_id}: expected last seq {expected}, but it is {actual}; nothing was "
            "written. Read the run's new events, then retry with the new expected_seq"
        )


class LogClosedError(SegmentLogError):
    """Raised by any operation on a log that was closed. Open the directory again."""


class LogFailedError(AppendError):
    """Raised by appends after a write or fsync error made the log fail-stop.

    The failed append was rolled back; nothing later is accepted until the log is reopened, so
    that recovery can establish what is on disk. ``cause`` holds the original OS error.
    """

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        self.cause = cause
        super().__init__(message)


class LogForkedError(SegmentLogError):
    """Raised by any operation on a log opened before ``fork()``, used in the child.

    A forked child shares the parent's descriptors and locks, so writing through them would
    corrupt the log. Open the log again in the child (for example in a
    ``multiprocessing`` initializer), and use ``multiprocess=True`` if parent and children
    write at once. Closing the inherited object is allowed.
    """


class ReadOnlyError(SegmentLogError):
    """Raised by write operations on a log opened with ``read_only=True``."""


class LockedError(SegmentLogError):
    """Raised by ``open`` when another process holds the directory's writer lock.

    Only one process may write a log directory. Close the other writer, or open with
    ``read_only=True`` to inspect the log beside it.
    """


class UnsupportedPlatformError(SegmentLogError):
    """Raised by ``segmentlog.open`` on a platform where segment logs cannot run (Windows).

    ``import segmentlog`` still works there, and so do ``MemoryEventStore``, the PostgreSQL
    store and the format codec. The message names what is supported.
    """


class NotASegmentLogError(SegmentLogError):
    """Raised by ``open`` on a non-empty directory that is not a segmentlog directory.

    segmentlog never writes into a directory it did not create; choose an empty or new path.
    """


class FormatVersionError(SegmentLogError):
    """Raised by ``open`` when the directory was written by a newer on-disk format version.

    Upgrade segmentlog to a version that reads this format.
    """


class SchemaMismatchError(SegmentLogError):
    """Raised when stored records (which verify) do not decode as the log's ``event_type``.

    The log was written with other event types: open it with the ``event_type`` it was
    written with.
    """


class RepairError(SegmentLogError):
    """Raised when recovery found damage it may repair but an I/O error (a full disk, say)
    stopped the repair. Nothing in the run was changed by the failed step: free space or
    fix the cause, then open the log (or run ``segmentlog recover``) again.
    ``cause`` holds the original OS error.
    """

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        self.cause = cause
        super().__init__(message)


class CorruptionError(SegmentLogError):
    """Raised when stored bytes fail verification and the recovery mode does not allow repair.

    ``path`` is the damaged file, ``offset`` the byte offset of the first bad byte, and
    ``first_seq``/``last_seq`` the seq range affected (``last_seq`` may be ``None`` when the
    end of the range is unknown). Run ``segmentlog verify`` to see all damage, and
    ``segmentlog recover`` (or open with ``recovery="salvage"``) to keep the valid prefix.
    """

    def __init__(
        self,
        reason: str,
        *,
        path: str,
        offset: int,
        first_seq: int | None,
        last_seq: int | None,
    ) -> None:
        self.reason = reason
        self.path = path
        self.offset = offset
        self.first_seq = first_seq
        self.last_seq = last_seq
        span = seq_span(first_seq, last_seq)
        super().__init__(
            f"{path}: corrupt at offset {offset} ({reason}); seqs {span} affected. "
            "Run `segmentlog verify` for a full report; `segmentlog recover` or "
            "recovery='salvage' keeps the valid prefix."
        )


def seq_span(first: int | None, last: int | None) -> str:
    """A seq range for messages: ``"5..9"``, ``"5"``, ``"5.."`` (end unknown) or
    ``"unknown"``."""
    if first is None:
        return "unknown"
    if last is None:
        return f"{first}.."
    if first == last:
        return str(first)
    return f"{first}..{last}"
