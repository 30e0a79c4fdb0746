"""Plans: every operation of both stores, written once, as generators that do no I/O.

Strategy and invariants
- A plan is a generator that yields *steps* (send a query, run a sub-plan in a transaction,
  reconnect, listen, wait for a notification, emit an envelope) and receives each step's
  result; its return value is the operation's result. The sync and async stores only carry
  steps out (``_sync.py``, ``_async.py``), so each operation's logic (its statements, their
  order, the row mapping, retries and error rules) exists once, and is tested here with no
  server: feed results in, read steps out. This is psycopg's own trick (its
  ``generators.py``, one level up: its generators wait on sockets, ours on statements).
  Rejected: generating the sync module from the async one (psycopg's ``async_to_sync.py``).
  It keeps two copies of every body in the tree, needs a code transformer and a freshness
  test, and leaves the logic reachable only through a server.
- A step that fails on the server is thrown back into its plan as ``Failed`` (the psycopg
  error and whether the connection broke); any other exception (a connection that cannot be
  opened, the store closed) is thrown back as itself. Reads turn ``Failed`` into the
  backend's errors with ``reading``; appends decide for themselves.
- Arguments are checked when a plan is *made* (the public method's call), before the driver
  touches a connection; a plan that needs no step (an empty batch) never connects.
- An append of one run is one ``Query`` (one statement, one round trip), inside a
  ``Transaction`` that the driver elides on an autocommit connection; a batch over several
  runs is one transaction with one statement per run, in run-id order.
- The append decides the keys-first rule inside its transaction, so a multi-run batch that
  mixes held and new keys rolls back what its other runs' statements wrote.
"""

from __future__ import annotations

import uuid
from collections.abc import Generator, Iterable, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

import psycopg
from psycopg import sql

from ..errors import NotFoundError, SeqConflictError
from ..events import Envelope
from ..store import check_page_args, held_envelopes
from ._errors import (
    PostgresUnavailableError,
    append_failure,
    outcome_unknown,
    read_failure,
)
from ._rows import RowCodec, RunBatch, in_order
from ._schema import Statements, channel_of

__all__ = [
    "Emit",
    "Failed",
    "Listen",
    "Plan",
    "Plans",
    "Query",
    "Reconnect",
    "Step",
    "Stepper",
    "Transaction",
    "WaitForNotify",
]

E = TypeVar("E")
R = TypeVar("R")


class Query(NamedTuple):
    """Send one statement; its result is the rows it returned (``[]`` for none)."""

    statement: sql.Composed
    params: tuple[Any, ...] | None = None
    binary: bool = False


class Transaction(NamedTuple):
    """Run ``plan`` in one transaction, rolled back if it raises (always, with
    ``force_rollback``); the result is the plan's. A ``single_statement`` plan needs no
    BEGIN/COMMIT on an autocommit connection: its statement is its own transaction."""

    plan: Plan[Any]
    force_rollback: bool = False
    single_statement: bool = False


class Reconnect(NamedTuple):
    """Give back the connection (it broke) and drop idle ones; the next step borrows anew."""


class Listen(NamedTuple):
    """Switch the connection to autocommit and LISTEN on ``channel``; both are undone when
    the connection is given back."""

    channel: str


class WaitForNotify(NamedTuple):
    """Wait up to ``timeout`` seconds for one notification on a channel listened to."""

    timeout: float


class Emit(NamedTuple):
    """Hand ``envelope`` to the consumer of a stream (``subscribe``)."""

    envelope: Envelope[Any]


Step = Query | Transaction | Reconnect | Listen | WaitForNotify | Emit
Plan = Generator[Step, Any, R]


class Failed(Exception):
    """Thrown into a plan when one of its steps failed on the server."""

    def __init__(self, error: psycopg.Error, broken: bool) -> None:
        super().__init__(error)
        self.error = error
        #: True when the connection was lost with the step (the step's outcome is unknown).
        self.broken = broken


class Stepper(Generic[R]):
    """Walks a plan for a driver: hands out its steps and feeds each outcome back."""

    __slots__ = ("_error", "_plan", "_value", "result")

    def __init__(self, plan: Plan[R]) -> None:
        self._plan = plan
        self._value: Any = None
        self._error: BaseException | None = None
        self.result: R

    def next(self) -> Step | None:
        """The next step, or ``None`` once the plan returned (see ``result``); raises what the
        plan raises."""
        value, error = self._value, self._error
        self._value = self._error = None
        try:
            return self._plan.send(value) if error is None else self._plan.throw(error)
        except StopIteration as stop:
            self.result = stop.value
            return None

    def done(self, value: Any) -> None:
        """The last step succeeded with ``value``."""
        self._value = value

    def fail(self, error: BaseException) -> None:
        """The last step raised ``error`` (a ``Failed`` for a server error)."""
        self._error = error

    def close(self) -> None:
        """Abandon the plan (its consumer went away)."""
        self._plan.close()


class Plans(Generic[E]):
    """The plan of every store operation, for one schema and event type."""

    def __init__(self, event_type: Any, schema: str, max_record_bytes: int) -> None:
        self.rows: RowCodec[E] = RowCodec(event_type, max_record_bytes)
        self.sql = Statements(schema)

    def reading(self, plan: Plan[R]) -> Plan[R]:
        """``plan`` with its server errors turned into the backend's read errors."""
        try:
            return (yield from plan)
        except Failed as failed:
            raise read_failure(failed.error, failed.broken, self.sql.schema) from failed.error

    # --- schema -------------------------------------------------------------------------

    def create_schema(self) -> Plan[None]:
        return self.reading(self._create_schema())

    def _create_schema(self) -> Plan[None]:
        yield Transaction(_statements(Query(self.sql.ddl_lock), Query(self.sql.ddl)))

    # --- appends ------------------------------------------------------------------------

    def append_batch(
        self,
        events: Iterable[E],
        keys: Sequence[str | None] | None,
        expected_seq: int | None,
    ) -> Plan[list[Envelope[E]]]:
        """Check and encode now; the plan stores the batch or raises (see the stores)."""
        n, batches = self.rows.prepare(events, keys, expected_seq)
        return self._append(n, batches, expected_seq)

    def _append(
        self, n: int, batches: list[RunBatch], expected_seq: int | None
    ) -> Plan[list[Envelope[E]]]:
        if not batches:
            return []
        runs = self._append_runs(n, batches, expected_seq)
        try:
            result: list[Envelope[E]] = yield Transaction(runs, single_statement=len(batches) == 1)
        except Failed as failed:
            if not failed.broken:
                raise append_failure(failed.error, False, self.sql.schema) from failed.error
            return in_order(n, (yield from self._settle(batches, failed.error)))
        return result

    def _append_runs(
        self, n: int, batches: list[RunBatch], expected_seq: int | None
    ) -> Plan[list[Envelope[E]]]:
        parts: list[tuple[RunBatch, list[Envelope[E]]]] = []
        held: dict[tuple[uuid.UUID, str], Envelope[E]] = {}
        for batch in batches:
            rows = yield Query(self.sql.append, batch.arguments(expected_seq), binary=True)
            outcome, last_seq, session = rows[0][:3]
            if outcome == "appended":
                parts.append((batch, self.rows.appended(batch, last_seq, session)))
            elif outcome == "held":
                for envelope in self.rows.to_envelopes(batch.run_id, (r[3:] for r in rows)):
                    assert envelope.key is not None
                    held[batch.run_id, envelope.key] = envelope
            else:
                assert outcome == "seq_conflict" and expected_seq is not None, outcome
                raise SeqConflictError(batch.run_id, expected_seq, last_seq)
        if not held:
            return in_order(n, parts)
        # Some run holds a key: the whole batch must be a retry. Raising here rolls back
        # whatever the other runs' statements wrote in this transaction.
        events: list[Any] = [None] * n
        keys: list[str | None] = [None] * n
        stored: list[Envelope[E] | None] = [None] * n
        for batch in batches:
            for position, event, key in zip(batch.positions, batch.events, batch.keys, strict=True):
                events[position], keys[position] = event, key
                stored[position] = None if key is None else held.get((batch.run_id, key))
        result = held_envelopes(events, keys, stored)
        assert result is not None
        return result

    def _settle(
        self, batches: list[RunBatch], lost: psycopg.Error
    ) -> Plan[list[tuple[RunBatch, list[Envelope[E]]]]]:
        """After losing the connection mid-append: return what was stored, or raise."""
        yield Reconnect()
        try:
            found: list[tuple[RunBatch, list[Envelope[E]]]] = yield Transaction(
                self._find(batches), force_rollback=True
            )
        except (Failed, PostgresUnavailableError) as exc:
            cause = exc.error if isinstance(exc, Failed) else exc
            event_ids = [event_id for batch in batches for event_id in batch.event_ids]
            run_ids = [batch.run_id for batch in batches]
            raise outcome_unknown(lost, event_ids, run_ids) from cause
        if not found[0][1]:
            raise append_failure(lost, True, self.sql.schema) from lost
        return found

    def _find(self, batches: list[RunBatch]) -> Plan[list[tuple[RunBatch, list[Envelope[E]]]]]:
        yield Query(self.sql.settle_timeout)
        found = []
        for batch in batches:
            yield Query(self.sql.settle_wait_insert, (batch.run_id,))
            yield Query(self.sql.settle_wait_lock, (batch.run_id,))
            rows = yield Query(self.sql.settle_find, (batch.run_id, batch.event_ids), binary=True)
            found.append((batch, self.rows.to_envelopes(batch.run_id, rows)))
        return found

    # --- reads --------------------------------------------------------------------------

    def list_after(
        self, run_id: uuid.UUID, after_seq: int | None, limit: int
    ) -> Plan[list[Envelope[E]]]:
        after = check_page_args(run_id, after_seq, limit)
        return self.reading(self._list_after(run_id, after, limit))

    def _list_after(self, run_id: uuid.UUID, after: int, limit: int) -> Plan[list[Envelope[E]]]:
        rows = yield Query(self.sql.page, (run_id, after, limit), binary=True)
        if not rows and not (yield Query(self.sql.run_exists, (run_id,))):
            raise NotFoundError(run_id)
        return self.rows.to_envelopes(run_id, rows)

    def last_seq(self, run_id: uuid.UUID) -> Plan[int | None]:
        return self.reading(self._last_seq(run_id))

    def _last_seq(self, run_id: uuid.UUID) -> Plan[int | None]:
        rows = yield Query(self.sql.last_seq, (run_id,))
        return int(rows[0][0]) if rows else None

    def runs(self) -> Plan[list[uuid.UUID]]:
        return self.reading(self._runs())

    def _runs(self) -> Plan[list[uuid.UUID]]:
        rows = yield Query(self.sql.runs)
        return [row[0] for row in rows]

    def follow(
        self, run_id: uuid.UUID, after_seq: int | None, poll_interval: float, page_size: int
    ) -> Plan[None]:
        """Replay the run after ``after_seq``, then follow it to its terminal event."""
        after = check_page_args(run_id, after_seq, page_size)
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval}")
        return self.reading(self._follow(run_id, after, poll_interval, page_size))

    def _follow(
        self, run_id: uuid.UUID, after: int, poll_interval: float, page_size: int
    ) -> Plan[None]:
        # LISTEN before the first read: a commit after that read is announced, so always
        # asking for seq > the last yielded leaves no gap and no duplicate at the seam.
        yield Listen(channel_of(run_id))
        rows = yield Query(self.sql.terminal_seq, (run_id,))
        if rows and rows[0][0] is not None and rows[0][0] <= after:
            return
        while True:
            rows = yield Query(self.sql.page, (run_id, after, page_size), binary=True)
            for envelope in self.rows.to_envelopes(run_id, rows):
                yield Emit(envelope)
                after = envelope.seq
                if envelope.is_terminal:
                    return
            if len(rows) < page_size:
                yield WaitForNotify(poll_interval)


def _statements(*queries: Query) -> Plan[None]:
    # Not ``yield from queries``: a tuple's iterator cannot take the results sent back.
    for query in queries:
        _rows = yield query
