"""The PostgreSQL backend for the conformance suite.

Each backend gets a schema of its own (``conformance_<random>``) on the session's throwaway
server (``tests.postgres.pgserver.shared_server``), so tests never see each other's runs;
``reopen`` closes the store and opens a new one over the same schema, and ``close`` drops it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from segmentlog.postgres import PostgresEventStore
from tests.postgres.pgserver import shared_server


class PostgresBackend:
    name = "postgres"
    reopens = True

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.schema = f"conformance_{uuid.uuid4().hex[:16]}"
        self._store: PostgresEventStore | None = None

    def open(self) -> PostgresEventStore:
        if self._store is None:
            self._store = PostgresEventStore(self.dsn, schema=self.schema)
            self._store.create_schema()
        return self._store

    def reopen(self) -> PostgresEventStore:
        if self._store is not None:
            self._store.close()
            self._store = None
        return self.open()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
            )


@contextmanager
def make_backend(tmp_path: Path) -> Iterator[PostgresBackend]:
    backend = PostgresBackend(shared_server().dsn)
    try:
        yield backend
    finally:
        backend.close()
