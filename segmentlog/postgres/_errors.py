"""The PostgreSQL backend's errors, and the rules that turn a psycopg error into one of them.

Strategy and invariants
- The classes extend segmentlog's one hierarchy: an error that promises "nothing was stored"
  is an ``AppendError``; ``AppendOutcomeUnknownError`` is the one append error that cannot
  promise it, so it is not.
- psycopg's exception is always the ``__cause__`` of ours; each message says what to do next.
- A lost connection (the connection is broken, or the server reported a shutdown or a
  connection exception) is ``PostgresUnavailableError``; missing tables are
  ``SchemaMissingError``; anything else the server refused is a plain ``AppendError`` (for an
  append) or ``PostgresStoreError`` (for anything else).
"""

from __future__ import annotations

import uuid

import psycopg

from ..errors import AppendError, SegmentLogError

__all__ = [
    "AppendOutcomeUnknownError",
    "PostgresStoreError",
    "PostgresUnavailableError",
    "SchemaMissingError",
    "append_failure",
    "connect_failure",
    "first_line",
    "outcome_unknown",
    "read_failure",
]


class PostgresStoreError(SegmentLogError):
    """Raised by a PostgreSQL store when the server reports an error outside an append.

    The psycopg error is the ``__cause__``; the message says what to check.
    """


class PostgresUnavailableError(AppendError, PostgresStoreError):
    """Raised when the server cannot be reached or the connection was lost.

    Raised by any operation. When an append raises it, nothing was stored. The store drops
    its idle connections, so the next call connects again: retry once the server is back.
    """


class SchemaMissingError(AppendError, PostgresStoreError):
    """Raised when the segmentlog tables do not exist in the store's schema.

    Call ``store.create_schema()`` once (or run ``schema_sql()`` in a migration). When an
    append raises it, nothing was stored.
    """


class AppendOutcomeUnknownError(PostgresStoreError):
    """Raised by an append when the connection died with the transaction in flight and the
    store could not reconnect to find out whether it committed.

    The events (``event_ids``, of runs ``run_ids``) were either all stored or none was. When
    the server is back, look for those event ids with ``list_after`` before appending the
    events again, or append them again with the same idempotency keys. Not an
    ``AppendError``: that would promise nothing was stored.
    """

    def __init__(self, message: str, event_ids: list[uuid.UUID], run_ids: list[uuid.UUID]) -> None:
        self.event_ids = event_ids
        self.run_ids = run_ids
        super().__init__(message)


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (or its type's name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_disconnect(exc: psycopg.Error) -> bool:
    # Server-side shutdowns (admin_shutdown, crash_shutdown, cannot_connect_now) carry
    # SQLSTATE class 57P, connection exceptions class 08; a dropped socket carries none.
    return isinstance(exc, psycopg.OperationalError) and (
        exc.sqlstate is None or exc.sqlstate.startswith(("57P", "08"))
    )


def _is_missing_schema(exc: psycopg.Error) -> bool:
    return isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.InvalidSchemaName)


def _missing_schema_message(exc: psycopg.Error, schema: str) -> str:
    return (
        f"the segmentlog tables do not exist in schema {schema!r} ({first_line(exc)}); call "
        "store.create_schema() once, or run segmentlog.postgres.schema_sql() in a migration. "
        "Nothing was stored."
    )


def append_failure(exc: psycopg.Error, broken: bool, schema: str) -> AppendError:
    """The error for an append the server refused or lost; in every case nothing was stored."""
    if broken or _is_disconnect(exc):
        return PostgresUnavailableError(
            f"lost the connection to PostgreSQL ({first_line(exc)}); nothing was stored. "
            "Retry the append: the store reconnects."
        )
    if _is_missing_schema(exc):
        return SchemaMissingError(_missing_schema_message(exc, schema))
    return AppendError(
        f"PostgreSQL refused the append ({exc.sqlstate}: {first_line(exc)}); nothing was "
        "stored. Fix the cause above and append again."
    )


def read_failure(exc: psycopg.Error, broken: bool, schema: str) -> PostgresStoreError:
    """The error for anything but an append that failed on the server."""
    if broken or _is_disconnect(exc):
        return PostgresUnavailableError(
            f"lost the connection to PostgreSQL ({first_line(exc)}). Retry: the store reconnects."
        )
    if _is_missing_schema(exc):
        return SchemaMissingError(_missing_schema_message(exc, schema))
    return PostgresStoreError(
        f"PostgreSQL reported an error ({exc.sqlstate}: {first_line(exc)}); check the "
        "server log and the store's schema."
    )


def connect_failure(target: str, exc: BaseException) -> PostgresUnavailableError:
    """The error for a connection that could not be opened or borrowed."""
    return PostgresUnavailableError(
        f"cannot connect to PostgreSQL at {target}: {first_line(exc)}. Check that the "
        "server is running and the DSN is right; nothing was stored."
    )


def outcome_unknown(
    exc: BaseException, event_ids: list[uuid.UUID], run_ids: list[uuid.UUID]
) -> AppendOutcomeUnknownError:
    """The error for an append lost in flight whose outcome could not be checked."""
    return AppendOutcomeUnknownError(
        f"the connection to PostgreSQL was lost with the append in flight ({exc}) and the "
        f"store could not reconnect to check the outcome: the {len(event_ids)} event(s) "
        "were either all stored or none was. When the server is back, look for their "
        "event ids (error.event_ids) with list_after before appending them again.",
        event_ids,
        run_ids,
    )
