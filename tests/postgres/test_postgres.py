"""PostgresEventStore beyond the shared contract: schema, storage layout, errors, connections.

The conformance suite (tests/conformance, backend "postgres") covers the EventStore contract
itself; these tests cover what only the PostgreSQL backend has.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid

import msgspec
import psycopg
import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool

from segmentlog import (
    AgentEvent,
    AppendError,
    LogClosedError,
    NotFoundError,
    RecordTooLargeError,
    RunCompleted,
    RunStarted,
    SegmentLogError,
    TextDelta,
)
from segmentlog.postgres import (
    EVENTS_TABLE,
    RUNS_TABLE,
    PostgresEventStore,
    PostgresStoreError,
    PostgresUnavailableError,
    SchemaMissingError,
    schema_sql,
)
from tests.conformance.events_factory import all_variants, text_delta

pytestmark = pytest.mark.postgres


def _table(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name)


def _backends(admin: psycopg.Connection, application_name: str, settle_at: int = 0) -> int:
    """How many server backends ``application_name`` has, once it is down to ``settle_at``
    (a backend lingers briefly after its client closes the connection) or 5 s have passed."""
    deadline = time.monotonic() + 5
    while True:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchone()
        assert row is not None
        if row[0] <= settle_at or time.monotonic() > deadline:
            return int(row[0])
        time.sleep(0.02)


# --- schema ---------------------------------------------------------------------------------


def test_nothing_is_created_until_create_schema(dsn: str, schema: str) -> None:
    with PostgresEventStore(dsn, schema=schema) as store:
        with pytest.raises(SchemaMissingError) as appending:
            store.append(text_delta(uuid.uuid4()))
        assert isinstance(appending.value, AppendError)
        assert "create_schema()" in str(appending.value)
        with pytest.raises(SchemaMissingError):
            store.list_after(uuid.uuid4())
        store.create_schema()
        assert store.append(text_delta(uuid.uuid4())).seq == 1


def test_create_schema_is_idempotent_and_keeps_data(store: PostgresEventStore) -> None:
    run_id = uuid.uuid4()
    written = store.append(text_delta(run_id))
    store.create_schema()
    store.create_schema()
    assert store.list_after(run_id) == [written]


def test_concurrent_create_schema_calls_all_succeed(dsn: str, schema: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def create() -> None:
        try:
            with PostgresEventStore(dsn, schema=schema) as store:
                barrier.wait()
                store.create_schema()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_schema_sql_is_the_ddl_create_schema_runs(admin: psycopg.Connection, schema: str) -> None:
    ddl = schema_sql(schema)
    assert f'"{schema}"."{EVENTS_TABLE}"' in ddl
    assert "PRIMARY KEY (run_id, seq)" in ddl
    admin.execute(ddl.encode())
    admin.execute(ddl.encode())  # a migration may run it again
    columns = admin.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        (schema, EVENTS_TABLE),
    ).fetchall()
    assert [c for (c,) in columns] == [
        "run_id",
        "seq",
        "event_id",
        "session_id",
        "emitted_at",
        "event",
        "key",
    ]


def test_both_tables_are_keyed_by_run_id_first(
    store: PostgresEventStore, admin: psycopg.Connection, schema: str
) -> None:
    keys = dict(
        admin.execute(
            "SELECT tc.table_name, array_agg(k.column_name::text ORDER BY k.ordinal_position) "
            "FROM information_schema.table_constraints tc "
            "JOIN information_schema.key_column_usage k USING (constraint_schema, constraint_name) "
            "WHERE tc.table_schema = %s AND tc.constraint_type = 'PRIMARY KEY' "
            "GROUP BY tc.table_name",
            (schema,),
        ).fetchall()
    )
    assert keys == {EVENTS_TABLE: ["run_id", "seq"], RUNS_TABLE: ["run_id"]}


# --- storage layout -------------------------------------------------------------------------


def test_event_column_holds_the_msgpack_event_the_engine_encodes(
    store: PostgresEventStore, admin: psycopg.Connection, schema: str
) -> None:
    run_id, session_id = uuid.uuid4(), uuid.uuid4()
    written = [store.append(e) for e in all_variants(run_id, session_id)]
    rows = admin.execute(
        sql.SQL("SELECT event FROM {} WHERE run_id = %s ORDER BY seq").format(
            _table(schema, EVENTS_TABLE)
        ),
        (run_id,),
    ).fetchall()
    encode = msgspec.msgpack.Encoder(uuid_format="bytes").encode
    for envelope, (stored,) in zip(written, rows, strict=True):
        assert stored == encode(envelope.event)
        assert msgspec.msgpack.decode(stored, type=AgentEvent) == envelope.event


def test_columns_repeat_the_envelope_fields(
    store: PostgresEventStore, admin: psycopg.Connection, schema: str
) -> None:
    run_id, session_id = uuid.uuid4(), uuid.uuid4()
    written = store.append_batch(
        [
            text_delta(run_id),
            RunStarted(run_id=run_id, session_id=session_id, provider="p", model="m"),
            text_delta(run_id),
        ]
    )
    rows = admin.execute(
        sql.SQL(
            "SELECT run_id, seq, event_id, session_id, emitted_at FROM {} "
            "WHERE run_id = %s ORDER BY seq"
        ).format(_table(schema, EVENTS_TABLE)),
        (run_id,),
    ).fetchall()
    assert rows == [(e.run_id, e.seq, e.event_id, e.session_id, e.emitted_at) for e in written]


def test_run_row_holds_last_seq_session_and_first_terminal_seq(
    store: PostgresEventStore, admin: psycopg.Connection, schema: str
) -> None:
    run_id, session_id = uuid.uuid4(), uuid.uuid4()
    store.append(RunStarted(run_id=run_id, session_id=session_id, provider="p", model="m"))
    store.append_batch(
        [text_delta(run_id), RunCompleted(run_id=run_id, finish_reason="stop", iterations=1)]
    )
    store.append(RunCompleted(run_id=run_id, finish_reason="stop", iterations=2))
    row = admin.execute(
        sql.SQL("SELECT last_seq, session_id, terminal_seq FROM {} WHERE run_id = %s").format(
            _table(schema, RUNS_TABLE)
        ),
        (run_id,),
    ).fetchone()
    assert row == (4, session_id, 3)
    assert store.last_seq(run_id) == 4
    assert store.last_seq(uuid.uuid4()) is None


def test_runs_lists_every_run_with_events(store: PostgresEventStore) -> None:
    runs = [uuid.uuid4() for _ in range(4)]
    store.append_batch([text_delta(r) for r in runs])
    assert store.runs() == sorted(runs)


def test_list_after_is_an_ordered_primary_key_range_scan(
    store: PostgresEventStore, admin: psycopg.Connection, schema: str
) -> None:
    run_id = uuid.uuid4()
    store.append_batch([text_delta(run_id, str(i)) for i in range(50)])
    with admin.transaction():
        admin.execute("SET LOCAL enable_seqscan = off")
        admin.execute("SET LOCAL enable_bitmapscan = off")
        plan = "\n".join(
            line
            for (line,) in admin.execute(
                sql.SQL(
                    "EXPLAIN SELECT event FROM {} WHERE run_id = %s AND seq > %s "
                    "ORDER BY seq LIMIT %s"
                ).format(_table(schema, EVENTS_TABLE)),
                (run_id, 10, 5),
            ).fetchall()
        )
    assert f"Index Scan using {EVENTS_TABLE}_pkey" in plan
    assert "Sort" not in plan


# --- refusals -------------------------------------------------------------------------------


def test_record_too_large_is_refused_and_consumes_no_seq(dsn: str, schema: str) -> None:
    with PostgresEventStore(dsn, schema=schema, max_record_bytes=300) as store:
        store.create_schema()
        run_id = uuid.uuid4()
        store.append(text_delta(run_id))
        with pytest.raises(RecordTooLargeError):
            store.append(TextDelta(run_id=run_id, delta="x" * 400))
        assert [e.seq for e in store.list_after(run_id)] == [1]
        assert store.append(text_delta(run_id)).seq == 2


def test_unknown_run_is_not_found_even_when_other_runs_exist(store: PostgresEventStore) -> None:
    store.append(text_delta(uuid.uuid4()))
    unknown = uuid.uuid4()
    with pytest.raises(NotFoundError) as info:
        store.list_after(unknown, 3, 10)
    assert info.value.run_id == unknown


def test_bad_constructor_arguments_are_refused(dsn: str) -> None:
    with pytest.raises(TypeError):
        PostgresEventStore(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PostgresEventStore("host=/nowhere port=notaport = =")
    with pytest.raises(ValueError):
        PostgresEventStore(dsn, schema="")
    with pytest.raises(ValueError):
        PostgresEventStore(dsn, max_record_bytes=0)


def test_server_error_outside_an_append_is_a_postgres_store_error(dsn: str) -> None:
    with (
        PostgresEventStore(dsn, schema="pg_catalog") as store,
        pytest.raises(PostgresStoreError) as info,
    ):
        store.create_schema()
    assert isinstance(info.value, SegmentLogError)
    assert isinstance(info.value.__cause__, psycopg.Error)


# --- connections ----------------------------------------------------------------------------


def test_unreachable_server_is_a_clear_unavailable_error(tmp_path: object) -> None:
    with PostgresEventStore(f"host={tmp_path} port=1 dbname=nothing", connect_timeout=2) as store:
        with pytest.raises(PostgresUnavailableError) as appending:
            store.append(text_delta(uuid.uuid4()))
        message = str(appending.value)
        assert "cannot connect to PostgreSQL" in message
        assert f"host={tmp_path}" in message
        assert "nothing was stored" in message
        assert isinstance(appending.value, AppendError)
        with pytest.raises(PostgresUnavailableError):
            store.list_after(uuid.uuid4())
        with pytest.raises(PostgresUnavailableError):
            store.create_schema()


def test_closed_store_refuses_every_call(store: PostgresEventStore) -> None:
    run_id = uuid.uuid4()
    store.append(text_delta(run_id))
    store.close()
    store.close()
    with pytest.raises(LogClosedError):
        store.append(text_delta(run_id))
    with pytest.raises(LogClosedError):
        store.list_after(run_id)
    with pytest.raises(LogClosedError):
        next(iter(store.subscribe(run_id)))


def test_store_leaves_no_connection_behind(
    dsn: str, schema: str, admin: psycopg.Connection
) -> None:
    app = f"leak_{uuid.uuid4().hex[:8]}"
    run_id = uuid.uuid4()
    store: PostgresEventStore = PostgresEventStore(
        f"{dsn} application_name={app}", schema=schema, max_idle_connections=2
    )
    store.create_schema()

    def work(i: int) -> None:
        for j in range(20):
            store.append(text_delta(run_id, f"{i}:{j}"))
            store.list_after(run_id, j, 5)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.append(RunCompleted(run_id=run_id, finish_reason="stop", iterations=1))
    subscription = store.subscribe(run_id, 3)
    assert next(subscription).seq == 4
    del subscription  # an abandoned subscription returns its connection
    assert _backends(admin, app, settle_at=2) <= 2
    with pytest.raises(NotFoundError):
        store.list_after(uuid.uuid4())
    store.close()
    assert _backends(admin, app) == 0


def test_store_over_a_pool_borrows_and_leaves_the_pool_open(dsn: str, schema: str) -> None:
    with ConnectionPool(dsn, min_size=1, max_size=3, open=True) as pool:
        store: PostgresEventStore = PostgresEventStore(pool, schema=schema)
        store.create_schema()
        run_id = uuid.uuid4()
        written = store.append_batch([text_delta(run_id, str(i)) for i in range(5)])
        assert store.list_after(run_id, 2) == written[2:]
        with pytest.raises(NotFoundError):
            store.list_after(uuid.uuid4())
        store.close()
        # The pool takes connections back (and may grow toward min_size) on its own worker
        # thread: wait, bounded, until every connection it holds is available again.
        deadline = time.monotonic() + 10
        stats = pool.get_stats()
        while stats["pool_available"] != stats["pool_size"] and time.monotonic() < deadline:
            time.sleep(0.01)
            stats = pool.get_stats()
        assert stats["pool_available"] == stats["pool_size"]
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_pool_connection_in_manual_commit_mode_is_returned_clean(dsn: str, schema: str) -> None:
    with ConnectionPool(dsn, min_size=1, max_size=1, open=True) as pool:
        store: PostgresEventStore = PostgresEventStore(pool, schema=schema)
        store.create_schema()
        run_id = uuid.uuid4()
        store.append(text_delta(run_id))
        store.list_after(run_id)
        with pool.connection() as conn:
            assert conn.autocommit is False
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


# --- packaging ------------------------------------------------------------------------------


def test_import_segmentlog_does_not_import_psycopg() -> None:
    code = "import sys, segmentlog; print(any(m.startswith('psycopg') for m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_without_psycopg_the_import_error_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "try:\n    import segmentlog.postgres\nexcept ImportError as exc:\n    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'segmentlog[postgres]'" in done.stdout
