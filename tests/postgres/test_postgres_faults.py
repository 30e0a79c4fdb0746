"""PostgresEventStore under concurrency and failure: many processes, killed connections,
a COMMIT whose connection dies, and server restarts.

The killed-COMMIT tests make COMMIT wait (``commits_wait_for_a_missing_standby``, see
``faults.py``): it is durable locally but blocks until the backend is terminated, which is
exactly "the connection died while COMMIT was in flight".
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from segmentlog import AppendError, Envelope, TextDelta
from segmentlog.postgres import (
    AppendOutcomeUnknownError,
    PostgresEventStore,
    PostgresUnavailableError,
)
from tests.conformance.events_factory import text_delta
from tests.postgres.appender import append_many
from tests.postgres.faults import app_dsn, count_backends, in_thread, wait_for_backend
from tests.postgres.pgserver import PostgresServer

pytestmark = pytest.mark.postgres

PROCESSES = 8
APPENDS_PER_PROCESS = 2000


# --- many processes -------------------------------------------------------------------------


def test_eight_processes_appending_to_one_run_get_gapless_seqs(
    store: PostgresEventStore, dsn: str, schema: str
) -> None:
    run_id = uuid.uuid4()
    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(PROCESSES)
    with ProcessPoolExecutor(PROCESSES, mp_context=context) as pool:
        futures = [
            pool.submit(append_many, dsn, schema, run_id, worker, APPENDS_PER_PROCESS, barrier)
            for worker in range(PROCESSES)
        ]
        acked = [f.result(timeout=300) for f in futures]

    total = PROCESSES * APPENDS_PER_PROCESS
    for per_process in acked:
        seqs = [seq for seq, _ in per_process]
        assert seqs == sorted(seqs)  # each process sees its own appends in order
    by_seq = {seq: event_id for per_process in acked for seq, event_id in per_process}
    assert sorted(by_seq) == list(range(1, total + 1))

    stored: list[Envelope[Any]] = []
    while page := store.list_after(run_id, stored[-1].seq if stored else None, 1000):
        stored.extend(page)
    assert [e.seq for e in stored] == list(range(1, total + 1))
    assert {e.seq: e.event_id for e in stored} == by_seq
    assert store.last_seq(run_id) == total
    deltas = [e.event.delta for e in stored]
    for worker in range(PROCESSES):
        mine = [d for d in deltas if d.startswith(f"{worker}:")]
        assert mine == [f"{worker}:{i}" for i in range(APPENDS_PER_PROCESS)]


# --- killed connections ---------------------------------------------------------------------


def test_connection_killed_mid_transaction_stores_nothing_and_leaves_no_gap(
    store: PostgresEventStore, dsn: str, schema: str, admin: psycopg.Connection
) -> None:
    victim_dsn, app = app_dsn(dsn)
    run_id = uuid.uuid4()
    with PostgresEventStore(victim_dsn, schema=schema) as victim:
        before = [victim.append(text_delta(run_id, str(i))) for i in range(3)]
        # Hold the run's row lock, so the next append stops inside its transaction.
        with psycopg.connect(dsn) as holder:
            holder.execute(
                f'SELECT 1 FROM "{schema}".segmentlog_runs WHERE run_id = %s FOR UPDATE',
                (run_id,),
            )
            thread, outcome = in_thread(lambda: victim.append(text_delta(run_id, "killed")))
            pid = wait_for_backend(admin, app, "transactionid")
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            holder.rollback()  # the store's check of the outcome waits for this lock
            thread.join(30)
        error = outcome.get("error")
        assert isinstance(error, PostgresUnavailableError), outcome
        assert isinstance(error, AppendError)
        assert "nothing was stored" in str(error)

        after = victim.append(text_delta(run_id, "after"))
    assert after.seq == 4
    assert store.list_after(run_id) == [*before, after]


def test_killing_connections_during_concurrent_appends_loses_nothing_acknowledged(
    store: PostgresEventStore, dsn: str, schema: str, admin: psycopg.Connection
) -> None:
    victim_dsn, app = app_dsn(dsn)
    run_id = uuid.uuid4()
    acked: list[Envelope[Any]] = []
    refused: list[AppendError] = []
    unknown: list[AppendOutcomeUnknownError] = []
    done = threading.Event()
    lock = threading.Lock()

    with PostgresEventStore(victim_dsn, schema=schema) as victim:

        def append(worker: int) -> None:
            for i in range(150):
                try:
                    envelope = victim.append(text_delta(run_id, f"{worker}:{i}"))
                except AppendOutcomeUnknownError as exc:
                    with lock:
                        unknown.append(exc)
                    continue
                except AppendError as exc:
                    with lock:
                        refused.append(exc)
                    continue
                with lock:
                    acked.append(envelope)

        def kill() -> None:
            with psycopg.connect(dsn, autocommit=True) as killer:
                while not done.is_set():
                    killer.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = %s",
                        (app,),
                    )
                    time.sleep(0.003)

        killer = threading.Thread(target=kill)
        killer.start()
        workers = [threading.Thread(target=append, args=(w,)) for w in range(4)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        done.set()
        killer.join()

    assert refused, "the killer never hit an append; the test proved nothing"
    assert all(isinstance(e, PostgresUnavailableError) for e in refused)
    stored = store.list_after(run_id, None, 10_000)
    assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
    stored_ids = {e.event_id for e in stored}
    acked_ids = {e.event_id for e in acked}
    assert acked_ids <= stored_ids
    maybe = {event_id for exc in unknown for event_id in exc.event_ids}
    assert stored_ids <= acked_ids | maybe
    assert sorted(acked, key=lambda e: e.seq) == [e for e in stored if e.event_id in acked_ids]


def test_connection_killed_during_commit_that_committed_returns_the_envelopes(
    store: PostgresEventStore,
    dsn: str,
    schema: str,
    admin: psycopg.Connection,
    commits_wait_for_a_missing_standby: str,
) -> None:
    victim_dsn, app = app_dsn(dsn)
    run_id = uuid.uuid4()
    with PostgresEventStore(
        f"{victim_dsn} {commits_wait_for_a_missing_standby}", schema=schema
    ) as victim:
        thread, outcome = in_thread(
            lambda: victim.append_batch([text_delta(run_id, "a"), text_delta(run_id, "b")])
        )
        pid = wait_for_backend(admin, app, "SyncRep")
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        thread.join(30)
    assert "error" not in outcome, outcome
    written = outcome["result"]
    assert [e.seq for e in written] == [1, 2]
    assert store.list_after(run_id) == written
    assert store.append(text_delta(run_id)).seq == 3


def test_server_stopping_during_commit_is_an_outcome_unknown_error(
    postgres_server: PostgresServer,
    store: PostgresEventStore,
    dsn: str,
    schema: str,
    admin: psycopg.Connection,
    commits_wait_for_a_missing_standby: str,
) -> None:
    victim_dsn, app = app_dsn(dsn)
    run_id = uuid.uuid4()
    store.append(text_delta(run_id, "first"))
    with PostgresEventStore(
        f"{victim_dsn} {commits_wait_for_a_missing_standby}", schema=schema
    ) as victim:
        thread, outcome = in_thread(lambda: victim.append(text_delta(run_id, "in doubt")))
        wait_for_backend(admin, app, "SyncRep")
        postgres_server.stop()
        try:
            thread.join(30)
        finally:
            postgres_server.start()
    error = outcome.get("error")
    assert isinstance(error, AppendOutcomeUnknownError), outcome
    assert not isinstance(error, AppendError)
    assert "either all stored or none" in str(error)
    assert error.run_ids == [run_id]
    # The commit was durable locally before the server went down: list_after settles it.
    with PostgresEventStore(dsn, schema=schema) as fresh:
        (found,) = fresh.list_after(run_id, 1)
    assert found.seq == 2
    assert error.event_ids == [found.event_id]


# --- server restarts ------------------------------------------------------------------------


def test_server_restart_between_appends_is_a_clear_error_then_success(
    postgres_server: PostgresServer, store: PostgresEventStore
) -> None:
    if not postgres_server.controllable:
        pytest.skip("needs the throwaway server (SEGMENTLOG_PG_DSN points at a shared one)")
    run_id = uuid.uuid4()
    first = store.append(text_delta(run_id, "before"))
    postgres_server.stop()
    try:
        for _ in range(2):
            with pytest.raises(PostgresUnavailableError) as down:
                store.append(text_delta(run_id, "down"))
            assert "cannot connect to PostgreSQL" in str(down.value)
            assert "nothing was stored" in str(down.value)
        with pytest.raises(PostgresUnavailableError):
            store.list_after(run_id)
    finally:
        postgres_server.start()
    second = store.append(text_delta(run_id, "after"))
    assert second.seq == 2
    assert store.list_after(run_id) == [first, second]


def test_connections_left_idle_across_a_restart_are_replaced_without_an_error(
    postgres_server: PostgresServer, dsn: str, schema: str
) -> None:
    if not postgres_server.controllable:
        pytest.skip("needs the throwaway server (SEGMENTLOG_PG_DSN points at a shared one)")
    run_id = uuid.uuid4()
    with PostgresEventStore(dsn, schema=schema) as store:
        store.create_schema()
        first = store.append(text_delta(run_id))
        postgres_server.stop()
        postgres_server.start()
        assert store.list_after(run_id) == [first]
        postgres_server.stop()
        postgres_server.start()
        assert store.append(text_delta(run_id)).seq == 2


def test_connection_killed_while_idle_is_replaced_without_an_error(
    store: PostgresEventStore, dsn: str, schema: str, admin: psycopg.Connection
) -> None:
    victim_dsn, app = app_dsn(dsn)
    run_id = uuid.uuid4()
    with PostgresEventStore(victim_dsn, schema=schema) as victim:
        victim.append(text_delta(run_id))
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (app,),
        )
        deadline = time.monotonic() + 10
        while count_backends(admin, app) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert victim.append(text_delta(run_id)).seq == 2


def test_pool_backed_store_recovers_after_a_server_restart(
    postgres_server: PostgresServer, dsn: str, schema: str
) -> None:
    if not postgres_server.controllable:
        pytest.skip("needs the throwaway server (SEGMENTLOG_PG_DSN points at a shared one)")
    run_id = uuid.uuid4()
    with ConnectionPool(dsn, min_size=2, max_size=4, open=True) as pool:
        pool.wait()
        store: PostgresEventStore = PostgresEventStore(pool, schema=schema, connect_timeout=2)
        store.create_schema()
        first = store.append(text_delta(run_id))
        postgres_server.stop()
        try:
            with pytest.raises(PostgresUnavailableError):
                store.append(text_delta(run_id))
        finally:
            postgres_server.start()
        deadline = time.monotonic() + 30
        while True:  # the pool reconnects in the background, with back-off
            try:
                second = store.append(TextDelta(run_id=run_id, delta="after"))
                break
            except PostgresUnavailableError:
                if time.monotonic() > deadline:
                    raise
        assert store.list_after(run_id) == [first, second]
        assert second.seq == 2
