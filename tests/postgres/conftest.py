"""Fixtures for the PostgreSQL tests: the session's server, and a fresh schema per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from segmentlog.postgres import PostgresEventStore
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
