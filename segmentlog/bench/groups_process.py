"""Beyond one thread of one process: several writer processes, asyncio, PostgreSQL.

Strategy and invariants
- The multiprocess rows need ``segmentlog.open(path, multiprocess=True)``; on a build without
  it they are listed as "not available in this build" (``features``) and never prepared.
  Their writers are spawned processes (``multiproc``); appends per fsync is summed from the
  children's ``stats()``.
- The asyncio row measures the event loop's lag while coroutines append, against the same
  ticker on an idle loop.
- PostgreSQL joins only with ``--postgres DSN``, in a scratch schema dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from . import multiproc as mp
from . import workloads as sl
from .data import Sizes, batches_of, interleave, make_runs, run_ids
from .features import missing
from .groups_read import PAGE
from .model import Contender, Group, Workload
from .runner import fresh
from .stores import store_envelopes

__all__ = ["aio_group", "multiprocess_group", "postgres_group"]


def multiprocess_group(z: Sizes) -> Group:
    """``multiprocess=True``: its cost in one process, and 4 writer processes."""
    state: dict[str, Any] = {}
    n = z.processes
    unavailable = missing("multiprocess")

    def prepare() -> None:
        state["flat"] = interleave(make_runs(z.append_runs, z.append_per_run, seed=31))
        state["distinct"] = list(make_runs(n, z.per_process, seed=32).values())
        (shared,) = make_runs(1, n * z.per_process, seed=33).values()
        state["shared"] = [shared[i::n] for i in range(n)]

    def seg(key: str, procs: int | None = None) -> Any:
        return lambda d: mp.seg_processes(d, state[key][:procs], "batch", multiprocess=True)

    workloads = [
        Workload(
            "mp_single",
            "multiprocess=True in one process: append, fsync=never, 1 per call",
            "events/s",
            Contender(
                "segmentlog",
                "segmentlog multiprocess=True",
                lambda d: sl.seg_append(d, state["flat"], "never", multiprocess=True),
            ),
            [
                Contender(
                    "exclusive",
                    "segmentlog, exclusive open (the default)",
                    lambda d: sl.seg_append(d, state["flat"], "never"),
                    target=0.8,
                )
            ],
            note="what sharing the log with other processes costs when none is there",
            unavailable=unavailable,
        ),
        Workload(
            f"mp_distinct_p{n}",
            f"{n} processes, fsync=batch, each on its own run",
            "events/s",
            Contender("segmentlog", "segmentlog", seg("distinct")),
            [
                Contender("one_process", "segmentlog, 1 process", seg("distinct", 1), target=2.0),
                Contender(
                    f"sqlite_p{n}",
                    f"sqlite3 FULL, WAL, {n} processes",
                    lambda d: mp.sqlite_processes(d, state["distinct"]),
                ),
            ],
            note=f"{z.per_process} events per process",
            details=("appends_per_fsync",),
            unavailable=unavailable,
        ),
        Workload(
            f"mp_shared_p{n}",
            f"{n} processes, fsync=batch, all on one run",
            "events/s",
            Contender("segmentlog", "segmentlog", seg("shared")),
            [
                Contender(
                    f"sqlite_shared_p{n}",
                    f"sqlite3 FULL, WAL, {n} processes, one run",
                    lambda d: mp.sqlite_processes(d, state["shared"]),
                ),
            ],
            note=f"{z.per_process} events per process; appends per fsync summed over them",
            details=("appends_per_fsync",),
            unavailable=unavailable,
        ),
    ]
    return Group("multiprocess", "several processes", workloads, prepare=prepare)


def aio_group(z: Sizes) -> Group:
    """Event-loop lag while 1000 coroutines append through segmentlog.aio."""
    coroutines = 50 if z.name == "tiny" else 1000
    each = {"tiny": 1, "quick": 2}.get(z.name, 5)
    return Group(
        "aio",
        "asyncio",
        [
            Workload(
                "aio_loop_lag",
                f"event-loop lag p99, {coroutines} coroutines appending (fsync=batch)",
                "us",
                Contender(
                    "segmentlog", "segmentlog.aio", lambda d: sl.aio_loop_lag(d, coroutines, each)
                ),
                [
                    Contender(
                        "idle_loop",
                        "the same 1 ms ticker on an idle loop",
                        lambda d: sl.aio_loop_lag(d, 0, 0),
                    )
                ],
                note=f"{coroutines} x {each} appends; lower is better; a ratio near 1 means "
                "the appends do not stall the loop",
            )
        ],
    )


def postgres_group(z: Sizes, base: str, dsn: str) -> Group:
    """segmentlog against PostgresEventStore: durable appends, batches, replay."""
    from . import pg

    state: dict[str, Any] = {}
    replay_events = max(1000, z.replay_events // 10)
    per_run = min(z.replay_run_events, replay_events)
    schema = f"bench_replay_{uuid.uuid4().hex[:8]}"
    seg_dir = os.path.join(base, "segmentlog")

    def prepare() -> None:
        state["flat"] = interleave(make_runs(10, max(1, z.durable_events // 10), seed=7))
        state["batches"] = batches_of(make_runs(10, z.batch_size * 2, seed=8), z.batch_size)
        runs = run_ids(max(1, replay_events // per_run), seed=9)
        state["runs"] = runs
        chunks = list(store_envelopes(runs, per_run, seed=9))
        builder = sl.SegmentlogBuilder(fresh(seg_dir))
        for envelopes in chunks:
            builder.add(envelopes)
        builder.close()
        events = [[env.event for env in chunk] for chunk in chunks]  # a chunk is of one run
        pg.pg_load(dsn, schema, [e[i : i + 1000] for e in events for i in range(0, len(e), 1000)])

    workloads = [
        Workload(
            "pg_append",
            "append, durable, 1 per call (PostgreSQL: 1 transaction)",
            "events/s",
            Contender(
                "segmentlog", "segmentlog", lambda d: sl.seg_append(d, state["flat"], "always")
            ),
            [
                Contender(
                    "postgres", "PostgresEventStore", lambda d: pg.pg_append(dsn, state["flat"])
                )
            ],
            note="segmentlog fsync=always; PostgreSQL commits durably (synchronous_commit=on)",
        ),
        Workload(
            "pg_append_batch",
            f"append_batch of {z.batch_size}, durable",
            "events/s",
            Contender(
                "segmentlog",
                "segmentlog",
                lambda d: sl.seg_append_batches(d, state["batches"], "always"),
            ),
            [
                Contender(
                    "postgres",
                    "PostgresEventStore",
                    lambda d: pg.pg_append_batches(dsn, state["batches"]),
                )
            ],
        ),
        Workload(
            "pg_replay",
            f"replay {replay_events:,} events, pages of {PAGE}",
            "events/s",
            Contender("segmentlog", "segmentlog", lambda d: sl.seg_replay(seg_dir, PAGE)),
            [
                Contender(
                    "postgres",
                    "PostgresEventStore",
                    lambda d: pg.pg_replay(dsn, schema, state["runs"], PAGE),
                )
            ],
        ),
    ]
    return Group(
        "postgres",
        "PostgreSQL backend",
        workloads,
        prepare=prepare,
        cleanup=lambda: pg.pg_drop(dsn, schema),
    )
