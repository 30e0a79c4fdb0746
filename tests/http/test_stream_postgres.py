"""The SSE end-to-end scenario against PostgreSQL: the server follows a
``PostgresEventStore`` (by polling ``list_after``) while a writer process appends to it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from segmentlog import RunCompleted, RunStarted
from segmentlog.http import create_app
from segmentlog.postgres import AsyncPostgresEventStore, PostgresEventStore
from tests.http.conftest import ThreadServer, Writer, collect_events, seqs_of
from tests.http.test_stream_e2e import follow_across_a_reconnect
from tests.postgres.pgserver import PostgresServer, postgres_server

__all__ = ["postgres_server"]

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_schema(postgres_server: PostgresServer) -> Iterator[str]:
    """A schema of this test's own, with the segmentlog tables; dropped afterwards."""
    schema = f"http_{uuid.uuid4().hex[:16]}"
    with PostgresEventStore(postgres_server.dsn, schema=schema) as store:
        store.create_schema()
    yield schema
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_stream_follows_a_postgres_writer_across_a_reconnect(
    pg_schema: str, postgres_server: PostgresServer, writers: Callable[..., Writer]
) -> None:
    run_id = uuid.uuid4()
    writer = writers(run_id, "--postgres", postgres_server.dsn, "--schema", pg_schema)
    assert writer.do("start", "deltas 20") == 21
    with (
        PostgresEventStore(postgres_server.dsn, schema=pg_schema) as store,
        ThreadServer(create_app(store, heartbeat=1.0, poll_interval=0.05)) as server,
    ):
        follow_across_a_reconnect(server.url, writer, run_id)
        runs = httpx.get(f"{server.url}/runs", timeout=10).json()
        assert [(r["run_id"], r["events"], r["terminal"]) for r in runs["runs"]] == [
            (str(run_id), 102, True)
        ]
        assert runs["runs"][0]["bytes"] is None and runs["next_cursor"] is None


def test_an_unreachable_postgres_is_a_503(tmp_path: Path) -> None:
    # A Unix socket directory with no server in it: nothing leaves this machine.
    store: PostgresEventStore = PostgresEventStore(
        f"host={tmp_path} dbname=none", connect_timeout=1
    )
    with store, ThreadServer(create_app(store)) as server:
        response = httpx.get(f"{server.url}/runs/{uuid.uuid4()}", timeout=10)
    assert response.status_code == 503
    assert response.json()["error"] == "store_unavailable"
    assert response.headers["retry-after"] == "2"


def test_an_async_postgres_store_is_served_too(
    pg_schema: str, postgres_server: PostgresServer
) -> None:
    run_id = uuid.uuid4()
    with PostgresEventStore(postgres_server.dsn, schema=pg_schema) as writer:
        writer.append(RunStarted(run_id=run_id, session_id=uuid.uuid4(), provider="p", model="m"))
        writer.append(RunCompleted(run_id=run_id, finish_reason="stop", iterations=1))
    store: AsyncPostgresEventStore = AsyncPostgresEventStore(
        postgres_server.dsn, schema=pg_schema, max_idle_connections=0
    )
    app = create_app(store)
    assert app.state.reader.is_async
    with ThreadServer(app) as server, httpx.Client(timeout=10) as client:
        events = collect_events(client, f"{server.url}/runs/{run_id}/stream")
        info = client.get(f"{server.url}/runs/{run_id}").json()
        listed = client.get(f"{server.url}/runs").json()["runs"]
    assert seqs_of(events) == [1, 2] and events[-1].event == "RunCompleted"
    assert info["terminal"] is True and info["last_seq"] == 2
    assert [r["run_id"] for r in listed] == [str(run_id)]
