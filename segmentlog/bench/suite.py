"""The suite: which workloads exist, what each is compared with, and the interleaved runner.

Strategy and invariants
- Workloads come in groups that share inputs and fixtures (the append workloads share their
  events, the seek workloads share one store). A group is prepared once, all its workloads run,
  then its fixtures are deleted, so the disk never holds more than one group's data.
- Within a workload every repetition runs segmentlog and each baseline once, back to back
  (interleaved), on a fresh scratch directory each. Odd repetitions run them in reverse order,
  so neither side always runs first (warm caches, CPU frequency, background writeback).
- Every ratio is "higher is better": contender ÷ baseline for throughputs, baseline ÷
  contender for latencies and durations. It is computed from medians of the repetitions.
- A baseline can be another measurement, a reference to a workload measured earlier in the
  same run (``ref``: e.g. 16-thread group commit against one-thread ``always``), or a constant
  limit (``constant``: e.g. a 1 s reopen budget).
- Memory is probed once per group in spawned children, after the timed repetitions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import shutil
import statistics
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from . import baselines as bl
from . import workloads as sl
from .data import Sizes, Stamper, batches_of, interleave, make_run_events, make_runs, run_ids
from .timing import Sample, in_child

__all__ = ["Contender", "Group", "MemoryProbe", "Workload", "build_suite", "run_suite"]

PAGE = 1000  # list_after limit in the replay workload
SEEK_PAGE = 100  # list_after limit in the seek workloads


@dataclasses.dataclass
class Contender:
    """One side of a comparison.

    Exactly one of ``run`` (measure now, in a scratch directory), ``ref`` (the segmentlog samples
    of the workload with that id) or ``constant`` (a fixed value in the workload's unit) is set.
    ``target`` is the minimum ratio the issue asks for, if any.
    """

    id: str
    title: str
    run: Callable[[str], Sample] | None = None
    ref: str | None = None
    constant: float | None = None
    target: float | None = None


@dataclasses.dataclass
class MemoryProbe:
    """A peak-RSS measurement of ``fn(*args)`` in a spawned child."""

    id: str
    title: str
    fn: Callable[..., dict[str, float]]
    args: tuple[Any, ...]
    store: str | None = None  # a directory whose size is reported next to the peak


@dataclasses.dataclass
class Workload:
    """segmentlog and its baselines doing one job."""

    id: str
    title: str
    unit: str  # "events/s", "us" or "s"
    subject: Contender
    baselines: list[Contender]
    note: str = ""

    @property
    def higher_is_better(self) -> bool:
        """Throughputs are better high; latencies and durations low."""
        return self.unit == "events/s"


@dataclasses.dataclass
class Group:
    """Workloads sharing one preparation step and one fixture directory."""

    id: str
    title: str
    workloads: list[Workload]
    prepare: Callable[[], None] | None = None
    probes: list[MemoryProbe] = dataclasses.field(default_factory=list)
    #: Releases what ``prepare`` made outside the fixture directory (a server schema).
    cleanup: Callable[[], None] | None = None


def _dir_bytes(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(root, name))
    return total


def _fresh(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def _copy_into(src: str, dst: str) -> None:
    for name in os.listdir(src):
        s, d = os.path.join(src, name), os.path.join(dst, name)
        if os.path.isdir(s):
            shutil.copytree(s, d)
        else:
            shutil.copy2(s, d)


def _spawn_and_wait(target: Callable[..., None], *args: Any) -> None:
    import multiprocessing

    proc = multiprocessing.get_context("spawn").Process(target=target, args=args)
    proc.start()
    proc.join()
    if proc.exitcode != -9:
        raise RuntimeError(f"writer child should die by SIGKILL, exit code {proc.exitcode}")


# --- the suite -------------------------------------------------------------------------


def build_suite(sizes: Sizes, fixtures: str, postgres_dsn: str | None = None) -> list[Group]:
    """Define every group for ``sizes``, with fixtures under the directory ``fixtures``.

    With ``postgres_dsn`` the PostgreSQL backend joins as a baseline of its own group.
    """
    groups = [
        _append_group(sizes),
        _durable_group(sizes),
        _replay_group(sizes, os.path.join(fixtures, "replay")),
        _seek_group(sizes, os.path.join(fixtures, "seek")),
        _recovery_group(sizes, os.path.join(fixtures, "recovery")),
    ]
    groups.append(_aio_group(sizes))
    if postgres_dsn is not None:
        groups.append(_postgres_group(sizes, os.path.join(fixtures, "postgres"), postgres_dsn))
    return groups


def _aio_group(z: Sizes) -> Group:
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


def _postgres_group(z: Sizes, base: str, dsn: str) -> Group:
    """segmentlog against PostgresEventStore: durable appends, batches, replay."""
    from . import pg

    state: dict[str, Any] = {}
    replay_events = max(1000, z.replay_events // 10)
    per_run = min(z.replay_run_events, replay_events)
    schema = f"bench_replay_{uuid.uuid4().hex[:8]}"

    def prepare() -> None:
        state["flat"] = interleave(make_runs(10, max(1, z.durable_events // 10), seed=7))
        state["batches"] = batches_of(make_runs(10, z.batch_size * 2, seed=8), z.batch_size)
        runs = run_ids(max(1, replay_events // per_run), seed=9)
        state["runs"] = runs
        chunks = list(_store_envelopes(runs, per_run, seed=9))
        builder = sl.SegmentlogBuilder(_fresh(os.path.join(base, "segmentlog")))
        for envelopes in chunks:
            builder.add(envelopes)
        builder.close()
        events = [[env.event for env in chunk] for chunk in chunks]
        pg.pg_load(dsn, schema, [b for chunk in events for b in batches_of_list(chunk, 1000)])

    seg_dir = os.path.join(base, "segmentlog")
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


def batches_of_list(items: list[Any], size: int) -> list[list[Any]]:
    """Split ``items`` into lists of at most ``size``."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def _append_group(z: Sizes) -> Group:
    state: dict[str, Any] = {}

    def prepare() -> None:
        runs = make_runs(z.append_runs, z.append_per_run, seed=1)
        state["flat"] = interleave(runs)
        state["batches"] = batches_of(runs, z.batch_size)

    n = z.append_runs * z.append_per_run
    return Group(
        "append",
        "non-durable appends",
        [
            Workload(
                "append_never",
                f"append, fsync=never, 1 per call ({z.append_runs} runs x {z.append_per_run})",
                "events/s",
                Contender(
                    "segmentlog", "segmentlog", lambda d: sl.seg_append(d, state["flat"], "never")
                ),
                [
                    Contender(
                        "sqlite_off",
                        "sqlite3 sync=OFF, 1 commit/append",
                        lambda d: bl.sqlite_append(d, state["flat"], "OFF"),
                        target=4.0,
                    ),
                    Contender(
                        "raw",
                        "raw floor: frames, 1 write/64 KiB",
                        lambda d: bl.raw_append(d, state["flat"]),
                        target=0.35,
                    ),
                ],
                note=f"{n} events interleaved across runs",
            ),
            Workload(
                "append_batch",
                f"append_batch of {z.batch_size}, fsync=never",
                "events/s",
                Contender(
                    "segmentlog",
                    "segmentlog",
                    lambda d: sl.seg_append_batches(d, state["batches"], "never"),
                ),
                [
                    Contender(
                        "sqlite_off_tx",
                        f"sqlite3 sync=OFF, {z.batch_size}/transaction",
                        lambda d: bl.sqlite_append_batches(d, state["batches"], "OFF"),
                        target=3.0,
                    ),
                    Contender(
                        "raw",
                        "raw floor: frames, 1 write/64 KiB",
                        lambda d: bl.raw_append(d, state["flat"]),
                        target=0.60,
                    ),
                ],
            ),
            Workload(
                "append_interval",
                "append, fsync=interval (1 s), 1 per call",
                "events/s",
                Contender(
                    "segmentlog",
                    "segmentlog",
                    lambda d: sl.seg_append(d, state["flat"], "interval"),
                ),
                [
                    Contender(
                        "sqlite_normal",
                        "sqlite3 sync=NORMAL, 1 commit/append",
                        lambda d: bl.sqlite_append(d, state["flat"], "NORMAL"),
                    ),
                    Contender(
                        "raw",
                        "raw floor: frames, 1 write/64 KiB",
                        lambda d: bl.raw_append(d, state["flat"]),
                    ),
                ],
            ),
        ],
        prepare=prepare,
    )


def _durable_group(z: Sizes) -> Group:
    state: dict[Any, Any] = {}
    durable_runs = 10

    def prepare() -> None:
        per_run = max(1, z.durable_events // durable_runs)
        state["flat"] = interleave(make_runs(durable_runs, per_run, seed=2))
        for t in z.thread_counts:
            state[t] = list(make_runs(t, z.per_thread, seed=3 + t).values())
        top = max(z.thread_counts)
        (shared,) = make_runs(1, top * z.per_thread, seed=99).values()
        state["shared"] = [shared[i::top] for i in range(top)]

    workloads = [
        Workload(
            "append_always",
            "append, fsync=always, 1 thread",
            "events/s",
            Contender(
                "segmentlog", "segmentlog", lambda d: sl.seg_append(d, state["flat"], "always")
            ),
            [
                Contender(
                    "sqlite_full",
                    "sqlite3 sync=FULL, 1 commit/append",
                    lambda d: bl.sqlite_append(d, state["flat"], "FULL"),
                    target=1.0,
                ),
                Contender(
                    "raw_fdatasync",
                    "raw floor: write+fdatasync/record",
                    lambda d: bl.raw_append_durable(d, state["flat"]),
                    target=0.90,
                ),
            ],
            note=f"{z.durable_events} events over {durable_runs} runs",
        )
    ]
    top = max(z.thread_counts)
    workloads.append(
        Workload(
            f"append_group_shared_t{top}",
            f"append, fsync=batch, {top} threads, one run (group commit)",
            "events/s",
            Contender(
                "segmentlog",
                "segmentlog",
                lambda d: sl.seg_append_threads(d, state["shared"], "batch"),
            ),
            [
                Contender(
                    "always_1t",
                    "segmentlog fsync=always, 1 thread",
                    ref="append_always",
                    target=5.0 if top >= 16 else None,
                ),
                Contender(
                    f"sqlite_full_shared_t{top}",
                    f"sqlite3 sync=FULL, {top} threads",
                    lambda d: bl.sqlite_append_threads(d, state["shared"], "FULL"),
                    target=5.0 if top >= 16 else None,
                ),
            ],
            note=f"{top} threads share one run, so one fsync can cover all of them",
        )
    )
    for t in z.thread_counts:
        # Each thread has its own run (its own file): fsyncs of different files cannot be
        # shared, so this shows the per-file cost; the group-commit target is measured above.
        target = None

        def seg(d: str, t: int = t) -> Sample:
            return sl.seg_append_threads(d, state[t], "batch")

        def sql(d: str, t: int = t) -> Sample:
            return bl.sqlite_append_threads(d, state[t], "FULL")

        workloads.append(
            Workload(
                f"append_group_t{t}",
                f"append, fsync=batch, {t} thread{'s' if t > 1 else ''} (group commit)",
                "events/s",
                Contender("segmentlog", "segmentlog", seg),
                [
                    Contender(
                        "always_1t",
                        "segmentlog fsync=always, 1 thread",
                        ref="append_always",
                        target=target,
                    ),
                    Contender(
                        f"sqlite_full_t{t}",
                        f"sqlite3 sync=FULL, {t} thread{'s' if t > 1 else ''}",
                        sql,
                        target=target,
                    ),
                ],
                note=f"{z.per_thread} events per thread",
            )
        )
    return Group("durable", "durable appends", workloads, prepare=prepare)


def _store_envelopes(
    runs: list[uuid.UUID], per_run: int, seed: int, chunk: int = 10_000
) -> Iterable[list[Any]]:
    """Stamped envelopes of ``runs`` runs, run after run, in chunks (bounded memory)."""
    stamper = Stamper()
    for n, run_id in enumerate(runs):
        for start in range(0, per_run, chunk):
            events = make_run_events(
                run_id, per_run, seed * 1_000_003 + n, start=start, stop=start + chunk
            )
            yield list(stamper.stamp_all(events))


def _build_stores(base: str, chunks: Iterable[list[Any]], *, raw: bool = True) -> None:
    builders: list[sl.SegmentlogBuilder | bl.SqliteBuilder | bl.RawFileBuilder] = [
        sl.SegmentlogBuilder(_fresh(os.path.join(base, "segmentlog"))),
        bl.SqliteBuilder(_fresh(os.path.join(base, "sqlite"))),
    ]
    if raw:
        builders.append(bl.RawFileBuilder(_fresh(os.path.join(base, "raw"))))
    for envelopes in chunks:
        for b in builders:
            b.add(envelopes)
    for b in builders:
        b.close()


def _replay_group(z: Sizes, base: str) -> Group:
    runs = run_ids(max(1, z.replay_events // z.replay_run_events), seed=4)
    seg_dir = os.path.join(base, "segmentlog")
    sql_dir = os.path.join(base, "sqlite")
    raw_dir = os.path.join(base, "raw")

    def prepare() -> None:
        _build_stores(base, _store_envelopes(runs, z.replay_run_events, seed=4))

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


def _seek_group(z: Sizes, base: str) -> Group:
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
        _build_stores(base, chunks(), raw=False)

    smallest = sizes[0]
    workloads = []
    for n, (run_id, size) in enumerate(zip(runs, sizes, strict=True)):

        def seg(d: str, run_id: uuid.UUID = run_id, size: int = size, n: int = n) -> Sample:
            return sl.seg_seek(seg_dir, run_id, size, z.seek_probes, SEEK_PAGE, seed=n)

        def sql(d: str, run_id: uuid.UUID = run_id, size: int = size, n: int = n) -> Sample:
            return bl.sqlite_seek(sql_dir, run_id, size, z.seek_probes, SEEK_PAGE, seed=n)

        baselines = [Contender("sqlite_seek", "sqlite3 WHERE seq>? LIMIT 100", sql, target=1.0)]
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


def _recovery_group(z: Sizes, base: str) -> Group:
    kill_seg = os.path.join(base, "kill_segmentlog")
    kill_sql = os.path.join(base, "kill_sqlite")
    open_seg = os.path.join(base, "open_segmentlog")
    open_sql = os.path.join(base, "open_sqlite")
    state: dict[str, Any] = {}

    def prepare() -> None:
        runs = make_runs(z.kill_runs, z.kill_events_per_run, seed=6)
        _spawn_and_wait(sl.kill_writer, _fresh(kill_seg), runs)
        torn_run = next(iter(runs))
        state["torn_bytes"] = sl.add_torn_tail(kill_seg, torn_run, runs[torn_run][-1])
        _spawn_and_wait(bl.sqlite_kill_writer, _fresh(kill_sql), runs)
        ids = run_ids(z.open_runs, seed=7)

        def starts() -> Iterable[list[Any]]:
            stamper = Stamper()
            for i in range(0, len(ids), 1000):
                yield [stamper.stamp(make_run_events(r, 1, seed=i)[0]) for r in ids[i : i + 1000]]

        seg = sl.SegmentlogBuilder(_fresh(open_seg), fsync="never")  # 100 000 runs: no fsyncs
        sql = bl.SqliteBuilder(_fresh(open_sql))
        for envelopes in starts():
            seg.add(envelopes)
            sql.add(envelopes)
        seg.close()
        sql.close()

    def seg_kill(d: str) -> Sample:
        _copy_into(kill_seg, d)
        return sl.seg_reopen_after_kill(d)

    def sql_kill(d: str) -> Sample:
        _copy_into(kill_sql, d)
        return bl.sqlite_reopen_after_kill(d)

    quick_note = "" if z.open_runs >= 100_000 else " (the 1 s target is for 100,000: --full)"
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


# --- the runner ------------------------------------------------------------------------


def _median_extra(samples: list[Sample]) -> dict[str, float]:
    keys = {k for s in samples for k in s.extra}
    return {k: statistics.median(s.extra[k] for s in samples if k in s.extra) for k in sorted(keys)}


def _ratio(subject: float, baseline: float, higher_is_better: bool) -> float | None:
    if subject <= 0 or baseline <= 0:
        return None
    return subject / baseline if higher_is_better else baseline / subject


def selected(groups: list[Group], only: list[str] | None) -> list[Group]:
    """Keep the groups and workloads named (by id or id prefix) in ``only``."""
    if not only:
        return groups
    out = []
    for g in groups:
        if any(g.id == o for o in only):
            out.append(g)
            continue
        ws = [w for w in g.workloads if any(w.id == o or w.id.startswith(o) for o in only)]
        if ws:
            out.append(dataclasses.replace(g, workloads=ws, probes=[]))
    return out


def steps(groups: list[Group], repeat: int) -> int:
    """Progress units for running ``groups``: preparations, measurements, probes."""
    total = 0
    for g in groups:
        total += 1 + len(g.probes)
        for w in g.workloads:
            runnable = [c for c in [w.subject, *w.baselines] if c.run is not None]
            total += repeat * len(runnable)
    return total


def run_suite(
    groups: list[Group],
    repeat: int,
    scratch: str,
    fixtures: str,
    advance: Callable[[str], None],
) -> dict[str, Any]:
    """Run ``groups`` and return the results (see ``report`` for the layout).

    ``advance(status)`` is called after each unit of progress with a description of the next.
    """
    results: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    subject_samples: dict[str, list[float]] = {}
    for g in groups:
        advance(f"preparing {g.title}")
        t0 = time.perf_counter()
        if g.prepare is not None:
            g.prepare()
        prep_s = time.perf_counter() - t0
        for w in g.workloads:
            contenders = [w.subject, *[b for b in w.baselines if b.run is not None]]
            samples: dict[str, list[Sample]] = {c.id: [] for c in contenders}
            for rep in range(repeat):
                order = contenders if rep % 2 == 0 else contenders[::-1]
                for c in order:
                    assert c.run is not None
                    advance(f"{w.id}: {c.id} ({rep + 1}/{repeat})")
                    d = _fresh(os.path.join(scratch, "m"))
                    gc.collect()
                    samples[c.id].append(c.run(d))
                    shutil.rmtree(d, ignore_errors=True)
            subj = [s.value for s in samples[w.subject.id]]
            subject_samples[w.id] = subj
            subj_median = statistics.median(subj)
            entry: dict[str, Any] = {
                "id": w.id,
                "group": g.id,
                "title": w.title,
                "unit": w.unit,
                "higher_is_better": w.higher_is_better,
                "note": w.note,
                "segmentlog": {
                    "samples": subj,
                    "median": subj_median,
                    "extra": _median_extra(samples[w.subject.id]),
                },
                "baselines": [],
            }
            for b in w.baselines:
                extra: dict[str, float] = {}
                if b.run is not None:
                    values = [s.value for s in samples[b.id]]
                    extra = _median_extra(samples[b.id])
                    kind = "measured"
                elif b.ref is not None:
                    values = subject_samples.get(b.ref, [])
                    kind = f"ref:{b.ref}"
                else:
                    assert b.constant is not None
                    values = [b.constant]
                    kind = "constant"
                median = statistics.median(values) if values else None
                ratio = _ratio(subj_median, median, w.higher_is_better) if median else None
                entry["baselines"].append(
                    {
                        "id": b.id,
                        "title": b.title,
                        "kind": kind,
                        "samples": values,
                        "median": median,
                        "extra": extra,
                        "ratio": ratio,
                        "target": b.target,
                        "met": None if b.target is None or ratio is None else ratio >= b.target,
                    }
                )
            results.append(entry)
        for p in g.probes:
            advance(f"memory: {p.id}")
            got = in_child(p.fn, *p.args)
            row: dict[str, Any] = {"id": p.id, "title": p.title, "group": g.id}
            row["peak_rss_mib"] = got.pop("peak_rss_kib") / 1024
            row["rss_before_mib"] = got.pop("rss_before_kib") / 1024
            if p.store is not None:
                row["store_mib"] = _dir_bytes(p.store) / 2**20
            row.update(got)
            memory.append(row)
        for entry in results:
            if entry["group"] == g.id:
                entry["prepare_seconds"] = prep_s
        if g.cleanup is not None:
            g.cleanup()
        shutil.rmtree(fixtures, ignore_errors=True)
        os.makedirs(fixtures, exist_ok=True)
    advance("done")
    return {"workloads": results, "memory": memory}
