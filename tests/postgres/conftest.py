"""Fixtures for the PostgreSQL tests: the session's server, and a fresh schema per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from segmentlog.postgres import PostgresEventStore
from tests.postgres.faults import GHOST_STANDBY, SYNC_COMMIT_OPTION, set_standby
from tests.postgres.pgserver import PostgresServer, postgres_server

__all__ = ["postgres_server"]


@pytest.fixture
def dsn(postgres_server: PostgresServer) -> str:
    return postgres_server.dsn


@pytest.fixture
def schema(dsn: str) -> Iterator[str]:
    """A schema name no other test uses; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def store(dsn: str, schema: str) -> Iterator[PostgresEventStore]:
    made: PostgresEventStore = PostgresEventStore(dsn, schema=schema)
    made.create_schema()
    yield made
    made.close()


@pytest.fixture
def admin(dsn: str) -> Iterator[psycopg.Connection]:
    """A separate autocommit connection for inspecting and interfering with the server."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def commits_wait_for_a_missing_standby(postgres_server: PostgresServer) -> Iterator[str]:
    """Make COMMIT block for sessions with synchronous_commit=on; yields that libpq option
    (see ``tests/postgres/faults.py``)."""
    if not postgres_server.controllable:
        pytest.skip("needs the throwaway server (SEGMENTLOG_PG_DSN points at a shared one)")
    set_standby(postgres_server.dsn, GHOST_STANDBY)
    try:
        yield SYNC_COMMIT_OPTION
    finally:
        set_standby(postgres_server.dsn, None)
