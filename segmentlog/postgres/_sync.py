"""The blocking shell: ``PostgresEventStore``, and the loop that carries out plans' steps.

Strategy and invariants
- Nothing here decides anything an operation means: every public method makes a plan
  (``_plans.py``, which also checks the arguments) and hands it to ``_Driver``, which
  carries each step out on a psycopg connection and feeds the result back. ``_async.py`` is
  this module's twin with ``await``; the two differ only in how they wait.
- A step's ``psycopg.Error`` goes back into the plan as ``Failed`` (with whether the
  connection broke); any other exception goes back as itself. ``BaseException`` (a
  ``KeyboardInterrupt``) is not offered to the plan: it propagates, and the lease is given
  back on the way out.
- Connections come from ``_DsnConnections`` (its own, kept idle up to a limit) or
  ``_PoolConnections`` (a caller's ``psycopg_pool.ConnectionPool``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import psycopg
from psycopg.rows import TupleRow

from ..errors import LogClosedError
from ..events import AgentEvent, Envelope
from ..format import DEFAULT_MAX_RECORD_BYTES
from ..store import DEFAULT_PAGE_LIMIT
from ._connections import (
    IdleConnections,
    Lease,
    describe_target,
    has_rows,
    is_broken,
    is_pool,
    libpq_connect_timeout,
    needs_rollback,
    pool_target,
    still_open,
)
from ._errors import connect_failure
from ._plans import (
    Emit,
    Failed,
    Listen,
    Plan,
    Plans,
    Query,
    Reconnect,
    Step,
    Stepper,
    Transaction,
    WaitForNotify,
)
from ._schema import listen_statement

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

__all__ = ["PostgresEventStore"]

E = TypeVar("E")
R = TypeVar("R")

Connection = psycopg.Connection[TupleRow]


class _DsnConnections:
    """Connections opened from a DSN; up to ``max_idle`` kept for reuse."""

    def __init__(self, dsn: str, max_idle: int, connect_timeout: float) -> None:
        self.target = describe_target(dsn)
        self._dsn = dsn
        self._connect_timeout = libpq_connect_timeout(connect_timeout)
        self._idle: IdleConnections[Connection] = IdleConnections(max_idle)

    def borrow(self) -> Connection:
        conn = self._idle.take()
        if conn is not None:
            return conn
        try:
            return psycopg.connect(
                self._dsn, autocommit=True, connect_timeout=self._connect_timeout
            )
        except psycopg.Error as exc:
            raise connect_failure(self.target, exc) from exc

    def give_back(self, conn: Connection) -> None:
        if not self._idle.keep(conn):
            conn.close()

    def discard_idle(self) -> None:
        for conn in self._idle.drain():
            conn.close()

    def close(self) -> None:
        for conn in self._idle.close():
            conn.close()


class _PoolConnections:
    """Connections borrowed from a caller's ``psycopg_pool.ConnectionPool``."""

    def __init__(self, pool: ConnectionPool[Any], timeout: float) -> None:
        self.target = pool_target(pool)
        self._pool = pool
        self._timeout = timeout

    def borrow(self) -> Connection:
        try:
            conn: Connection = self._pool.getconn(timeout=self._timeout)
        except Exception as exc:  # PoolTimeout, PoolClosed: psycopg_pool may not be imported
            raise connect_failure(self.target, exc) from exc
        return conn

    def give_back(self, conn: Connection) -> None:
        if needs_rollback(conn):
            conn.rollback()
        self._pool.putconn(conn)

    def discard_idle(self) -> None:
        self._pool.check()

    def close(self) -> None:
        pass


class _Driver:
    """Carries out plans' steps on connections from ``source``."""

    def __init__(self, source: _DsnConnections | _PoolConnections, owner: str) -> None:
        self.source = source
        self.closed = False
        self._owner = owner

    def close(self) -> None:
        self.closed = True
        self.source.close()

    def run(self, plan: Plan[R]) -> R:
        """Carry ``plan`` out; return its result or raise what it raises."""
        lease: Lease[Connection] = Lease()
        try:
            return self._walk(lease, plan)
        finally:
            self._release(lease)

    def stream(self, plan: Plan[None]) -> Iterator[Envelope[Any]]:
        """Carry ``plan`` out, yielding what it emits; closing the iterator abandons it."""
        lease: Lease[Connection] = Lease()
        stepper = Stepper(plan)
        try:
            while (step := stepper.next()) is not None:
                if isinstance(step, Emit):
                    yield step.envelope
                else:
                    self._attempt(lease, stepper, step)
        finally:
            stepper.close()
            self._release(lease)

    def _walk(self, lease: Lease[Connection], plan: Plan[R]) -> R:
        stepper = Stepper(plan)
        while (step := stepper.next()) is not None:
            self._attempt(lease, stepper, step)
        return stepper.result

    def _attempt(self, lease: Lease[Connection], stepper: Stepper[Any], step: Step) -> None:
        try:
            stepper.done(self._do(lease, step))
        except psycopg.Error as exc:
            stepper.fail(Failed(exc, is_broken(lease.conn)))
        except Exception as exc:
            stepper.fail(exc)

    def _do(self, lease: Lease[Connection], step: Step) -> Any:
        if isinstance(step, Reconnect):
            self._release(lease)
            self.source.discard_idle()
            return None
        conn = lease.conn if lease.conn is not None else self._borrow(lease)
        if isinstance(step, Query):
            with conn.cursor(binary=step.binary) as cur:
                cur.execute(step.statement, step.params)
                return cur.fetchall() if has_rows(cur) else []
        if isinstance(step, Transaction):
            if step.single_statement and conn.autocommit:
                return self._walk(lease, step.plan)
            with conn.transaction(force_rollback=step.force_rollback):
                return self._walk(lease, step.plan)
        if isinstance(step, Listen):
            if lease.autocommit is None:
                lease.autocommit = conn.autocommit
                if not conn.autocommit:
                    conn.rollback()
                    conn.set_autocommit(True)
            conn.execute(listen_statement(step.channel))
            return None
        if isinstance(step, WaitForNotify):
            for _ in conn.notifies(timeout=step.timeout, stop_after=1):
                pass
            return None
        raise TypeError(f"not a step the driver carries out: {step!r}")

    def _borrow(self, lease: Lease[Connection]) -> Connection:
        if self.closed:
            raise LogClosedError(f"this {self._owner} was closed; create a new one")
        conn = self.source.borrow()
        if not still_open(conn):
            conn.close()
            self.source.give_back(conn)
            self.source.discard_idle()
            conn = self.source.borrow()
        lease.conn = conn
        return conn

    def _release(self, lease: Lease[Connection]) -> None:
        conn, lease.conn = lease.conn, None
        if conn is None:
            return
        autocommit, lease.autocommit = lease.autocommit, None
        if autocommit is not None and not is_broken(conn):
            try:
                conn.execute("UNLISTEN *")
                conn.set_autocommit(autocommit)
            except psycopg.Error:
                conn.close()
        if is_broken(conn):
            self.source.discard_idle()
        self.source.give_back(conn)


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
        self._plans: Plans[E] = Plans(event_type, schema, max_record_bytes)
        source: _DsnConnections | _PoolConnections
        if isinstance(dsn_or_pool, str):
            source = _DsnConnections(dsn_or_pool, max_idle_connections, connect_timeout)
        elif is_pool(dsn_or_pool):
            source = _PoolConnections(dsn_or_pool, connect_timeout)
        else:
            raise TypeError(
                "dsn_or_pool must be a DSN string or a psycopg_pool.ConnectionPool, got "
                f"{type(dsn_or_pool).__name__}"
            )
        self._driver = _Driver(source, type(self).__name__)

    # --- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the store's own connections (a caller's pool stays open). Idempotent."""
        self._driver.close()

    def __enter__(self) -> PostgresEventStore[E]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def create_schema(self) -> None:
        """Create the schema, tables and function if missing, and upgrade a schema made by an
        earlier segmentlog (idempotent, concurrency-safe).

        Raises ``PostgresStoreError`` when the server refuses (e.g. missing privileges).
        """
        self._driver.run(self._plans.create_schema())

    # --- writes -----------------------------------------------------------------------------

    def append(
        self, event: E, *, key: str | None = None, expected_seq: int | None = None
    ) -> Envelope[E]:
        """Store ``event`` and return its envelope; ``append_batch([event], keys=[key])``.

        ``key`` is an idempotency key, unique within the run: if the run already holds it,
        the stored envelope is returned and nothing is written. ``expected_seq``: append
        only if the run's last seq equals it (0: the run has no events yet).

        Raises ``InvalidEventError`` for a wrong event type, ``RecordTooLargeError``,
        ``InvalidKeyError`` for a bad key, ``IdempotencyConflictError`` when the run holds
        ``key`` for a different event, ``SeqConflictError`` when its last seq is not
        ``expected_seq``, ``PostgresUnavailableError`` when the server is unreachable,
        ``SchemaMissingError``, or ``AppendError`` for any other refusal: in each case
        nothing was stored. ``AppendOutcomeUnknownError`` is the one exception that does not
        promise that (append again with the same key to settle it).
        """
        return self.append_batch([event], keys=[key], expected_seq=expected_seq)[0]

    def append_batch(
        self,
        events: Sequence[E],
        *,
        keys: Sequence[str | None] | None = None,
        expected_seq: int | None = None,
    ) -> list[Envelope[E]]:
        """Store every event in one transaction, or none; envelopes come back in input order.

        ``keys`` gives each event's idempotency key (or None); a key repeated within the
        batch is a ``ValueError``. When the runs hold every key, for equal events, the
        stored envelopes are returned and nothing is written; a batch that mixes held keys
        with new keys or unkeyed events raises ``IdempotencyConflictError``. Keys are checked
        first, then ``expected_seq``, which needs all events in one run (else
        ``ValueError``). Raises as ``append`` does.
        """
        return self._driver.run(self._plans.append_batch(events, keys, expected_seq))

    # --- reads ------------------------------------------------------------------------------

    def list_after(
        self, run_id: uuid.UUID, after_seq: int | None = None, limit: int = DEFAULT_PAGE_LIMIT
    ) -> list[Envelope[E]]:
        """Return the run's envelopes with ``seq > after_seq``, in order, at most ``limit``.

        Raises ``NotFoundError`` for a run with no events, ``TypeError``/``ValueError`` for
        bad arguments, ``PostgresUnavailableError`` when the server is unreachable.
        """
        return self._driver.run(self._plans.list_after(run_id, after_seq, limit))

    def last_seq(self, run_id: uuid.UUID) -> int | None:
        """The run's last seq, or ``None`` for a run with no events."""
        return self._driver.run(self._plans.last_seq(run_id))

    def runs(self) -> list[uuid.UUID]:
        """The ids of every run with at least one event, in run-id order."""
        return self._driver.run(self._plans.runs())

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
        plan = self._plans.follow(run_id, after_seq, poll_interval, page_size)
        return self._driver.stream(plan)
