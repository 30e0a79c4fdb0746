"""PostgreSQL backend: ``PostgresEventStore`` and its asyncio twin ``AsyncPostgresEventStore``.

Strategy and invariants
- Optional: needs ``pip install 'segmentlog[postgres]'`` (psycopg 3, psycopg_pool). ``import
  segmentlog`` never imports this package, and importing it without psycopg raises an
  ImportError that says what to install.
- One core, two thin shells. The core holds the SQL (``_schema``), the row mapping
  (``_rows``), the errors (``_errors``), the connection bookkeeping (``_connections``) and
  every operation as an I/O-free generator *plan* (``_plans``). The sync (``_sync``) and
  asyncio (``_async``) shells only carry a plan's steps out on psycopg connections, so no
  method body exists twice. ``_plans``'s docstring says why plans and not a generated twin.
- The contract is segmentlog's (``segmentlog.store``): gapless seqs per run assigned by the
  server under the run's row lock, an append is one statement in one round trip, a refused
  append stored nothing, idempotency keys are unique per run and checked before
  ``expected_seq``, and a commit is announced with NOTIFY for ``subscribe``.
- If the connection drops with an append in flight, the store asks again over a new
  connection (after waiting for the dead transaction's row lock) and either returns the
  stored envelopes or raises ``PostgresUnavailableError``; only if it cannot find out does it
  raise ``AppendOutcomeUnknownError``, which is not an AppendError. Appending again with the
  same idempotency keys settles it too.
"""

from __future__ import annotations

try:
    import psycopg  # noqa: F401
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "segmentlog.postgres needs psycopg 3: pip install 'segmentlog[postgres]'"
    ) from _exc

from ._async import AsyncPostgresEventStore
from ._errors import (
    AppendOutcomeUnknownError,
    PostgresStoreError,
    PostgresUnavailableError,
    SchemaMissingError,
)
from ._schema import (
    APPEND_FUNCTION,
    EVENTS_TABLE,
    KEY_CONSTRAINT,
    RUNS_TABLE,
    SETTLE_LOCK_TIMEOUT_MS,
    channel_of,
    schema_sql,
)
from ._sync import PostgresEventStore

__all__ = [
    "APPEND_FUNCTION",
    "EVENTS_TABLE",
    "KEY_CONSTRAINT",
    "RUNS_TABLE",
    "SETTLE_LOCK_TIMEOUT_MS",
    "AppendOutcomeUnknownError",
    "AsyncPostgresEventStore",
    "PostgresEventStore",
    "PostgresStoreError",
    "PostgresUnavailableError",
    "SchemaMissingError",
    "channel_of",
    "schema_sql",
]
