"""PostgreSQL backend: ``PostgresEventStore`` and its asyncio twin ``AsyncPostgresEventStore``.

Strategy and invariants
- Optional: needs ``pip install 'segmentlog[postgres]'`` (psycopg 3, psycopg_pool). ``import
  segmentlog`` never imports this module, and importing it without psycopg raises an
  ImportError that says what to install.
- Two tables and one function in one schema (``public`` unless ``schema=`` says otherwise),
  created only by ``create_schema()`` (or by running ``schema_sql()`` from a migration), never
  at import: ``segmentlog_runs(run_id PK, last_seq, session_id, terminal_seq)``,
  ``segmentlog_events(run_id, seq, event_id, session_id, emitted_at, event)`` keyed by
  ``(run_id, seq)``, and ``segmentlog_append(...)``. Both keys start with run_id, so Citus can
  distribute and co-locate both tables by run_id.
- ``event`` holds the msgpack-encoded event alone (msgspec, ``uuid_format="bytes"``, the
  encoding the segment engine uses inside its frames); the envelope's other fields are
  columns, and reads rebuild the Envelope from them. Storing the whole encoded envelope was
  rejected: its bytes contain the seq, so the client would need the seq before it could send
  the row, and the run's row lock would then be held across a client round trip.
- Seqs come from the run's row, and the server assigns them. ``segmentlog_append`` upserts
  ``last_seq = last_seq + n`` (reserving the seqs and row-locking the run), inserts the events
  numbered from it, records a session or terminal event, and NOTIFYs; the client sends it as
  one statement, so it runs as one transaction in one round trip and the lock is never held
  while waiting on a client. (psycopg's pipeline mode would also give one round trip, but
  measured several times slower per call than a single statement.) Appenders in any process
  are serialised per run, and a transaction that rolls back takes its seqs with it: no gaps,
  and never ``MAX(seq) + 1``.
- Events are checked, encoded and decoded again (a value msgspec cannot carry faithfully is
  refused) before anything is sent. A batch over several runs is one transaction calling
  the function once per run, in run_id order, so two batches cannot deadlock.
- An append that raises ``AppendError`` stored nothing. If the connection drops with the
  append in flight, the store asks again over a new connection (after waiting for the dead
  transaction's row lock) and either returns the stored envelopes or raises
  ``PostgresUnavailableError``; only if it cannot find out does it raise
  ``AppendOutcomeUnknownError``, which is not an AppendError.
- A commit NOTIFYs channel ``segmentlog_<run id hex>``. ``subscribe`` LISTENs before it reads,
  replays with ``list_after`` pages, then waits for notifications (and re-reads every
  ``poll_interval`` as a backstop), always asking for ``seq > last yielded``: no gap and no
  duplicate at the seam, and a consumer resumes exactly after the last seq it saw.
- Connections: given a DSN the store opens its own (autocommit, up to
  ``max_idle_connections`` kept idle, all closed by ``close()``); given a psycopg_pool pool it
  borrows and returns the pool's and never closes the pool. A connection that broke is
  discarded with every idle one. Before an idle connection is used, its socket is checked
  (no round trip) for the EOF a restarted server leaves, so after a restart the store simply
  reconnects; while the server is down every call raises ``PostgresUnavailableError``.
- The sync and async stores share the SQL and every step that does not wait on the server;
  the waiting steps are written twice, once with ``await``.
"""

from __future__ import annotations

import select
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

import msgspec

from .errors import (
    AppendError,
    InvalidEventError,
    LogClosedError,
    NotFoundError,
    RecordTooLargeError,
    SegmentLogError,
)
from .events import AgentEvent, Envelope, new_event_id, utcnow
from .format import DEFAULT_MAX_RECORD_BYTES
from .schema import EnvelopeCodec
from .store import DEFAULT_PAGE_LIMIT, check_page_args

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict
    from psycopg.pq import TransactionStatus
    from psycopg.rows import TupleRow
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "segmentlog.postgres needs psycopg 3: pip install 'segmentlog[postgres]'"
    ) from _exc

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

__all__ = [
    "AppendOutcomeUnknownError",
    "AsyncPostgresEventStore",
    "PostgresEventStore",
    "PostgresStoreError",
    "PostgresUnavailableError",
    "SchemaMissingError",
    "schema_sql",
]

E = TypeVar("E")

RUNS_TABLE = "segmentlog_runs"
EVENTS_TABLE = "segmentlog_events"
APPEND_FUNCTION = "segmentlog_append"
#: How long (ms) to wait for the row lock of a transaction whose connection died mid-flight.
SETTLE_LOCK_TIMEOUT_MS = 10_000

Connection = psycopg.Connection[TupleRow]
AsyncConnection = psycopg.AsyncConnection[TupleRow]


# --- errors -------------------------------------------------------------------------------


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
    events again. Not an ``AppendError``: that would promise nothing was stored.
    """

    def __init__(self, message: str, event_ids: list[uuid.UUID], run_ids: list[uuid.UUID]) -> None:
        self.event_ids = event_ids
        self.run_ids = run_ids
        super().__init__(message)


# --- SQL ----------------------------------------------------------------------------------

_DDL = """\
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {runs} (
    run_id       uuid PRIMARY KEY,
    last_seq     bigint NOT NULL,
    session_id   uuid,
    terminal_seq bigint
);
CREATE TABLE IF NOT EXISTS {events} (
    run_id     uuid NOT NULL,
    seq        bigint NOT NULL,
    event_id   uuid NOT NULL,
    session_id uuid,
    emitted_at timestamptz NOT NULL,
    event      bytea NOT NULL,
    PRIMARY KEY (run_id, seq)
);
COMMENT ON COLUMN {events}.event IS
    'the event, msgpack-encoded by msgspec (uuids as 16 bytes), as in segmentlog frames';
CREATE OR REPLACE FUNCTION {append}(
    p_run_id uuid,
    p_event_ids uuid[],
    p_sessions uuid[],
    p_emitted_at timestamptz[],
    p_events bytea[],
    p_terminal_back integer
) RETURNS TABLE (o_last_seq bigint, o_session_id uuid)
LANGUAGE plpgsql AS $fn$
DECLARE
    n integer := cardinality(p_events);
    v_last bigint;
    v_session uuid;
BEGIN
    -- Reserve n seqs and row-lock the run; session_id is left alone here, so this returns
    -- the session in force before the append.
    INSERT INTO {runs} AS r (run_id, last_seq) VALUES (p_run_id, n)
    ON CONFLICT (run_id) DO UPDATE SET last_seq = r.last_seq + EXCLUDED.last_seq
    RETURNING r.last_seq, r.session_id INTO v_last, v_session;
    INSERT INTO {events} (run_id, seq, event_id, session_id, emitted_at, event)
    SELECT p_run_id, v_last - n + u.ord, u.event_id, COALESCE(u.session_id, v_session),
           u.emitted_at, u.event
    FROM unnest(p_event_ids, p_sessions, p_emitted_at, p_events)
         WITH ORDINALITY AS u(event_id, session_id, emitted_at, event, ord);
    IF p_sessions[n] IS NOT NULL OR p_terminal_back IS NOT NULL THEN
        UPDATE {runs} AS r
        SET session_id = COALESCE(p_sessions[n], r.session_id),
            terminal_seq = COALESCE(r.terminal_seq, v_last - p_terminal_back)
        WHERE r.run_id = p_run_id;
    END IF;
    PERFORM pg_notify('segmentlog_' || replace(p_run_id::text, '-', ''), '');
    RETURN QUERY SELECT v_last, v_session;
END
$fn$;
"""

_ENVELOPE_COLUMNS = "seq, event_id, session_id, emitted_at AT TIME ZONE 'UTC', event"


def schema_sql(schema: str = "public") -> str:
    """The idempotent DDL that ``create_schema()`` runs, for use in a migration tool."""
    return _Sql(schema).ddl.as_string(None)


class _Sql:
    """Every statement the stores send, composed once for one schema."""

    def __init__(self, schema: str) -> None:
        if not isinstance(schema, str) or not schema:
            raise ValueError(f"schema must be a non-empty string, got {schema!r}")
        names = {
            "schema": sql.Identifier(schema),
            "runs": sql.Identifier(schema, RUNS_TABLE),
            "events": sql.Identifier(schema, EVENTS_TABLE),
            "append": sql.Identifier(schema, APPEND_FUNCTION),
            "columns": sql.SQL(_ENVELOPE_COLUMNS),
        }

        def q(text: str) -> sql.Composed:
            return sql.SQL(text).format(**names)

        self.schema = schema
        self.ddl = q(_DDL)
        self.ddl_lock = sql.SQL("SELECT pg_advisory_xact_lock(hashtext({}))").format(
            sql.Literal("segmentlog.create_schema:" + schema)
        )
        self.append = q(
            "SELECT o_last_seq, o_session_id FROM {append}"
            "(%s, %s::uuid[], %s::uuid[], %s::timestamptz[], %s::bytea[], %s::integer)"
        )
        self.page = q(
            "SELECT {columns} FROM {events} WHERE run_id = %s AND seq > %s ORDER BY seq LIMIT %s"
        )
        self.run_exists = q("SELECT 1 FROM {runs} WHERE run_id = %s")
        self.last_seq = q("SELECT last_seq FROM {runs} WHERE run_id = %s")
        self.terminal_seq = q("SELECT terminal_seq FROM {runs} WHERE run_id = %s")
        self.runs = q("SELECT run_id FROM {runs} ORDER BY run_id")
        self.settle_timeout = sql.SQL("SET LOCAL lock_timeout = {}").format(
            sql.Literal(f"{SETTLE_LOCK_TIMEOUT_MS}ms")
        )
        # A dead transaction that created the run blocks this insert until it is gone; one
        # that updated the row blocks the FOR UPDATE. Either way, what follows is final.
        self.settle_wait_insert = q(
            "INSERT INTO {runs} (run_id, last_seq) VALUES (%s, 0) ON CONFLICT DO NOTHING"
        )
        self.settle_wait_lock = q("SELECT 1 FROM {runs} WHERE run_id = %s FOR UPDATE")
        self.settle_find = q(
            "SELECT {columns} FROM {events} WHERE run_id = %s AND event_id = ANY(%s) ORDER BY seq"
        )


def channel_of(run_id: uuid.UUID) -> str:
    """The NOTIFY channel a run's commits are announced on."""
    return f"segmentlog_{run_id.hex}"


# --- the steps that do not wait on the server ---------------------------------------------


class _RunBatch(NamedTuple):
    """One run's part of an append_batch, encoded and ready to send."""

    run_id: uuid.UUID
    positions: list[int]  # where each event sits in the caller's sequence
    events: list[Any]
    event_ids: list[uuid.UUID]
    emitted_at: list[datetime]
    encoded: list[bytes]
    #: The session each event starts or inherits from earlier in this batch, else None.
    sessions: list[uuid.UUID | None]
    #: How far the batch's first terminal event sits before its last event, else None.
    terminal_back: int | None

    def arguments(self) -> tuple[Any, ...]:
        """The arguments of ``segmentlog_append`` for this run."""
        return (
            self.run_id,
            self.event_ids,
            self.sessions,
            self.emitted_at,
            self.encoded,
            self.terminal_back,
        )


class _Core(Generic[E]):
    """What both stores do between round trips: validate, encode, decode, describe errors."""

    def __init__(self, event_type: Any, schema: str, max_record_bytes: int) -> None:
        if max_record_bytes < 1:
            raise ValueError(f"max_record_bytes must be >= 1, got {max_record_bytes}")
        self.codec: EnvelopeCodec[E] = EnvelopeCodec(event_type)
        self.sql = _Sql(schema)
        self.max_record_bytes = max_record_bytes
        self.encode = msgspec.msgpack.Encoder(uuid_format="bytes").encode
        self.decode_event = msgspec.msgpack.Decoder(event_type).decode

    def prepare(self, events: Sequence[E]) -> list[_RunBatch]:
        """Check and encode every event before any I/O; group by run, in run-id order."""
        by_run: dict[uuid.UUID, _RunBatch] = {}
        for position, event in enumerate(events):
            run_id = self.codec.run_id_of(event)
            batch = by_run.get(run_id)
            if batch is None:
                batch = by_run[run_id] = _RunBatch(run_id, [], [], [], [], [], [], None)
            started = self.codec.session_of(event)
            if started is None and batch.sessions:
                started = batch.sessions[-1]
            batch.positions.append(position)
            batch.events.append(event)
            batch.event_ids.append(new_event_id())
            batch.emitted_at.append(utcnow())
            batch.encoded.append(self.encode_event(event))
            batch.sessions.append(started)
        out = []
        for run_id in sorted(by_run):
            batch = by_run[run_id]
            terminal = next((i for i, e in enumerate(batch.events) if _is_terminal(e)), None)
            if terminal is not None:
                batch = batch._replace(terminal_back=len(batch.events) - 1 - terminal)
            out.append(batch)
        return out

    def encode_event(self, event: E) -> bytes:
        # msgspec does not type-check fields at construction, so an event can hold a value
        # its schema forbids (an int for a str, a set for a list). Decoding the bytes once
        # more refuses such an event now, rather than storing a row no reader can decode.
        try:
            encoded = self.encode(event)
            faithful = self.decode_event(encoded) == event
        except (TypeError, ValueError, OverflowError, msgspec.MsgspecError) as exc:
            raise InvalidEventError(
                f"event could not be encoded ({exc}); events must be msgspec Structs of the "
                "store's event_type whose fields hold the types they declare"
            ) from exc
        if not faithful:
            raise InvalidEventError(
                f"{type(event).__name__} does not read back equal after encoding (a field "
                "holds a value its type cannot represent, e.g. a set); nothing was stored"
            )
        if len(encoded) > self.max_record_bytes:
            raise RecordTooLargeError(
                f"event of {len(encoded)} encoded bytes exceeds max_record_bytes="
                f"{self.max_record_bytes}; split the event or create the store with a larger "
                "max_record_bytes"
            )
        return encoded

    @staticmethod
    def envelopes(
        batch: _RunBatch, last_seq: int, session: uuid.UUID | None
    ) -> list[Envelope[Any]]:
        """The envelopes the server stored for ``batch``, given the upsert's result."""
        first = last_seq - len(batch.events) + 1
        return [
            Envelope(
                event_id=batch.event_ids[k],
                seq=first + k,
                run_id=batch.run_id,
                session_id=batch.sessions[k] or session,
                event=event,
                emitted_at=batch.emitted_at[k],
            )
            for k, event in enumerate(batch.events)
        ]

    def rows_to_envelopes(self, run_id: uuid.UUID, rows: list[TupleRow]) -> list[Envelope[E]]:
        decode = self.decode_event
        return [
            Envelope(
                event_id=event_id,
                seq=seq,
                run_id=run_id,
                session_id=session_id,
                event=decode(event),
                emitted_at=emitted_at.replace(tzinfo=UTC),
            )
            for seq, event_id, session_id, emitted_at, event in rows
        ]

    @staticmethod
    def in_order(n: int, parts: list[tuple[_RunBatch, list[Envelope[Any]]]]) -> list[Envelope[E]]:
        out: list[Any] = [None] * n
        for batch, envelopes in parts:
            for position, envelope in zip(batch.positions, envelopes, strict=True):
                out[position] = envelope
        return out

    @staticmethod
    def unknown(exc: BaseException, batches: list[_RunBatch]) -> AppendOutcomeUnknownError:
        event_ids = [event_id for batch in batches for event_id in batch.event_ids]
        return AppendOutcomeUnknownError(
            f"the connection to PostgreSQL was lost with the append in flight ({exc}) and the "
            f"store could not reconnect to check the outcome: the {len(event_ids)} event(s) "
            "were either all stored or none was. When the server is back, look for their "
            "event ids (error.event_ids) with list_after before appending them again.",
            event_ids,
            [batch.run_id for batch in batches],
        )

    def append_failure(self, exc: psycopg.Error, broken: bool) -> AppendError:
        if broken or (isinstance(exc, psycopg.OperationalError) and _is_disconnect(exc)):
            return PostgresUnavailableError(
                f"lost the connection to PostgreSQL ({_first_line(exc)}); nothing was stored. "
                "Retry the append: the store reconnects."
            )
        if isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.InvalidSchemaName):
            return SchemaMissingError(self.missing_schema_message(exc))
        return AppendError(
            f"PostgreSQL refused the append ({exc.sqlstate}: {_first_line(exc)}); nothing was "
            "stored. Fix the cause above and append again."
        )

    def read_failure(self, exc: psycopg.Error, broken: bool) -> PostgresStoreError:
        if broken or (isinstance(exc, psycopg.OperationalError) and _is_disconnect(exc)):
            return PostgresUnavailableError(
                f"lost the connection to PostgreSQL ({_first_line(exc)}). Retry: the store "
                "reconnects."
            )
        if isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.InvalidSchemaName):
            return SchemaMissingError(self.missing_schema_message(exc))
        return PostgresStoreError(
            f"PostgreSQL reported an error ({exc.sqlstate}: {_first_line(exc)}); check the "
            "server log and the store's schema."
        )

    def missing_schema_message(self, exc: psycopg.Error) -> str:
        return (
            f"the segmentlog tables do not exist in schema {self.sql.schema!r} "
            f"({_first_line(exc)}); call store.create_schema() once, or run "
            "segmentlog.postgres.schema_sql() in a migration. Nothing was stored."
        )


def _is_terminal(event: object) -> bool:
    return bool(getattr(type(event), "terminal", False))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_disconnect(exc: psycopg.OperationalError) -> bool:
    # Server-side shutdowns (admin_shutdown, crash_shutdown, cannot_connect_now) carry
    # SQLSTATE class 57P, connection exceptions class 08; a dropped socket carries none.
    return exc.sqlstate is None or exc.sqlstate.startswith(("57P", "08"))


def _describe_target(dsn: str) -> str:
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ValueError(f"invalid PostgreSQL DSN: {_first_line(exc)}") from exc
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return f"host={host} port={params.get('port') or 5432} dbname={params.get('dbname') or '-'}"


def _connect_failure(target: str, exc: BaseException) -> PostgresUnavailableError:
    return PostgresUnavailableError(
        f"cannot connect to PostgreSQL at {target}: {_first_line(exc)}. Check that the "
        "server is running and the DSN is right; nothing was stored."
    )


def _is_broken(conn: Connection | AsyncConnection) -> bool:
    return conn.closed or conn.broken


def _still_open(conn: Connection | AsyncConnection) -> bool:
    """False when this idle connection may be dead; checked without a round trip.

    A server that shut down or terminated the backend leaves a FATAL message and EOF in the
    socket, and nothing else arrives unasked on an idle connection that is not listening.
    Spotting it before sending lets the store reconnect knowing nothing was sent, instead of
    sending into a dead connection and not knowing whether the append ran.
    """
    if _is_broken(conn):
        return False
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    return not readable


def _check_poll_interval(poll_interval: float) -> None:
    if poll_interval <= 0:
        raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval}")


def _listen(run_id: uuid.UUID) -> sql.Composed:
    return sql.SQL("LISTEN {}").format(sql.Identifier(channel_of(run_id)))


# --- sync connections ---------------------------------------------------------------------


class _DsnConnections:
    """Connections opened from a DSN; up to ``max_idle`` kept for reuse."""

    def __init__(self, dsn: str, max_idle: int, connect_timeout: float) -> None:
        self.target = _describe_target(dsn)
        self._dsn = dsn
        self._max_idle = max_idle
        self._connect_timeout = max(2, round(connect_timeout))
        self._lock = threading.Lock()
        self._idle: list[Connection] = []
        self._closed = False

    def borrow(self) -> Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        try:
            return psycopg.connect(
                self._dsn, autocommit=True, connect_timeout=self._connect_timeout
            )
        except psycopg.Error as exc:
            raise _connect_failure(self.target, exc) from exc

    def give_back(self, conn: Connection) -> None:
        keep = not _is_broken(conn) and conn.info.transaction_status == TransactionStatus.IDLE
        with self._lock:
            if keep and not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def discard_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.discard_idle()


class _PoolConnections:
    """Connections borrowed from a caller's ``psycopg_pool.ConnectionPool``."""

    def __init__(self, pool: ConnectionPool[Any], timeout: float) -> None:
        self.target = f"pool {getattr(pool, 'name', '?')}"
        self._pool = pool
        self._timeout = timeout

    def borrow(self) -> Connection:
        try:
            conn: Connection = self._pool.getconn(timeout=self._timeout)
        except Exception as exc:  # PoolTimeout, PoolClosed: psycopg_pool may not be imported
            raise _connect_failure(self.target, exc) from exc
        return conn

    def give_back(self, conn: Connection) -> None:
        if not _is_broken(conn) and conn.info.transaction_status != TransactionStatus.IDLE:
            conn.rollback()
        self._pool.putconn(conn)

    def discard_idle(self) -> None:
        self._pool.check()

    def close(self) -> None:
        pass


# --- the sync store -----------------------------------------------------------------------


class PostgresEventStore(Generic[E]):
    """An ``EventStore`` on PostgreSQL, safe for many threads, processes and hosts at once.

    ``dsn_or_pool`` is a libpq connection string (the store opens and closes its own
    connections) or a ``psycopg_pool.ConnectionPool`` (the store borrows connections and
    leaves the pool open). ``schema`` names the PostgreSQL schema holding the two tables;
    ``event_type`` means what it means for ``segmentlog.open``, and ``max_record_bytes``
    limits one encoded event. ``connect_timeout`` bounds (in seconds) how long a call waits
    for a connection. Nothing is created until ``create_schema()`` is called, and nothing
    connects until the first call.

    Raises ``ValueError`` for a malformed DSN or schema, ``TypeError`` for anything that is
    neither a DSN nor a pool.
    """

    def __init__(
        self,
        dsn_or_pool: str | ConnectionPool[Any],
        *,
        schema: str = "public",
        event_type: Any = AgentEvent,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        connect_timeout: float = 10.0,
        max_idle_connections: int = 4,
    ) -> None:
        self._core: _Core[E] = _Core(event_type, schema, max_record_bytes)
        self._sql = self._core.sql
        self._source: _DsnConnections | _PoolConnections
        if isinstance(dsn_or_pool, str):
            self._source = _DsnConnections(dsn_or_pool, max_idle_connections, connect_timeout)
        elif hasattr(dsn_or_pool, "getconn") and hasattr(dsn_or_pool, "putconn"):
            self._source = _PoolConnections(dsn_or_pool, connect_timeout)
        else:
            raise TypeError(
                "dsn_or_pool must be a DSN string or a psycopg_pool.ConnectionPool, got "
                f"{type(dsn_or_pool).__name__}"
            )
        self._closed = False

    # --- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the store's own connections (a caller's pool stays open). Idempotent."""
        self._closed = True
        self._source.close()

    def __enter__(self) -> PostgresEventStore[E]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        if self._closed:
            raise LogClosedError("this PostgresEventStore was closed; create a new one")
        conn = self._source.borrow()
        if not _still_open(conn):
            conn.close()
            self._source.give_back(conn)
            self._source.discard_idle()
            conn = self._source.borrow()
        try:
            yield conn
        finally:
            if _is_broken(conn):
                self._source.discard_idle()
            self._source.give_back(conn)

    def create_schema(self) -> None:
        """Create the schema and tables if they do not exist (idempotent, concurrency-safe).

        Raises ``PostgresStoreError`` when the server refuses (e.g. missing privileges).
        """
        with self._connection() as conn:
            try:
                with conn.transaction():
                    conn.execute(self._sql.ddl_lock)
                    conn.execute(self._sql.ddl)
            except psycopg.Error as exc:
                raise self._core.read_failure(exc, _is_broken(conn)) from exc

    # --- writes -----------------------------------------------------------------------------

    def append(self, event: E) -> Envelope[E]:
        """Store ``event`` and return its envelope.

        Raises ``InvalidEventError`` for a wrong event type, ``RecordTooLargeError``,
        ``PostgresUnavailableError`` when the server is unreachable, ``SchemaMissingError``,
        or ``AppendError`` for any other refusal: in each case nothing was stored.
        ``AppendOutcomeUnknownError`` is the one exception that does not promise that.
        """
        return self.append_batch([event])[0]

    def append_batch(self, events: Sequence[E]) -> list[Envelope[E]]:
        """Store every event in one transaction, or none; envelopes come back in input order.

        Raises as ``append`` does.
        """
        batches = self._core.prepare(events)
        if not batches:
            return []
        with self._connection() as conn:
            try:
                if len(batches) == 1 and conn.autocommit:  # one statement, one transaction
                    rows = [self._append_run(conn, batches[0])]
                else:
                    with conn.transaction():
                        rows = [self._append_run(conn, batch) for batch in batches]
            except psycopg.Error as exc:
                if not _is_broken(conn):
                    raise self._core.append_failure(exc, False) from exc
                lost = exc
            else:
                parts = [
                    (batch, self._core.envelopes(batch, *row))
                    for batch, row in zip(batches, rows, strict=True)
                ]
                return self._core.in_order(len(events), parts)
        return self._core.in_order(len(events), self._settle(batches, lost))

    def _append_run(self, conn: Connection, batch: _RunBatch) -> TupleRow:
        row = conn.execute(self._sql.append, batch.arguments()).fetchone()
        assert row is not None
        return row

    def _settle(
        self, batches: list[_RunBatch], lost: psycopg.Error
    ) -> list[tuple[_RunBatch, list[Envelope[Any]]]]:
        """After losing the connection mid-append: return what was stored, or raise."""
        self._source.discard_idle()
        try:
            with self._connection() as conn, conn.transaction(force_rollback=True):
                conn.execute(self._sql.settle_timeout)
                found = []
                for batch in batches:
                    conn.execute(self._sql.settle_wait_insert, (batch.run_id,))
                    conn.execute(self._sql.settle_wait_lock, (batch.run_id,))
                    rows = conn.execute(
                        self._sql.settle_find, (batch.run_id, batch.event_ids)
                    ).fetchall()
                    found.append((batch, self._core.rows_to_envelopes(batch.run_id, rows)))
        except (psycopg.Error, PostgresUnavailableError) as exc:
            raise self._core.unknown(lost, batches) from exc
        if not found[0][1]:
            raise self._core.append_failure(lost, True) from lost
        return found

    # --- reads ------------------------------------------------------------------------------

    def list_after(
        self, run_id: uuid.UUID, after_seq: int | None = None, limit: int = DEFAULT_PAGE_LIMIT
    ) -> list[Envelope[E]]:
        """Return the run's envelopes with ``seq > after_seq``, in order, at most ``limit``.

        Raises ``NotFoundError`` for a run with no events, ``TypeError``/``ValueError`` for
        bad arguments, ``PostgresUnavailableError`` when the server is unreachable.
        """
        after = check_page_args(run_id, after_seq, limit)
        with self._connection() as conn:
            try:
                rows = self._page(conn, run_id, after, limit)
                if not rows and conn.execute(self._sql.run_exists, (run_id,)).fetchone() is None:
                    raise NotFoundError(run_id)
            except psycopg.Error as exc:
                raise self._core.read_failure(exc, _is_broken(conn)) from exc
        return self._core.rows_to_envelopes(run_id, rows)

    def _page(self, conn: Connection, run_id: uuid.UUID, after: int, limit: int) -> list[TupleRow]:
        with conn.cursor(binary=True) as cur:
            return cur.execute(self._sql.page, (run_id, after, limit)).fetchall()

    def last_seq(self, run_id: uuid.UUID) -> int | None:
        """The run's last seq, or ``None`` for a run with no events."""
        with self._connection() as conn:
            try:
                row = conn.execute(self._sql.last_seq, (run_id,)).fetchone()
            except psycopg.Error as exc:
                raise self._core.read_failure(exc, _is_broken(conn)) from exc
        return None if row is None else int(row[0])

    def runs(self) -> list[uuid.UUID]:
        """The ids of every run with at least one event, in run-id order."""
        with self._connection() as conn:
            try:
                rows = conn.execute(self._sql.runs).fetchall()
            except psycopg.Error as exc:
                raise self._core.read_failure(exc, _is_broken(conn)) from exc
        return [row[0] for row in rows]

    def subscribe(
        self,
        run_id: uuid.UUID,
        after_seq: int | None = None,
        *,
        poll_interval: float = 1.0,
        page_size: int = DEFAULT_PAGE_LIMIT,
    ) -> Iterator[Envelope[E]]:
        """Yield every envelope of the run with ``seq > after_seq``, then each new one as it
        is committed, and stop after the run's terminal event.

        Replay and follow meet without a gap or a duplicate; to resume after a disconnect,
        subscribe again with the last seq received. A run with no events yet is waited for.
        If the run's first terminal event is at or before ``after_seq`` nothing is yielded.
        The subscription holds one connection until it ends or is closed (``break`` closes
        it). Raises ``PostgresUnavailableError`` when the connection is lost.
        """
        after = check_page_args(run_id, after_seq, page_size)
        _check_poll_interval(poll_interval)
        return self._follow(run_id, after, poll_interval, page_size)

    def _follow(
        self, run_id: uuid.UUID, after: int, poll_interval: float, page_size: int
    ) -> Iterator[Envelope[E]]:
        with self._connection() as conn:
            autocommit = conn.autocommit
            try:
                try:
                    if not autocommit:
                        conn.rollback()
                        conn.autocommit = True
                    conn.execute(_listen(run_id))
                    row = conn.execute(self._sql.terminal_seq, (run_id,)).fetchone()
                except psycopg.Error as exc:
                    raise self._core.read_failure(exc, _is_broken(conn)) from exc
                if row is not None and row[0] is not None and row[0] <= after:
                    return
                while True:
                    try:
                        rows = self._page(conn, run_id, after, page_size)
                    except psycopg.Error as exc:
                        raise self._core.read_failure(exc, _is_broken(conn)) from exc
                    for envelope in self._core.rows_to_envelopes(run_id, rows):
                        yield envelope
                        after = envelope.seq
                        if envelope.is_terminal:
                            return
                    if len(rows) == page_size:
                        continue
                    try:
                        for _ in conn.notifies(timeout=poll_interval, stop_after=1):
                            pass
                    except psycopg.Error as exc:
                        raise self._core.read_failure(exc, _is_broken(conn)) from exc
            finally:
                if not _is_broken(conn):
                    try:
                        conn.execute("UNLISTEN *")
                        conn.autocommit = autocommit
                    except psycopg.Error:
                        conn.close()


# --- async connections --------------------------------------------------------------------


class _AsyncDsnConnections:
    """Async connections opened from a DSN; up to ``max_idle`` kept for reuse."""

    def __init__(self, dsn: str, max_idle: int, connect_timeout: float) -> None:
        self.target = _describe_target(dsn)
        self._dsn = dsn
        self._max_idle = max_idle
        self._connect_timeout = max(2, round(connect_timeout))
        self._lock = threading.Lock()
        self._idle: list[AsyncConnection] = []
        self._closed = False

    async def borrow(self) -> AsyncConnection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        try:
            return await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, connect_timeout=self._connect_timeout
            )
        except psycopg.Error as exc:
            raise _connect_failure(self.target, exc) from exc

    async def give_back(self, conn: AsyncConnection) -> None:
        keep = not _is_broken(conn) and conn.info.transaction_status == TransactionStatus.IDLE
        with self._lock:
            if keep and not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        await conn.close()

    async def discard_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()

    async def close(self) -> None:
        with self._lock:
            self._closed = True
        await self.discard_idle()


class _AsyncPoolConnections:
    """Connections borrowed from a caller's ``psycopg_pool.AsyncConnectionPool``."""

    def __init__(self, pool: AsyncConnectionPool[Any], timeout: float) -> None:
        self.target = f"pool {getattr(pool, 'name', '?')}"
        self._pool = pool
        self._timeout = timeout

    async def borrow(self) -> AsyncConnection:
        try:
            conn: AsyncConnection = await self._pool.getconn(timeout=self._timeout)
        except Exception as exc:  # PoolTimeout, PoolClosed: psycopg_pool may not be imported
            raise _connect_failure(self.target, exc) from exc
        return conn

    async def give_back(self, conn: AsyncConnection) -> None:
        if not _is_broken(conn) and conn.info.transaction_status != TransactionStatus.IDLE:
            await conn.rollback()
        await self._pool.putconn(conn)

    async def discard_idle(self) -> None:
        await self._pool.check()

    async def close(self) -> None:
        pass


# --- the async store ----------------------------------------------------------------------


class AsyncPostgresEventStore(Generic[E]):
    """The asyncio twin of ``PostgresEventStore``: the same tables, rules and errors, with
    ``async`` methods. ``dsn_or_pool`` is a DSN or a ``psycopg_pool.AsyncConnectionPool``.

    Use ``async with AsyncPostgresEventStore(dsn) as store:`` or ``await store.close()``.
    """

    def __init__(
        self,
        dsn_or_pool: str | AsyncConnectionPool[Any],
        *,
        schema: str = "public",
        event_type: Any = AgentEvent,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        connect_timeout: float = 10.0,
        max_idle_connections: int = 4,
    ) -> None:
        self._core: _Core[E] = _Core(event_type, schema, max_record_bytes)
        self._sql = self._core.sql
        self._source: _AsyncDsnConnections | _AsyncPoolConnections
        if isinstance(dsn_or_pool, str):
            self._source = _AsyncDsnConnections(dsn_or_pool, max_idle_connections, connect_timeout)
        elif hasattr(dsn_or_pool, "getconn") and hasattr(dsn_or_pool, "putconn"):
            self._source = _AsyncPoolConnections(dsn_or_pool, connect_timeout)
        else:
            raise TypeError(
                "dsn_or_pool must be a DSN string or a psycopg_pool.AsyncConnectionPool, got "
                f"{type(dsn_or_pool).__name__}"
            )
        self._closed = False

    async def close(self) -> None:
        """Close the store's own connections (a caller's pool stays open). Idempotent."""
        self._closed = True
        await self._source.close()

    async def __aenter__(self) -> AsyncPostgresEventStore[E]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection]:
        if self._closed:
            raise LogClosedError("this AsyncPostgresEventStore was closed; create a new one")
        conn = await self._source.borrow()
        if not _still_open(conn):
            await conn.close()
            await self._source.give_back(conn)
            await self._source.discard_idle()
            conn = await self._source.borrow()
        try:
            yield conn
        finally:
            if _is_broken(conn):
                await self._source.discard_idle()
            await self._source.give_back(conn)

    async def create_schema(self) -> None:
        """Create the schema and tables if they do not exist (idempotent, concurrency-safe)."""
        async with self._connection() as conn:
            try:
                async with conn.transaction():
                    await conn.execute(self._sql.ddl_lock)
                    await conn.execute(self._sql.ddl)
            except psycopg.Error as exc:
                raise self._core.read_failure(exc, _is_broken(conn)) from exc

    async def append(self, event: E) -> Envelope[E]:
        """Store ``event`` and return its envelope; raises as ``PostgresEventStore.append``."""
        return (await self.append_batch([event]))[0]

    async def append_batch(self, events: Sequence[E]) -> list[Envelope[E]]:
        """Store every event in one transaction, or none; envelopes in input order."""
        batches = self._core.prepare(events)
        if not batches:
            return []
        async with self._connection() as conn:
            try:
                if len(batches) == 1 and conn.autocommit:  # one statement, one transaction
                    rows = [await self._append_run(conn, batches[0])]
                else:
                    async with conn.transaction():
                        rows = [await self._append_run(conn, batch) for batch in batches]
            except psycopg.Error as exc:
                if not _is_broken(conn):
                    raise self._core.append_failure(exc, False) from exc
                lost = exc
            else:
                parts = [
                    (batch, self._core.envelopes(batch, *row))
                    for batch, row in zip(batches, rows, strict=True)
                ]
                return self._core.in_order(len(events), parts)
        return self._core.in_order(len(events), await self._settle(batches, lost))

    async def _append_run(self, conn: AsyncConnection, batch: _RunBatch) -> TupleRow:
        cur = await conn.execute(self._sql.append, batch.arguments())
        row = await cur.fetchone()
        assert row is not None
        return row

    async def _settle(
        self, batches: list[_RunBatch], lost: psycopg.Error
    ) -> list[tuple[_RunBatch, list[Envelope[Any]]]]:
        await self._source.discard_idle()
        try:
            async with self._connection() as conn, conn.transaction(force_rollback=True):
                await conn.execute(self._sql.settle_timeout)
                found = []
                for batch in batches:
                    await conn.execute(self._sql.settle_wait_insert, (batch.run_id,))
                    await conn.execute(self._sql.settle_wait_lock, (batch.run_id,))
                    cur = await conn.execute(self._sql.settle_find, (batch.run_id, batch.event_ids))
                    rows = await cur.fetchall()
                    found.append((batch, self._core.rows_to_envelopes(batch.run_id, rows)))
        except (psycopg.Error, PostgresUnavailableError) as exc:
            raise self._core.unknown(lost, batches) from exc
        if not found[0][1]:
            raise self._core.append_failure(lost, True) from lost
        return found

    async def list_after(
        self, run_id: uuid.UUID, after_seq: int | None = None, limit: int = DEFAULT_PAGE_LIMIT
    ) -> list[Envelope[E]]:
        """Return the run's envelopes with ``seq > after_seq``; raises as the sync store."""
        after = check_page_args(run_id, after_seq, limit)
        async with self._connection() as conn:
            try:
                rows = await self._page(conn, run_id, after, limit)
                if not rows:
                    cur = await conn.execute(self._sql.run_exists, (run_id,))
                    if await cur.fetchone() is None:
                        raise NotFoundError(run_id)
            except psycopg.Error as exc:
                raise self._core.read_failure(exc, _is_broken(conn)) from exc
        return self._core.rows_to_envelopes(run_id, rows)

    async def _page(
        self, conn: AsyncConnection, run_id: uuid.UUID, after: int, limit: int
    ) -> list[TupleRow]:
        async with conn.cursor(binary=True) as cur:
            await cur.execute(self._sql.page, (run_id, after, limit))
            return await cur.fetchall()

    async def last_seq(self, run_id: uuid.UUID) -> int | None:
        """The run's last seq, or ``None`` for a run with no events."""
        async with self._connection() as conn:
            try:
                cur = await conn.execute(self._sql.last_seq, (run_id,))
                row = await cur.fetchone()
            except psycopg.Error as exc:
                raise self._core.read_failure(exc, _is_broken(conn)) from exc
        return None if row is None else int(row[0])

    async def runs(self) -> list[uuid.UUID]:
        """The ids of every run with at least one event, in run-id order."""
        async with self._connection() as conn:
            try:
                cur = await conn.execute(self._sql.runs)
                rows = await cur.fetchall()
            except psycopg.Error as exc:
                raise self._core.read_failure(exc, _is_broken(conn)) from exc
        return [row[0] for row in rows]

    def subscribe(
        self,
        run_id: uuid.UUID,
        after_seq: int | None = None,
        *,
        poll_interval: float = 1.0,
        page_size: int = DEFAULT_PAGE_LIMIT,
    ) -> AsyncIterator[Envelope[E]]:
        """Async twin of ``PostgresEventStore.subscribe`` (same guarantees).

        If you stop early, close it (``contextlib.aclosing``) so its connection returns.
        """
        after = check_page_args(run_id, after_seq, page_size)
        _check_poll_interval(poll_interval)
        return self._follow(run_id, after, poll_interval, page_size)

    async def _follow(
        self, run_id: uuid.UUID, after: int, poll_interval: float, page_size: int
    ) -> AsyncIterator[Envelope[E]]:
        async with self._connection() as conn:
            autocommit = conn.autocommit
            try:
                try:
                    if not autocommit:
                        await conn.rollback()
                        await conn.set_autocommit(True)
                    await conn.execute(_listen(run_id))
                    cur = await conn.execute(self._sql.terminal_seq, (run_id,))
                    row = await cur.fetchone()
                except psycopg.Error as exc:
                    raise self._core.read_failure(exc, _is_broken(conn)) from exc
                if row is not None and row[0] is not None and row[0] <= after:
                    return
                while True:
                    try:
                        rows = await self._page(conn, run_id, after, page_size)
                    except psycopg.Error as exc:
                        raise self._core.read_failure(exc, _is_broken(conn)) from exc
                    for envelope in self._core.rows_to_envelopes(run_id, rows):
                        yield envelope
                        after = envelope.seq
                        if envelope.is_terminal:
                            return
                    if len(rows) == page_size:
                        continue
                    try:
                        async for _ in conn.notifies(timeout=poll_interval, stop_after=1):
                            pass
                    except psycopg.Error as exc:
                        raise self._core.read_failure(exc, _is_broken(conn)) from exc
            finally:
                if not _is_broken(conn):
                    try:
                        await conn.execute("UNLISTEN *")
                        await conn.set_autocommit(autocommit)
                    except psycopg.Error:
                        await conn.close()
