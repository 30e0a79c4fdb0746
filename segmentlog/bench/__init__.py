"""``segmentlog bench``: segmentlog against SQLite and the raw floor, in the same run.

Strategy and invariants
- The harness lives in the package so ``segmentlog bench`` works from any install; the
  ``benchmarks/`` folder of the repository holds only the methodology, a thin runner and kept
  results.
- ``data`` makes the inputs; ``workloads`` (and ``keyed``, ``multiproc``) measure segmentlog
  through its public API; ``baselines``, ``floors`` and ``multiproc`` measure SQLite and the
  floors on the same envelopes; ``model`` holds the shapes of a comparison, the
  ``groups_*`` modules define them, ``suite`` lists them, ``runner`` runs them interleaved;
  ``report`` prints and saves the results. ``features`` says which rows this build can run
  (the others are reported as "not available in this build").
- Everything runs in a temporary directory (or under ``--dir``) that is removed afterwards.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import time

from .._progress import Progress
from .data import SIZES
from .report import document, format_table, plot, plot_available, write_json
from .suite import build_suite, run_suite, selected, steps

__all__ = ["main"]


class _CountingHandler(logging.Handler):
    """Counts the engine's log records by level name."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.levelname] = self.counts.get(record.levelname, 0) + 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segmentlog bench",
        description=(
            "Measure segmentlog against SQLite (WAL, same envelopes) and the raw floor of pure "
            "Python on this disk, interleaved in the same run, and print medians and ratios "
            "(higher is better). The default quick suite takes a minute or two."
        ),
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--full",
        action="store_true",
        help="run the whole suite (1M-event replay, seek in runs up to 10^6, a 100 000-run "
        "reopen, 5 repetitions); takes several minutes",
    )
    size.add_argument(
        "--tiny",
        action="store_true",
        help="a seconds-long smoke run with toy sizes (for tests; the numbers mean nothing)",
    )
    parser.add_argument(
        "--dir",
        metavar="DIR",
        help="where to create the scratch directory (default: the system temporary "
        "directory); put it on the disk you want to measure",
    )
    parser.add_argument(
        "--json",
        metavar="FILE",
        help="also write machine-readable results (samples, medians, ratios, machine, "
        "Python and package versions) to FILE",
    )
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        help="draw the ratios and targets as a chart into FILE.png "
        "(needs matplotlib: pip install 'segmentlog[plot]')",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help="repetitions of every measurement (default: 3 quick, 5 full); the table shows medians",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="WORKLOAD",
        help="run only these groups or workloads (by id or id prefix): append, new_runs, "
        "durable, multiprocess, keyed, replay, seek, recovery, aio, or e.g. append_never, "
        "seek_1000, open_runs",
    )
    parser.add_argument(
        "--postgres",
        metavar="DSN",
        help="also measure the PostgreSQL backend (durable appends, batches, replay) against "
        "the server at DSN, e.g. 'host=/tmp dbname=postgres'; needs "
        "pip install 'segmentlog[postgres]'. It works in a scratch schema it drops afterwards",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress output on stderr",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark suite; return the process exit code (0 on success, 2 on bad usage)."""
    parser = _parser()
    args = parser.parse_args(argv)
    suite = "full" if args.full else "tiny" if args.tiny else "quick"
    sizes = SIZES[suite]
    repeat = args.repeat if args.repeat is not None else sizes.repeat
    if repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.plot and not plot_available():
        print(
            "segmentlog bench: --plot needs matplotlib, which is not installed; "
            "install it with: pip install 'segmentlog[plot]'",
            file=sys.stderr,
        )
        return 2
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="segmentlog-bench-", dir=args.dir)
    try:
        scratch = os.path.join(workdir, "scratch")
        fixtures = os.path.join(workdir, "fixtures")
        os.makedirs(scratch)
        os.makedirs(fixtures)
        groups = selected(build_suite(sizes, fixtures, args.postgres), args.only)
        if not groups:
            parser.error(f"--only matched no workload: {' '.join(args.only)}")
        start = time.perf_counter()
        # The recovery workloads make the engine log repairs on purpose; count them instead
        # of letting Python's last-resort handler print them through the progress bar.
        engine_log = logging.getLogger("segmentlog")
        captured = _CountingHandler()
        engine_log.addHandler(captured)
        tty = False if args.quiet else None
        with Progress(steps(groups, repeat), "bench", tty=tty, plain=not args.quiet) as progress:
            started = False

            def step(status: str) -> None:
                nonlocal started
                if started:
                    progress.advance()
                started = True
                progress.set_status(status)

            try:
                results = run_suite(groups, repeat, scratch, fixtures, step)
            finally:
                engine_log.removeHandler(captured)
        results["engine_log_records"] = captured.counts
        doc = document(
            results,
            suite=suite,
            sizes=dataclasses.asdict(sizes),
            repeat=repeat,
            workdir=workdir,
            elapsed=time.perf_counter() - start,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(format_table(doc))
    if args.json:
        write_json(doc, args.json)
        print(f"\nresults written to {args.json}")
    if args.plot:
        plot(doc, args.plot)
        print(f"chart written to {args.plot}")
    return 0
