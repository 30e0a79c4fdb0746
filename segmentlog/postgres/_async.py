"""The asyncio shell: ``AsyncPostgresEventStore``, and the loop that carries out plans' steps.

Strategy and invariants
- The twin of ``_sync.py``, step for step, with ``await``: the same plans (``_plans.py``)
  make every decision, so the two stores share the SQL, the rules and the errors, and differ
  only in how they wait. Keep the two drivers' shapes alike, so a reader can hold one beside
  the other and see that nothing but the waiting differs.
- Connections come from ``_AsyncDsnConnections`` (its own, kept idle up to a limit) or
  ``_AsyncPoolConnections`` (a caller's ``psycopg_pool.AsyncConnectionPool``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
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
    from psycopg_pool import AsyncConnectionPool

__all__ = ["AsyncPostgresEventStore"]

E = TypeVar("E")
R = TypeVar("R")

AsyncConnection = psycopg.AsyncConnection[TupleRow]


class _AsyncDsnConnections:
    """Async connections opened from a DSN; up to ``max_idle`` kept for reuse."""

    def __init__(self, dsn: str, max_idle: int, connect_timeout: float) -> None:
        self.target = describe_target(dsn)
        self._dsn = dsn
        self._connect_timeout = libpq_connect_timeout(connect_timeout)
        self._idle: IdleConnections[AsyncConnection] = IdleConnections(max_idle)

    async def borrow(self) -> AsyncConnection:
        conn = self._idle.take()
        if conn is not None:
            return conn
        try:
            return await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, connect_timeout=self._connect_timeout
            )
        except psycopg.Error as exc:
            raise connect_failure(self.target, exc) from exc

    async def give_back(self, conn: AsyncConnection) -> None:
        if not self._idle.keep(conn):
            await conn.close()

    async def discard_idle(self) -> None:
        for conn in self._idle.drain():
            await conn.close()

    async def close(self) -> None:
        for conn in self._idle.close():
            await conn.close()


class _AsyncPoolConnections:
    """Connections borrowed from a caller's ``psycopg_pool.AsyncConnectionPool``."""

    def __init__(self, pool: AsyncConnectionPool[Any], timeout: float) -> None:
        self.target = pool_target(pool)
        self._pool = pool
        self._timeout = timeout

    async def borrow(self) -> AsyncConnection:
        try:
            conn: AsyncConnection = await self._pool.getconn(timeout=self._timeout)
        except Exception as exc:  # PoolTimeout, PoolClosed: psycopg_pool may not be imported
            raise connect_failure(self.target, exc) from exc
        return conn

    async def give_back(self, conn: AsyncConnection) -> None:
        if needs_rollback(conn):
            await conn.rollback()
        await self._pool.putconn(conn)

    async def discard_idle(self) -> None:
        await self._pool.check()

    async def close(self) -> None:
        pass


class _AsyncDriver:
    """Carries out plans' steps on connections from ``source``."""

    def __init__(self, source: _AsyncDsnConnections | _AsyncPoolConnections, owner: str) -> None:
        self.source = source
        self.closed = False
        self._owner = owner

    async def close(self) -> None:
        self.closed = True
        await self.source.close()

    async def run(self, plan: Plan[R]) -> R:
        """Carry ``plan`` out; return its result or raise what it raises."""
        lease: Lease[AsyncConnection] = Lease()
        try:
            return await self._walk(lease, plan)
        finally:
            await self._release(lease)

    async def stream(self, plan: Plan[None]) -> AsyncIterator[Envelope[Any]]:
        """Carry ``plan`` out, yielding what it emits; closing the iterator abandons it."""
        lease: Lease[AsyncConnection] = Lease()
        stepper = Stepper(plan)
        try:
            while (step := stepper.next()) is not None:
                if isinstance(step, Emit):
                    yield step.envelope
                else:
                    await self._attempt(lease, stepper, step)
        finally:
            stepper.close()
            await self._release(lease)

    async def _walk(self, lease: Lease[AsyncConnection], plan: Plan[R]) -> R:
        stepper = Stepper(plan)
        while (step := stepper.next()) is not None:
            await self._attempt(lease, stepper, step)
        return stepper.result

    async def _attempt(
        self, lease: Lease[AsyncConnection], stepper: Stepper[Any], step: Step
    ) -> None:
        try:
            stepper.done(await self._do(lease, step))
        except psycopg.Error as exc:
            stepper.fail(Failed(exc, is_broken(lease.conn)))
        except Exception as exc:
            stepper.fail(exc)

    async def _do(self, lease: Lease[AsyncConnection], step: Step) -> Any:
        if isinstance(step, Reconnect):
            await self._release(lease)
            await self.source.discard_idle()
            return None
        conn = lease.conn if lease.conn is not None else await self._borrow(lease)
        if isinstance(step, Query):
            async with conn.cursor(binary=step.binary) as cur:
                await cur.execute(step.statement, step.params)
                return await cur.fetchall() if has_rows(cur) else []
        if isinstance(step, Transaction):
            if step.single_statement and conn.autocommit:
                return await self._walk(lease, step.plan)
            async with conn.transaction(force_rollback=step.force_rollback):
                return await self._walk(lease, step.plan)
        if isinstance(step, Listen):
            if lease.autocommit is None:
                lease.autocommit = conn.autocommit
                if not conn.autocommit:
                    await conn.rollback()
                    await conn.set_autocommit(True)
            await conn.execute(listen_statement(step.channel))
            return None
        if isinstance(step, WaitForNotify):
            async for _ in conn.notifies(timeout=step.timeout, stop_after=1):
                pass
            return None
        raise TypeError(f"not a step the driver carries out: {step!r}")

    async def _borrow(self, lease: Lease[AsyncConnection]) -> AsyncConnection:
        if self.closed:
            raise LogClosedError(f"this {self._owner} was closed; create a new one")
        conn = await self.source.borrow()
        if not still_open(conn):
            await conn.close()
            await self.source.give_back(conn)
            await self.source.discard_idle()
            conn = await self.source.borrow()
        lease.conn = conn
        return conn

    async def _release(self, lease: Lease[AsyncConnection]) -> None:
        conn, lease.conn = lease.conn, None
        if conn is None:
            return
        autocommit, lease.autocommit = lease.autocommit, None
        if autocommit is not None and not is_broken(conn):
            try:
                await conn.execute("UNLISTEN *")
                await conn.set_autocommit(autocommit)
            except psycopg.Error:
                await conn.close()
        if is_broken(conn):
            await self.source.discard_idle()
        await self.source.give_back(conn)


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
        self._plans: Plans[E] = Plans(event_type, schema, max_record_bytes)
        source: _AsyncDsnConnections | _AsyncPoolConnections
        if isinstance(dsn_or_pool, str):
            source = _AsyncDsnConnections(dsn_or_pool, max_idle_connections, connect_timeout)
        elif is_pool(dsn_or_pool):
            source = _AsyncPoolConnections(dsn_or_pool, connect_timeout)
        else:
            raise TypeError(
                "dsn_or_pool must be a DSN string or a psycopg_pool.AsyncConnectionPool, got "
                f"{type(dsn_or_pool).__name__}"
            )
        self._driver = _AsyncDriver(source, type(self).__name__)

    async def close(self) -> None:
        """Close the store's own connections (a caller's pool stays open). Idempotent."""
        await self._driver.close()

    async def __aenter__(self) -> AsyncPostgresEventStore[E]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def create_schema(self) -> None:
        """Create or upgrade the schema, as ``PostgresEventStore.create_schema``."""
        await self._driver.run(self._plans.create_schema())

    async def append(
        self, event: E, *, key: str | None = None, expected_seq: int | None = None
    ) -> Envelope[E]:
        """Store ``event`` and return its envelope; keys, ``expected_seq`` and errors as
        ``PostgresEventStore.append``."""
        return (await self.append_batch([event], keys=[key], expected_seq=expected_seq))[0]

    async def append_batch(
        self,
        events: Sequence[E],
        *,
        keys: Sequence[str | None] | None = None,
        expected_seq: int | None = None,
    ) -> list[Envelope[E]]:
        """Store every event in one transaction, or none; as ``PostgresEventStore``."""
        return await self._driver.run(self._plans.append_batch(events, keys, expected_seq))

    async def list_after(
        self, run_id: uuid.UUID, after_seq: int | None = None, limit: int = DEFAULT_PAGE_LIMIT
    ) -> list[Envelope[E]]:
        """Return the run's envelopes with ``seq > after_seq``; raises as the sync store."""
        return await self._driver.run(self._plans.list_after(run_id, after_seq, limit))

    async def last_seq(self, run_id: uuid.UUID) -> int | None:
        """The run's last seq, or ``None`` for a run with no events."""
        return await self._driver.run(self._plans.last_seq(run_id))

    async def runs(self) -> list[uuid.UUID]:
        """The ids of every run with at least one event, in run-id order."""
        return await self._driver.run(self._plans.runs())

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
        plan = self._plans.follow(run_id, after_seq, poll_interval, page_size)
        return self._driver.stream(plan)
