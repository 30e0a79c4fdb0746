"""``segmentlog runs`` and ``tail``: looking at a log, read-only.

Strategy and invariants
- Each opens the log ``read_only``: no lock, nothing written, no directory created, safe
  beside a live writer in another process.
- ``runs`` prints a table through the one column formatter (``segmentlog._table``), or JSON;
  a damaged run is a row marked DAMAGED plus a one-line error, and exit code 1.
- ``tail`` prints envelopes as ``export`` does, one JSON object per line; ``--follow`` flushes
  after every line and returns after the run's terminal event.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from .._table import columns
from ..errors import CorruptionError, NotFoundError
from ._common import (
    EXIT_DAMAGE,
    EXIT_OK,
    Output,
    Parser,
    fail,
    open_read,
    pages,
    positive,
    run_id,
    seq,
)

__all__ = ["register"]

RUNS_HEADER = ["RUN_ID", "EVENTS", "FIRST", "LAST", "BYTES", "SEGS", "SESSION", "STATE", "AGE"]


def register(command: Callable[[str, str, str], Parser]) -> None:
    """Add ``runs`` and ``tail`` to the command line."""
    p = command(
        "runs",
        "list the runs of a log, one row per run",
        "List every run of the log at DIR: run id, number of events, first and last seq, "
        "bytes on disk, segment files, session id, state (finished once the run's terminal "
        "event is stored) and age (time since its last write). Read-only.",
    )
    p.add_argument("dir", metavar="DIR", help="the log directory")
    p.add_argument(
        "--json",
        action="store_true",
        help="print a JSON array of objects with keys run_id, events, first_seq, last_seq, "
        "bytes, segments, session_id, terminal",
    )
    p.set_defaults(handler=_cmd_runs)

    p = command(
        "tail",
        "print a run's envelopes as JSON lines (optionally following new ones)",
        "Print the envelopes of run RUN_ID, one JSON object per line (keys event_id, seq, "
        'run_id, session_id, event with its "type" tag, emitted_at, and key when the event '
        "was appended with one), ready for jq. Read-only: safe beside a live writer.",
    )
    p.add_argument("dir", metavar="DIR", help="the log directory")
    p.add_argument("run_id", metavar="RUN_ID", type=run_id, help="the run's id (a UUID)")
    p.add_argument(
        "--after",
        metavar="SEQ",
        type=seq,
        default=0,
        help="print only envelopes with seq greater than SEQ (default 0: from the start); "
        "pass the last seq you saw to resume exactly after it",
    )
    p.add_argument(
        "--limit",
        metavar="N",
        type=positive,
        default=None,
        help="stop after printing N envelopes (default: no limit)",
    )
    p.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="after the stored envelopes, keep printing new ones as a writer (in any process) "
        "appends them; exit after the run's terminal event (RunCompleted, RunFailed, "
        "RunCancelled). Waits for the run if it has no events yet",
    )
    p.set_defaults(handler=_cmd_tail)


# --- runs --------------------------------------------------------------------------------


def _age(secs: float) -> str:
    secs = max(0.0, secs)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{int(secs // size)}{unit}"
    return f"{int(secs)}s"


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


def _cmd_runs(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    damaged: list[tuple[uuid.UUID, CorruptionError]] = []
    now = time.time()
    with open_read(args.dir) as log:
        for rid in log.runs():
            try:
                info = log.run_info(rid)
            except NotFoundError:
                rows.append(
                    {
                        "run_id": rid,
                        "events": 0,
                        "first_seq": None,
                        "last_seq": None,
                        "bytes": 0,
                        "segments": 0,
                        "session_id": None,
                        "terminal": False,
                        "_state": "empty",
                        "_age": "-",
                    }
                )
                continue
            except CorruptionError as exc:
                damaged.append((rid, exc))
                continue
            rows.append(
                {
                    "run_id": info.run_id,
                    "events": info.events,
                    "first_seq": info.first_seq,
                    "last_seq": info.last_seq,
                    "bytes": info.bytes,
                    "segments": info.segments,
                    "session_id": info.session_id,
                    "terminal": info.terminal,
                    "_state": "finished" if info.terminal else "open",
                    "_age": _age(now - info.mtime),
                }
            )
    out = Output()
    if args.json:
        public = [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]
        out.line(msgspec.json.encode(public))
    else:
        table = [
            [
                str(row["run_id"]),
                str(row["events"]),
                _dash(row["first_seq"]),
                _dash(row["last_seq"]),
                str(row["bytes"]),
                str(row["segments"]),
                _dash(row["session_id"]),
                row["_state"],
                row["_age"],
            ]
            for row in rows
        ]
        table += [[str(rid), "?", "?", "?", "?", "?", "?", "DAMAGED", "?"] for rid, _ in damaged]
        for line in columns(table, RUNS_HEADER):
            out.text(line)
    out.close()
    for rid, damage in damaged:
        fail("segmentlog runs", f"run {rid} is damaged: {damage}", EXIT_DAMAGE)
    return EXIT_DAMAGE if damaged else EXIT_OK


# --- tail --------------------------------------------------------------------------------


def _cmd_tail(args: argparse.Namespace) -> int:
    encode = msgspec.json.Encoder().encode
    out = Output(flush_lines=args.follow)
    try:
        with open_read(args.dir) as log:
            if args.follow:
                for printed, env in enumerate(log.subscribe(args.run_id, args.after), 1):
                    out.line(encode(env))
                    if args.limit is not None and printed >= args.limit:
                        break
            else:
                for env in pages(log, args.run_id, args.after, args.limit):
                    out.line(encode(env))
    finally:
        out.close()
    return EXIT_OK
