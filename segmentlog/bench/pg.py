"""PostgreSQL contenders for ``segmentlog bench --postgres DSN``: the cost of moving out of
process, measured on the same envelopes as every other contender.

Strategy and invariants
- Each measurement works in a schema of its own (created, then dropped), so runs never see
  each other's rows and the server is left as it was.
- Appends go through ``PostgresEventStore`` exactly as an application would: one transaction
  per ``append`` (durable: synchronous_commit is on by default), one per ``append_batch``.
- psycopg is imported only here, only when ``--postgres`` is given.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .timing import Sample

__all__ = ["pg_append", "pg_append_batches", "pg_drop", "pg_load", "pg_replay"]


@contextmanager
def _store(dsn: str, schema: str | None = None) -> Iterator[Any]:
    """A store in ``schema``, or in a scratch schema dropped on exit."""
    from ..postgres import PostgresEventStore

    name = schema or f"bench_{uuid.uuid4().hex[:12]}"
    store: Any = PostgresEventStore(dsn, schema=name)
    try:
        store.create_schema()
        yield store
    finally:
        store.close()
        if schema is None:
            pg_drop(dsn, name)


def pg_append(dsn: str, events: list[Any]) -> Sample:
    """One ``append`` (one transaction) per event. Value: events per second."""
    with _store(dsn) as store:
        start = time.perf_counter()
        for event in events:
            store.append(event)
        elapsed = time.perf_counter() - start
    return Sample(len(events) / elapsed, {"seconds": elapsed})


def pg_append_batches(dsn: str, batches: list[list[Any]]) -> Sample:
    """One ``append_batch`` (one transaction) per batch. Value: events per second."""
    with _store(dsn) as store:
        start = time.perf_counter()
        for batch in batches:
            store.append_batch(batch)
        elapsed = time.perf_counter() - start
    return Sample(sum(len(b) for b in batches) / elapsed, {"seconds": elapsed})


def pg_load(dsn: str, schema: str, batches: list[list[Any]]) -> None:
    """Fill ``schema`` (emptied first) with the replay fixture (not timed)."""
    pg_drop(dsn, schema)
    with _store(dsn, schema) as store:
        for batch in batches:
            store.append_batch(batch)


def pg_drop(dsn: str, schema: str) -> None:
    """Drop a fixture schema."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def pg_replay(dsn: str, schema: str, runs: list[uuid.UUID], limit: int) -> Sample:
    """Page through every run with ``list_after`` (envelopes decoded). Value: events per s."""
    with _store(dsn, schema) as store:
        count = 0
        start = time.perf_counter()
        for run_id in runs:
            after = 0
            while page := store.list_after(run_id, after, limit):
                count += len(page)
                after = page[-1].seq
        elapsed = time.perf_counter() - start
    return Sample(count / elapsed, {"seconds": elapsed, "events": count})
