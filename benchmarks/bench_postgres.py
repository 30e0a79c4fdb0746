"""PostgreSQL backend benchmarks: appends (one per transaction, batches of 100) and replay.

``run_postgres_benchmarks(dsn, n_events)`` is self-contained so the suite can call it with the
server it has: it uses the suite's own generated agent events (``segmentlog.bench.data``, same
seed, so the same envelopes every other contender stores), works in a schema of its own, and
drops that schema afterwards. Run it alone with
``python benchmarks/bench_postgres.py [DSN] [N_EVENTS]``; without a DSN it uses
``SEGMENTLOG_PG_DSN`` or starts the tests' throwaway server.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any

import psycopg
from psycopg import sql

from segmentlog.bench.data import batches_of, interleave, make_runs
from segmentlog.bench.timing import percentile
from segmentlog.postgres import PostgresEventStore

SEED = 20250101
EVENTS_PER_RUN = 1_000
BATCH_SIZE = 100
PAGE = 1_000


def run_postgres_benchmarks(dsn: str, n_events: int) -> dict[str, Any]:
    """Measure the PostgreSQL backend on ``n_events`` events; return the figures as a dict.

    - ``append_events_per_s`` and ``append_p50_us``/``append_p99_us``: ``append`` of each
      event in its own transaction, runs interleaved as concurrent runs would append.
    - ``append_batch_events_per_s``: ``append_batch`` of up to 100 events of one run.
    - ``replay_events_per_s``: every run read back with ``list_after`` pages of 1000,
      envelopes decoded.
    """
    per_run = min(EVENTS_PER_RUN, n_events)
    runs = make_runs(max(1, n_events // per_run), per_run, SEED)
    flat = interleave(runs)
    batches = batches_of(make_runs(len(runs), per_run, SEED + 1), BATCH_SIZE)
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    store: PostgresEventStore[Any] = PostgresEventStore(dsn, schema=schema)
    try:
        store.create_schema()

        latencies: list[int] = []
        start = time.perf_counter()
        for event in flat:
            t0 = time.perf_counter_ns()
            store.append(event)
            latencies.append(time.perf_counter_ns() - t0)
        append_s = time.perf_counter() - start

        start = time.perf_counter()
        for batch in batches:
            store.append_batch(batch)
        batch_s = time.perf_counter() - start

        replayed = 0
        start = time.perf_counter()
        for run_id in runs:
            after = 0
            while page := store.list_after(run_id, after, PAGE):
                replayed += len(page)
                after = page[-1].seq
        replay_s = time.perf_counter() - start
        if replayed != len(flat):
            raise AssertionError(f"replayed {replayed} envelopes, appended {len(flat)}")

        with psycopg.connect(dsn) as conn:
            version = conn.info.server_version
    finally:
        store.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))

    ordered = sorted(ns / 1000 for ns in latencies)
    batched = sum(len(b) for b in batches)
    return {
        "events": len(flat),
        "runs": len(runs),
        "append_events_per_s": len(flat) / append_s,
        "append_p50_us": percentile(ordered, 50),
        "append_p99_us": percentile(ordered, 99),
        "append_batch_size": BATCH_SIZE,
        "append_batch_events_per_s": batched / batch_s,
        "replay_page": PAGE,
        "replay_events_per_s": replayed / replay_s,
        "server_version": version,
    }


def main(argv: list[str]) -> int:
    dsn = argv[0] if argv else os.environ.get("SEGMENTLOG_PG_DSN", "")
    n_events = int(argv[1]) if len(argv) > 1 else 10_000
    if dsn:
        print(json.dumps(run_postgres_benchmarks(dsn, n_events), indent=2))
        return 0
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests.postgres.pgserver import start_throwaway_server

    server = start_throwaway_server()
    try:
        print(json.dumps(run_postgres_benchmarks(server.dsn, n_events), indent=2))
    finally:
        server.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
