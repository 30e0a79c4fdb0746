"""The write side of the suite: non-durable and durable appends, new runs, keyed appends.

Strategy and invariants
- Every segmentlog row has SQLite at the matching durability beside it: ``never`` against
  ``synchronous=OFF``, ``interval`` against ``NORMAL``, ``always`` and ``batch`` against
  ``FULL``; the raw floor shows what pure Python with the same codec does with no
  bookkeeping at all.
- "New runs" time the first append of a run (a segment file and a directory to create), the
  other rows mostly appends to runs that exist; ``append_batch`` is measured both ways.
- Targets are the issue's; see ``benchmarks/README.md`` for the table of them.
"""

from __future__ import annotations

from typing import Any

from . import baselines as bl
from . import keyed as kd
from . import workloads as sl
from .data import Sizes, batches_of, interleave, make_runs
from .features import missing
from .model import Contender, Group, Workload
from .runner import fresh
from .timing import Sample

__all__ = ["append_group", "durable_group", "keyed_group", "new_runs_group"]

RAW = "raw floor: frames, 1 write/64 KiB"


def append_group(z: Sizes) -> Group:
    """Non-durable appends: one per call, batches to new and to existing runs, interval."""
    state: dict[str, Any] = {}

    def prepare() -> None:
        runs = make_runs(z.append_runs, z.append_per_run, seed=1)
        state["flat"] = interleave(runs)
        state["batches"] = batches_of(runs, z.batch_size)
        # Existing runs: each run's first event is appended untimed, then batches follow.
        more = make_runs(z.existing_runs, 1 + z.existing_batches * z.batch_size, seed=11)
        state["warm"] = [[events[0]] for events in more.values()]
        state["existing"] = batches_of({r: e[1:] for r, e in more.items()}, z.batch_size)

    n = z.append_runs * z.append_per_run
    existing = z.existing_runs * z.existing_batches * z.batch_size
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
                        target=3.0,
                    ),
                    Contender("raw", RAW, lambda d: bl.raw_append(d, state["flat"]), target=0.35),
                ],
                note=f"{n} events interleaved across runs",
            ),
            Workload(
                "append_batch",
                f"append_batch of {z.batch_size}, fsync=never (new runs included)",
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
                        target=1.0,
                    ),
                    Contender("raw", RAW, lambda d: bl.raw_append(d, state["flat"]), target=0.60),
                ],
                note=f"{z.append_runs} runs of {z.append_per_run}: a run's first batch creates it",
            ),
            Workload(
                "append_batch_existing",
                f"append_batch of {z.batch_size} into existing runs, fsync=never",
                "events/s",
                Contender(
                    "segmentlog",
                    "segmentlog",
                    lambda d: sl.seg_append_batches(d, state["existing"], "never", state["warm"]),
                ),
                [
                    Contender(
                        "sqlite_off_tx",
                        f"sqlite3 sync=OFF, {z.batch_size}/transaction",
                        lambda d: bl.sqlite_append_batches(
                            d, state["existing"], "OFF", state["warm"]
                        ),
                        target=2.0,
                    ),
                ],
                note=f"{existing} events in {z.existing_runs} runs that already hold their first",
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
                    Contender("raw", RAW, lambda d: bl.raw_append(d, state["flat"])),
                ],
            ),
        ],
        prepare=prepare,
    )


def new_runs_group(z: Sizes) -> Group:
    """The first append to a fresh run, non-durable and durable, against SQLite's first row."""
    state: dict[str, Any] = {}

    def prepare() -> None:
        state["never"] = [e[0] for e in make_runs(z.new_runs, 1, seed=12).values()]
        state["batch"] = [e[0] for e in make_runs(z.new_runs_durable, 1, seed=13).values()]

    def row(fsync: str, sync: str, count: int) -> Workload:
        return Workload(
            f"new_runs_{fsync}",
            f"new runs, fsync={fsync}: first append to {count} fresh runs",
            "runs/s",
            Contender("segmentlog", "segmentlog", lambda d: sl.seg_append(d, state[fsync], fsync)),
            [
                Contender(
                    f"sqlite_{sync.lower()}",
                    f"sqlite3 sync={sync}, a run's first row",
                    lambda d: bl.sqlite_append(d, state[fsync], sync),
                )
            ],
            note="each append creates its run (directory and segment file)",
        )

    return Group(
        "new_runs",
        "new runs",
        [row("never", "OFF", z.new_runs), row("batch", "FULL", z.new_runs_durable)],
        prepare=prepare,
    )


def durable_group(z: Sizes) -> Group:
    """``always`` and ``batch`` (group commit) with 1..16 threads, against SQLite FULL."""
    state: dict[Any, Any] = {}
    durable_runs = 10
    top = max(z.thread_counts)

    def prepare() -> None:
        per_run = max(1, z.durable_events // durable_runs)
        state["flat"] = interleave(make_runs(durable_runs, per_run, seed=2))
        for t in z.thread_counts:
            state[t] = list(make_runs(t, z.per_thread, seed=3 + t).values())
        (shared,) = make_runs(1, top * z.per_thread, seed=99).values()
        state["shared"] = [shared[i::top] for i in range(top)]

    always_1t = "segmentlog fsync=always, 1 thread"
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
                    target=1.3,
                ),
                Contender(
                    "raw_fdatasync",
                    "raw floor: write+fdatasync/record, growing file",
                    lambda d: bl.raw_append_durable(d, state["flat"]),
                    target=1.0,
                ),
            ],
            note=f"{z.durable_events} events over {durable_runs} runs",
        ),
        Workload(
            f"append_group_shared_t{top}",
            f"append, fsync=batch, {top} threads on one run (group commit)",
            "events/s",
            Contender(
                "segmentlog",
                "segmentlog",
                lambda d: sl.seg_append_threads(d, state["shared"], "batch"),
            ),
            [
                Contender(
                    "always_1t", always_1t, ref="append_always", target=6.0 if top >= 16 else None
                ),
                Contender(
                    f"sqlite_full_shared_t{top}",
                    f"sqlite3 sync=FULL, {top} threads",
                    lambda d: bl.sqlite_append_threads(d, state["shared"], "FULL"),
                    target=5.0 if top >= 16 else None,
                ),
            ],
            note=f"{top} threads share one run, so one fsync can cover all of them",
            details=("appends_per_fsync",),
        ),
    ]
    for t in z.thread_counts:
        # Each thread has its own run (its own file): fsyncs of different files cannot be
        # shared, so this shows the per-file cost; the group-commit target is measured above.

        def seg(d: str, t: int = t) -> Sample:
            return sl.seg_append_threads(d, state[t], "batch")

        def sql(d: str, t: int = t) -> Sample:
            return bl.sqlite_append_threads(d, state[t], "FULL")

        threads = f"{t} thread{'s' if t > 1 else ''}"
        on = "1 run" if t == 1 else f"{t} runs"
        workloads.append(
            Workload(
                f"append_group_t{t}",
                f"append, fsync=batch, {threads} on {on}",
                "events/s",
                Contender("segmentlog", "segmentlog", seg),
                [
                    Contender(
                        "always_1t",
                        always_1t,
                        ref="append_always",
                        target=0.95 if t == 1 else None,
                    ),
                    Contender(f"sqlite_full_t{t}", f"sqlite3 sync=FULL, {threads}", sql),
                ],
                note=f"{z.per_thread} events per thread",
                details=("appends_per_fsync",),
            )
        )
    return Group("durable", "durable appends", workloads, prepare=prepare)


def keyed_group(z: Sizes, base: str) -> Group:
    """Keyed appends (``append(event, key=...)``), when the engine has them."""
    state: dict[str, Any] = {}
    unavailable = missing("key")
    fixture = f"{base}/keyed"
    size = z.keyed_run_events
    quick_note = "" if size >= 1_000_000 else " (the 1 s target is for 10^6: --full)"

    def prepare() -> None:
        state["flat"] = interleave(make_runs(z.append_runs, z.append_per_run, seed=21))
        state["run"] = kd.build_keyed_run(fresh(fixture), size)

    return Group(
        "keyed",
        "keyed appends",
        [
            Workload(
                "append_keyed",
                "append with a key, fsync=never, 1 per call",
                "events/s",
                Contender(
                    "segmentlog",
                    "segmentlog, keyed",
                    lambda d: kd.seg_append_keyed(d, state["flat"], "never", keyed=True),
                ),
                [
                    Contender(
                        "unkeyed",
                        "segmentlog, the same appends without keys",
                        lambda d: kd.seg_append_keyed(d, state["flat"], "never", keyed=False),
                        target=0.8,
                    )
                ],
                unavailable=unavailable,
            ),
            Workload(
                "keyed_first_after_reopen",
                f"first keyed append to a run of {size:,} after a reopen{quick_note}",
                "s",
                Contender(
                    "segmentlog",
                    "segmentlog",
                    lambda d: kd.first_keyed_append(fixture, state["run"]),
                ),
                [Contender("limit_1s", "limit: 1 s", constant=1.0, target=1.0)],
                note="open + one append with a new key; the run was written with a key per event",
                unavailable=unavailable,
            ),
        ],
        prepare=prepare,
    )
