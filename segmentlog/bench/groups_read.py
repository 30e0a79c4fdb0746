"""The read side of the suite: replay, seek, and recovery (reopen, many runs, the scan).

Strategy and invariants
- Stores to read are written once per group from the same stamped envelopes for every
  contender (``stores``), so all of them read identical records.
- Replay is compared with SQLite paging and with two floors: the raw frame walk (one read of
  the whole file) and decoding alone (``floors.decode_floor``), the limit of any replay that
  returns Envelopes.
- Seek latencies are p50 of single ``list_after(limit=100)`` calls at random positions; the
  flatness row compares the longest run with the shortest.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from typing import Any

from . import baselines as bl
from . import floors
from . import workloads as sl
from .data import Sizes, Stamper, make_run_events, make_runs, run_ids
from .model import Contender, Group, MemoryProbe, Workload
from .runner import fresh
from .stores import build_stores, copy_into, spawn_and_wait, store_envelopes
from .timing import Sample

__all__ = ["PAGE", "SEEK_PAGE", "recovery_group", "replay_group", "seek_group"]

PAGE = 1000  # list_after limit in the replay workload
SEEK_PAGE = 100  # list_after limit in the seek workloads


def replay_group(z: Sizes, base: str) -> Group:
    """Read every event of a store with ``list_after`` pages, against SQLite and two floors."""
    runs = run_ids(max(1, z.replay_events // z.replay_run_events), seed=4)
    seg_dir = os.path.join(base, "segmentlog")
    sql_dir = os.path.join(base, "sqlite")
    raw_dir = os.path.join(base, "raw")

    def prepare() -> None:
        build_stores(base, store_envelopes(runs, z.replay_run_events, seed=4))

    total = len(runs) * z.replay_run_events
    workload = Workload(
        "replay",
        f"replay {total:,} events, list_after pages of {PAGE}",
        "events/s",
        Contender("segmentlog", "segmentlog", lambda d: sl.seg_replay(seg_dir, PAGE)),
        [
            Contender(
                "sqlite_paging",
                "sqlite3 paging + decode",
                lambda d: bl.sqlite_replay(sql_dir, runs, PAGE),
                target=1.5,
            ),
            Contender(
                "raw_walk",
                "raw floor: 1 read + frame walk",
                lambda d: bl.raw_replay(raw_dir, PAGE),
                target=0.90,
            ),
            Contender(
                "decode_floor",
                f"decode-only floor: 1 msgspec decode per {PAGE}",
                lambda d: floors.decode_floor(raw_dir, PAGE),
                target=0.8,
            ),
        ],
        note=f"{len(runs)} runs of {z.replay_run_events:,}; every event decoded to an Envelope",
    )
    probes = [
        MemoryProbe(
            "replay_segmentlog", "replay, segmentlog", sl.seg_replay_probe, (seg_dir, PAGE), seg_dir
        ),
        MemoryProbe(
            "replay_sqlite",
            "replay, sqlite3",
            bl.sqlite_replay_probe,
            (sql_dir, runs, PAGE),
            sql_dir,
        ),
        MemoryProbe(
            "replay_raw",
            "replay, raw floor (reads all)",
            bl.raw_replay_probe,
            (raw_dir, PAGE),
            raw_dir,
        ),
    ]
    return Group("replay", "replay", [workload], prepare=prepare, probes=probes)


def seek_group(z: Sizes, base: str) -> Group:
    """p50 of one ``list_after(limit=100)`` in runs of 10^3 .. 10^6, against SQLite."""
    sizes = sorted(z.seek_sizes)
    runs = run_ids(len(sizes), seed=5)
    seg_dir = os.path.join(base, "segmentlog")
    sql_dir = os.path.join(base, "sqlite")

    def chunks() -> Iterable[list[Any]]:
        stamper = Stamper()
        for n, (run_id, size) in enumerate(zip(runs, sizes, strict=True)):
            for start in range(0, size, 10_000):
                events = make_run_events(run_id, size, 500 + n, start=start, stop=start + 10_000)
                yield list(stamper.stamp_all(events))

    def prepare() -> None:
        build_stores(base, chunks(), raw=False)

    smallest = sizes[0]
    workloads = []
    for n, (run_id, size) in enumerate(zip(runs, sizes, strict=True)):

        def seg(d: str, run_id: uuid.UUID = run_id, size: int = size, n: int = n) -> Sample:
            return sl.seg_seek(seg_dir, run_id, size, z.seek_probes, SEEK_PAGE, seed=n)

        def sql(d: str, run_id: uuid.UUID = run_id, size: int = size, n: int = n) -> Sample:
            return bl.sqlite_seek(sql_dir, run_id, size, z.seek_probes, SEEK_PAGE, seed=n)

        baselines = [
            Contender(
                "sqlite_seek",
                f"sqlite3 WHERE seq>? LIMIT {SEEK_PAGE} (target: <= 0.7x its p50)",
                sql,
                target=round(1 / 0.7, 2),
            )
        ]
        if size != smallest:
            baselines.append(
                Contender(
                    f"seek_{smallest}",
                    f"segmentlog p50 in a run of {smallest:,} (flatness)",
                    ref=f"seek_{smallest}",
                    target=round(1 / 1.5, 3),
                )
            )
        workloads.append(
            Workload(
                f"seek_{size}",
                f"seek p50, list_after(limit={SEEK_PAGE}) in a run of {size:,}",
                "us",
                Contender("segmentlog", "segmentlog", seg),
                baselines,
                note=f"{z.seek_probes} random after_seq per repetition",
            )
        )
    return Group("seek", "seek", workloads, prepare=prepare)


def recovery_group(z: Sizes, base: str) -> Group:
    """Reopen after kill -9, reopen of many runs, and the scan of a full segment."""
    kill_seg = os.path.join(base, "kill_segmentlog")
    kill_sql = os.path.join(base, "kill_sqlite")
    open_seg = os.path.join(base, "open_segmentlog")
    open_sql = os.path.join(base, "open_sqlite")
    state: dict[str, Any] = {}

    def prepare() -> None:
        runs = make_runs(z.kill_runs, z.kill_events_per_run, seed=6)
        spawn_and_wait(sl.kill_writer, fresh(kill_seg), runs)
        torn_run = next(iter(runs))
        state["torn_bytes"] = sl.add_torn_tail(kill_seg, torn_run, runs[torn_run][-1])
        spawn_and_wait(bl.sqlite_kill_writer, fresh(kill_sql), runs)
        ids = run_ids(z.open_runs, seed=7)

        def starts() -> Iterable[list[Any]]:
            stamper = Stamper()
            for i in range(0, len(ids), 1000):
                yield [stamper.stamp(make_run_events(r, 1, seed=i)[0]) for r in ids[i : i + 1000]]

        seg = sl.SegmentlogBuilder(fresh(open_seg), fsync="never")  # 100 000 runs: no fsyncs
        sql = bl.SqliteBuilder(fresh(open_sql))
        for envelopes in starts():
            seg.add(envelopes)
            sql.add(envelopes)
        seg.close()
        sql.close()
        state["segment"] = floors.build_full_segment(
            fresh(os.path.join(base, "scan")), z.scan_segment_bytes
        )

    def seg_kill(d: str) -> Sample:
        copy_into(kill_seg, d)
        return sl.seg_reopen_after_kill(d)

    def sql_kill(d: str) -> Sample:
        copy_into(kill_sql, d)
        return bl.sqlite_reopen_after_kill(d)

    quick_note = "" if z.open_runs >= 100_000 else " (the 1 s target is for 100,000: --full)"
    mib = z.scan_segment_bytes / 2**20
    workloads = [
        Workload(
            "recover_kill",
            f"reopen after kill -9, {z.kill_runs:,} runs + torn tail",
            "s",
            Contender("segmentlog", "segmentlog", seg_kill),
            [Contender("sqlite_kill", "sqlite3 WAL reopen + MAX(seq) per run", sql_kill)],
            note="open, runs(), last_seq of every run, close",
        ),
        Workload(
            "open_runs",
            f"reopen a {z.open_runs:,}-run directory{quick_note}",
            "s",
            Contender("segmentlog", "segmentlog", lambda d: sl.seg_open_runs(open_seg)),
            [
                Contender("limit_1s", "limit: 1 s", constant=1.0, target=1.0),
                Contender(
                    "sqlite_open",
                    "sqlite3 open + DISTINCT run_id",
                    lambda d: bl.sqlite_open_runs(open_sql),
                ),
            ],
            note="open, runs(), close",
        ),
        Workload(
            "recovery_scan",
            f"recovery scan of a full {mib:g} MiB segment (in memory)",
            "GB/s",
            Contender(
                "segmentlog",
                "segmentlog.scan.scan",
                lambda d: floors.scan_segment(state["segment"]),
            ),
            [Contender("target_1gbps", "target: 1 GB/s", constant=1.0, target=1.0)],
            note="the frame walk with xxh3 checks that recovery runs over a run's last segment",
        ),
    ]
    probes = [
        MemoryProbe(
            "open_runs_segmentlog",
            f"open {z.open_runs:,} runs, segmentlog",
            sl.seg_open_runs_probe,
            (open_seg,),
            open_seg,
        ),
    ]
    return Group("recovery", "recovery", workloads, prepare=prepare, probes=probes)
