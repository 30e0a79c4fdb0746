"""Idempotency keys and ``expected_seq`` on PostgreSQL beyond the shared contract: the
schema and its upgrade, one round trip per append, processes racing on keys, the asyncio
store, and a COMMIT whose connection dies.

The contract itself runs on PostgreSQL in ``tests/conformance/test_idempotency*.py``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from psycopg import pq, sql
from psycopg_pool import ConnectionPool

from segmentlog import (
    IdempotencyConflictError,
    InvalidKeyError,
    SeqConflictError,
    TextDelta,
)
from segmentlog.postgres import (
    APPEND_FUNCTION,
    EVENTS_TABLE,
    KEY_CONSTRAINT,
    RUNS_TABLE,
    AsyncPostgresEventStore,
    PostgresEventStore,
    schema_sql,
)
from tests.conformance.events_factory import text_delta
from tests.postgres.appender import retry_keyed
from tests.postgres.faults import app_dsn, in_thread, wait_for_backend

pytestmark = pytest.mark.postgres

SCHEMA_0_1 = Path(__file__).with_name("schema_0_1.sql")
STAMP = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


def _names(schema: str) -> dict[str, sql.Composable]:
    return {
        "schema": sql.Identifier(schema),
        "runs": sql.Identifier(schema, RUNS_TABLE),
        "events": sql.Identifier(schema, EVENTS_TABLE),
        "append": sql.Identifier(schema, APPEND_FUNCTION),
    }


# --- schema ---------------------------------------------------------------------------------


def test_keys_are_a_nullable_column_unique_per_run(
    store: PostgresEventStore, admin: psycopg.Connection, schema: str
) -> None:
    (nullable,) = admin.execute(
        "SELECT is_nullable FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s AND column_name = 'key'",
        (schema, EVENTS_TABLE),
    ).fetchall()
    assert nullable == ("YES",)
    unique = admin.execute(
        "SELECT tc.constraint_name, array_agg(k.column_name::text ORDER BY k.ordinal_position) "
        "FROM information_schema.table_constraints tc "
        "JOIN information_schema.key_column_usage k USING (constraint_schema, constraint_name) "
        "WHERE tc.table_schema = %s AND tc.constraint_type = 'UNIQUE' "
        "GROUP BY tc.constraint_name",
        (schema,),
    ).fetchall()
    assert unique == [(KEY_CONSTRAINT, ["run_id", "key"])]
    assert f'CONSTRAINT "{KEY_CONSTRAINT}" UNIQUE (run_id, key)' in schema_sql(schema)


def test_create_schema_upgrades_a_schema_made_by_segmentlog_0_1(
    dsn: str, schema: str, admin: psycopg.Connection
) -> None:
    names = _names(schema)
    admin.execute(sql.SQL(SCHEMA_0_1.read_text()).format(**names))  # type: ignore[arg-type]
    old_append = sql.SQL(
        "SELECT * FROM {append}(%s, %s::uuid[], %s::uuid[], %s::timestamptz[], %s::bytea[], "
        "%s::integer)"
    ).format(**names)
    run_id = uuid.uuid4()
    encode = msgspec.msgpack.Encoder(uuid_format="bytes").encode  # as 0.1 encoded events

    def append_as_0_1(delta: str) -> None:
        event = text_delta(run_id, delta)
        admin.execute(old_append, (run_id, [uuid.uuid4()], [None], [STAMP], [encode(event)], None))

    append_as_0_1("written by 0.1")
    with PostgresEventStore(dsn, schema=schema) as store:
        store.create_schema()
        store.create_schema()
        (old,) = store.list_after(run_id)
        assert (old.seq, old.key, old.event.delta) == (1, None, "written by 0.1")
        event = text_delta(run_id, "keyed")
        keyed = store.append(event, key="k")
        assert keyed.seq == 2
        assert store.append(event, key="k") == keyed
        append_as_0_1("0.1 clients keep appending during the upgrade")
        with pytest.raises(IdempotencyConflictError):
            store.append(text_delta(run_id, "other"), key="k")
        assert [(e.seq, e.key) for e in store.list_after(run_id)] == [
            (1, None),
            (2, "k"),
            (3, None),
        ]
    constraint = admin.execute(
        "SELECT count(*) FROM pg_constraint WHERE conname = %s AND connamespace = %s::regnamespace",
        (KEY_CONSTRAINT, sql.Identifier(schema).as_string(admin)),
    ).fetchone()
    assert constraint == (1,)


def test_create_schema_of_an_up_to_date_schema_does_not_wait_for_appenders(
    dsn: str, schema: str, store: PostgresEventStore
) -> None:
    run_id = uuid.uuid4()
    with psycopg.connect(dsn) as appender:  # holds what an append holds, until rollback
        appender.execute(
            sql.SQL("LOCK TABLE {} IN ROW EXCLUSIVE MODE").format(
                sql.Identifier(schema, EVENTS_TABLE)
            )
        )
        with PostgresEventStore(f"{dsn} options='-c lock_timeout=3000'", schema=schema) as other:
            other.create_schema()
            assert other.append(text_delta(run_id), key="k").seq == 1
        appender.rollback()


# --- one round trip -------------------------------------------------------------------------


@pytest.fixture
def traced(dsn: str, schema: str) -> Iterator[tuple[PostgresEventStore, Any]]:
    """A store over a one-connection autocommit pool, and ``exchange(call)``: the call's
    result (or the exception it raised) and the protocol messages sent and received."""
    with ConnectionPool(dsn, min_size=1, max_size=1, kwargs={"autocommit": True}) as pool:
        store: PostgresEventStore = PostgresEventStore(pool, schema=schema)
        store.create_schema()

        def exchange(call: Any) -> tuple[Any, list[str]]:
            with tempfile.TemporaryFile("w+") as trace:
                with pool.connection() as conn:
                    conn.pgconn.trace(trace.fileno())
                    conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
                try:
                    result = call()
                except Exception as exc:
                    result = exc
                finally:
                    with pool.connection() as conn:
                        conn.pgconn.untrace()
                trace.seek(0)
                lines = [line.split("\t") for line in trace.read().splitlines()]
            return result, [f"{line[0]} {line[2]}" for line in lines if len(line) > 2]

        yield store, exchange


def test_every_kind_of_keyed_or_conditional_append_is_one_round_trip(
    traced: tuple[PostgresEventStore, Any],
) -> None:
    store, exchange = traced
    run_id = uuid.uuid4()
    event = text_delta(run_id)
    calls = [
        ("appended", lambda: store.append(event, key="k", expected_seq=0)),
        ("held", lambda: store.append(event, key="k", expected_seq=0)),
        ("batch", lambda: store.append_batch([text_delta(run_id)] * 3, keys=["a", None, "b"])),
        (SeqConflictError, lambda: store.append(text_delta(run_id), expected_seq=1)),
        (IdempotencyConflictError, lambda: store.append(text_delta(run_id, "x"), key="k")),
        (IdempotencyConflictError, lambda: store.append_batch([event] * 2, keys=["k", "n"])),
    ]
    for expected, call in calls:
        result, sent = exchange(call)
        if isinstance(expected, type):
            assert isinstance(result, expected), (expected, result)
        else:
            assert not isinstance(result, Exception), (expected, result)
        assert sent.count("F Sync") == 1, (expected, sent)
        assert sent.count("B ReadyForQuery") == 1, (expected, sent)
    assert [e.seq for e in store.list_after(run_id)] == [1, 2, 3, 4]


def test_a_keyed_append_reads_only_its_keys_however_long_the_run(
    traced: tuple[PostgresEventStore, Any], schema: str
) -> None:
    """The function's plans are cached per session, some while the table is still small; a
    key lookup planned then must not turn into a scan of the run's events later."""
    store, _ = traced
    run_id = uuid.uuid4()
    early = [text_delta(run_id, str(i)) for i in range(12)]
    for i, event in enumerate(early):  # the session's cached plans are made on a small table
        store.append(event, key=f"early-{i}")
    store.append_batch([text_delta(run_id) for _ in range(3000)])
    # At most one row per key (the held row, or a dead index entry a rolled-back probe left
    # at the next seq); the scan this guards against reads all 3000.
    for event, keys in [
        (text_delta(run_id), ["new"]),
        (early[3], ["early-3"]),
        (text_delta(run_id), ["a", "b", "c"]),
    ]:
        assert _index_tuples_read(store, schema, event, keys) <= len(keys), keys


def _index_tuples_read(store: PostgresEventStore, schema: str, event: Any, keys: list[str]) -> int:
    """Rows of the events table fetched through an index by one append of ``event`` (one per
    key) on the store's only connection, in a transaction rolled back afterwards."""
    plans = store._plans  # the very statement the store sends, on the connection it uses
    _, (batch,) = plans.rows.prepare([event] * len(keys), keys, None)
    pool = store._driver.source._pool  # type: ignore[union-attr]
    with pool.connection() as conn, conn.transaction(force_rollback=True):
        conn.execute(plans.sql.append, batch.arguments(None))
        row = conn.execute(
            "SELECT idx_tup_fetch FROM pg_stat_xact_user_tables "
            "WHERE schemaname = %s AND relname = %s",
            (schema, EVENTS_TABLE),
        ).fetchone()
    assert row is not None
    return int(row[0])


# --- many connections and processes ---------------------------------------------------------


def test_processes_retrying_the_same_keys_store_each_key_once(
    store: PostgresEventStore, dsn: str, schema: str
) -> None:
    processes, keys_n = 4, 60
    runs = [uuid.uuid4(), uuid.uuid4()]
    events = [
        TextDelta(run_id=runs[i % 2], delta=f"event {i}", timestamp=STAMP) for i in range(keys_n)
    ]
    keys = [f"key-{i}" for i in range(keys_n)]
    orders = [random.Random(w).sample(range(keys_n), keys_n) for w in range(processes)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(processes)
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        futures = [
            pool.submit(retry_keyed, dsn, schema, events, keys, order, barrier) for order in orders
        ]
        answers = [f.result(timeout=120) for f in futures]
    stored = {e.key: e for run_id in runs for e in store.list_after(run_id)}
    assert sorted(stored) == sorted(keys)
    for run_id in runs:
        seqs = [e.seq for e in store.list_after(run_id)]
        assert seqs == list(range(1, keys_n // 2 + 1))
    for per_process in answers:
        for key, seq, event_id in per_process:
            assert (stored[key].seq, stored[key].event_id) == (seq, event_id)


# --- asyncio --------------------------------------------------------------------------------


def test_the_async_store_takes_keys_and_expected_seq(dsn: str, schema: str) -> None:
    run_id = uuid.uuid4()

    async def scenario() -> None:
        async with AsyncPostgresEventStore(dsn, schema=schema) as store:
            await store.create_schema()
            event = text_delta(run_id, "async")
            first = await store.append(event, key="a", expected_seq=0)
            assert await store.append(event, key="a", expected_seq=0) == first
            batch = [text_delta(run_id, "b"), text_delta(run_id, "c")]
            written = await store.append_batch(batch, keys=["b", "c"], expected_seq=1)
            assert [e.seq for e in written] == [2, 3]
            assert await store.append_batch(batch[::-1], keys=["c", "b"]) == written[::-1]
            with pytest.raises(SeqConflictError) as seq_conflict:
                await store.append(text_delta(run_id), expected_seq=1)
            assert seq_conflict.value.actual == 3
            with pytest.raises(IdempotencyConflictError):
                await store.append(text_delta(run_id, "other"), key="a")
            with pytest.raises(InvalidKeyError):
                await store.append(text_delta(run_id), key="")
            results = await asyncio.gather(*(store.append(event, key="a") for _ in range(5)))
            assert set(results) == {first}
            assert [e.key for e in await store.list_after(run_id)] == ["a", "b", "c"]

    asyncio.run(scenario())


# --- a COMMIT whose connection dies ---------------------------------------------------------


def test_a_keyed_append_whose_commit_lost_its_connection_is_settled_and_retried(
    store: PostgresEventStore,
    dsn: str,
    schema: str,
    admin: psycopg.Connection,
    commits_wait_for_a_missing_standby: str,
) -> None:
    victim_dsn, app = app_dsn(dsn)
    run_id = uuid.uuid4()
    event = text_delta(run_id, "in doubt")
    with PostgresEventStore(
        f"{victim_dsn} {commits_wait_for_a_missing_standby}", schema=schema
    ) as victim:
        thread, outcome = in_thread(lambda: victim.append(event, key="k", expected_seq=0))
        pid = wait_for_backend(admin, app, "SyncRep")
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        thread.join(30)
    assert "error" not in outcome, outcome
    settled = outcome["result"]
    assert (settled.seq, settled.key) == (1, "k")
    assert store.append(event, key="k", expected_seq=0) == settled
    assert store.list_after(run_id) == [settled]
