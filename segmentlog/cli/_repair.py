"""``segmentlog verify``, ``recover`` and ``quarantine``: check, repair, and what repair kept.

Strategy and invariants
- ``verify`` reads and checksums everything and changes nothing; it also lists what
  quarantine holds, one line per file, which is not damage: a log whose live runs are clean
  exits 0 however much quarantine holds.
- ``recover`` is the repair half (``maintenance.recover``): it prints every act, and for each
  cut or moved range where the bytes were kept. ``recover --dry-run`` prints the same acts as
  "would ..." and changes nothing: no lock file, no directory, no byte.
- Quarantine is only ever deleted by ``quarantine purge``, and it prints what it removed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .. import maintenance
from ..maintenance import QuarantineEntry
from ..repair import RecoveryReport
from ._common import (
    EXIT_DAMAGE,
    EXIT_OK,
    Output,
    Parser,
    duration,
    isatty,
    open_read,
    run_id,
)

__all__ = ["PROGRESS_MIN_RUNS", "register"]

#: ``verify --progress auto`` shows the bar on a terminal for stores with this many runs.
PROGRESS_MIN_RUNS = 20

_WOULD = {
    "truncated": "would truncate",
    "quarantined": "would quarantine",
    "removed": "would remove",
    "index_rebuilt": "would rebuild index",
}


def register(command: Callable[[str, str, str], Parser]) -> None:
    """Add ``verify``, ``recover`` and ``quarantine`` to the command line."""
    p = command(
        "verify",
        "read and checksum every record; report damage (exit 1 if any) and quarantine",
        "Read and checksum every record of every run (or of one run), changing nothing: safe "
        "beside a live writer, though a frame being written at a run's very end can show up "
        "as cut short. Prints each problem with its file, byte offset and affected seq range, "
        "then one line per file held in quarantine (what recover cut or moved aside; not "
        "damage). Exit code 0 if the live runs are clean, 1 if damage was found.",
    )
    p.add_argument("dir", metavar="DIR", help="the log directory")
    p.add_argument(
        "--run", metavar="RUN_ID", type=run_id, help="check only this run (default: every run)"
    )
    p.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help=f"progress bar on stderr: 'auto' shows it on a terminal for stores of "
        f"{PROGRESS_MIN_RUNS} runs or more, 'always' also off a terminal (plain lines), "
        "'never' hides it (default: auto)",
    )
    p.set_defaults(handler=_cmd_verify)

    p = command(
        "recover",
        "repair a log: cut torn tails, quarantine damage, rebuild indexes, report it all",
        "The repair half of verify: keep every run's valid prefix, truncate torn tails, move "
        "damaged bytes and everything after them into quarantine (never deleted; see "
        "salvage-export and quarantine purge), rebuild sparse indexes, remove leftovers of "
        "interrupted operations, and print every repair with the seq range it dropped and "
        "where the bytes were kept. Refuses (exit 3) while a writer has the log open. Exit "
        "code 0 once the log is consistent (repairs are printed, not errors).",
    )
    p.add_argument("dir", metavar="DIR", help="the log directory")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print what recover would cut, move or rebuild, and change nothing at all (no "
        "lock taken, no file written); exit 1 if it would repair anything, 0 if not",
    )
    p.set_defaults(handler=_cmd_recover)

    p = command(
        "quarantine",
        "list or purge what recover kept aside",
        "Quarantine holds the bytes recover cut or moved out of the live runs, under "
        "DIR/quarantine/RUN_ID/TIME/. Nothing deletes it but 'quarantine purge'.",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = sub.add_parser(
        "list",
        help="one line per quarantined file",
        description="Print one line per file held in quarantine: path, seqs of the records "
        "in it that still verify, bytes, and when it was quarantined. Read-only.",
    )
    q.add_argument("dir", metavar="DIR", help="the log directory")
    q.add_argument(
        "--run", metavar="RUN_ID", type=run_id, help="only this run's files (default: all)"
    )
    q.set_defaults(handler=_cmd_quarantine_list)
    q = sub.add_parser(
        "purge",
        help="delete quarantined files (all, or those older than a duration)",
        description="Delete quarantined files for good and print each one removed. Read "
        "what you need first: segmentlog salvage-export DIR.",
    )
    q.add_argument("dir", metavar="DIR", help="the log directory")
    q.add_argument(
        "--older-than",
        metavar="DURATION",
        type=duration,
        default=None,
        help="remove only files quarantined longer ago than DURATION: seconds (3600) or a "
        "number with a unit s, m, h or d (90m, 12h, 7d); default: remove everything",
    )
    q.set_defaults(handler=_cmd_quarantine_purge)


# --- verify ------------------------------------------------------------------------------


def _cmd_verify(args: argparse.Namespace) -> int:
    with open_read(args.dir) as log:
        total = 1 if args.run is not None else len(log.runs())
    stream = sys.stderr
    show = args.progress == "always" or (
        args.progress == "auto" and total >= PROGRESS_MIN_RUNS and isatty(stream)
    )
    progress = None
    if show:
        from .._progress import Progress  # tqdm takes ~25 ms to import: only when shown

        progress = Progress(total, "verify", stream=stream, plain=show)
    done = 0

    def advance(checked: int) -> None:
        nonlocal done
        if progress is not None:
            progress.advance(checked - done)
        done = checked

    try:
        problems = maintenance.verify(args.dir, args.run, progress=advance)
    finally:
        if progress is not None:
            progress.close()
    held = maintenance.quarantined(args.dir, args.run)
    out = Output()
    for problem in problems:
        out.text(str(problem))
    for entry in held:
        out.text(f"quarantined: {entry}")
    scope = f"run {args.run}" if args.run is not None else f"{total} run(s)"
    if problems:
        runs = len({p.run_id for p in problems})
        out.text(f"damage found: {len(problems)} problem(s) in {runs} run(s) of {scope} checked")
        out.text("run 'segmentlog recover DIR' (with no writer running) to keep the valid prefix")
    else:
        out.text(f"ok: {scope} checked, no damage found")
    if held:
        out.text(_held_summary(held))
    out.close()
    return EXIT_DAMAGE if problems else EXIT_OK


def _held_summary(held: list[QuarantineEntry]) -> str:
    records = sum(e.records for e in held)
    size = sum(e.bytes for e in held)
    return (
        f"quarantine holds {len(held)} file(s), {records} record(s) that still verify, "
        f"{size} bytes: read them with 'segmentlog salvage-export DIR', delete them with "
        "'segmentlog quarantine purge DIR'"
    )


# --- recover -----------------------------------------------------------------------------


def describe_report(r: RecoveryReport, dry_run: bool = False) -> str:
    """One line for one act of recovery (or, with ``dry_run``, one it would make)."""
    span = ""
    if r.first_seq is not None:
        if r.last_seq is None:
            span = f", dropped seqs {r.first_seq}.."
        elif r.last_seq != r.first_seq:
            span = f", dropped seqs {r.first_seq}..{r.last_seq}"
        else:
            span = f", dropped seq {r.first_seq}"
    dropped = f", {r.bytes_dropped} bytes dropped" if r.bytes_dropped else ""
    kept = f", kept in {r.quarantine}" if r.quarantine else ""
    action = _WOULD.get(r.action, f"would {r.action}") if dry_run else r.action
    return f"{action}: {r.path}: offset {r.offset}: {r.reason}{dropped}{span}{kept}"


def _cmd_recover(args: argparse.Namespace) -> int:
    # recover opens the log for writing; check first so that a typo never creates a directory.
    with open_read(args.dir):
        pass
    reports = maintenance.recover(args.dir, dry_run=args.dry_run)
    out = Output()
    for r in reports:
        out.text(describe_report(r, args.dry_run))
    if not reports:
        out.text("ok: nothing to repair")
    elif args.dry_run:
        out.text(f"dry run: {len(reports)} repair(s) would be made; nothing was changed")
    else:
        out.text(f"recovered: {len(reports)} repair(s) made; the log is consistent")
        if any(r.quarantine for r in reports):
            out.text(
                "the dropped records are in quarantine: read them with "
                "'segmentlog salvage-export DIR'"
            )
    out.close()
    return EXIT_DAMAGE if args.dry_run and reports else EXIT_OK


# --- quarantine --------------------------------------------------------------------------


def _cmd_quarantine_list(args: argparse.Namespace) -> int:
    with open_read(args.dir):
        pass
    held = maintenance.quarantined(args.dir, args.run)
    out = Output()
    for entry in held:
        out.text(str(entry))
    out.text(_held_summary(held) if held else "quarantine is empty")
    out.close()
    return EXIT_OK


def _cmd_quarantine_purge(args: argparse.Namespace) -> int:
    with open_read(args.dir):
        pass
    gone = maintenance.purge_quarantine(args.dir, older_than=args.older_than)
    out = Output()
    for entry in gone:
        out.text(f"removed: {entry}")
    if gone:
        size = sum(e.bytes for e in gone)
        out.text(f"purged {len(gone)} file(s), {size} bytes")
    else:
        scope = "" if args.older_than is None else " older than the given duration"
        out.text(f"nothing to purge: quarantine holds no file{scope}")
    out.close()
    return EXIT_OK
