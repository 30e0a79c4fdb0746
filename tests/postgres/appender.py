"""Worker processes for the multi-process PostgreSQL tests (importable under spawn)."""

from __future__ import annotations

import uuid
from typing import Any

from segmentlog import TextDelta
from segmentlog.postgres import PostgresEventStore


def append_many(
    dsn: str, schema: str, run_id: uuid.UUID, worker: int, n: int, barrier: Any
) -> list[tuple[int, uuid.UUID]]:
    """Append ``n`` events to ``run_id``, one transaction each, after every worker is ready.

    Returns the (seq, event_id) of each acknowledged append.
    """
    with PostgresEventStore(dsn, schema=schema) as store:
        store.last_seq(run_id)  # connect before the start line
        barrier.wait()
        acked = []
        for i in range(n):
            envelope = store.append(TextDelta(run_id=run_id, delta=f"{worker}:{i}"))
            acked.append((envelope.seq, envelope.event_id))
        return acked


def retry_keyed(
    dsn: str, schema: str, events: list[Any], keys: list[str], order: list[int], barrier: Any
) -> list[tuple[str, int, uuid.UUID]]:
    """Append every ``events[i]`` with ``keys[i]``, one by one in ``order``, after every
    worker is ready: each worker retries the same keyed events. Returns (key, seq, event_id)
    of each append."""
    with PostgresEventStore(dsn, schema=schema) as store:
        store.runs()  # connect before the start line
        barrier.wait()
        out = []
        for i in order:
            envelope = store.append(events[i], key=keys[i])
            out.append((keys[i], envelope.seq, envelope.event_id))
        return out
