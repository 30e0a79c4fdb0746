"""``segmentlog runs``, ``tail`` and ``serve``: looking at a log, read-only.

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
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from .._table import columns
from ..errors import CorruptionError, NotFoundError
from ._common import (
    EXIT_DAMAGE,
    EXIT_FAILURE,
    EXIT_OK,
    Output,
    Parser,
    fail,
    open_read,
    pages,
    port,
    positive,
    run_id,
    seconds,
    seq,
)

__all__ = ["register"]

RUNS_HEADER = ["RUN_ID", "EVENTS", "FIRST", "LAST", "BYTES", "SEGS", "SESSION", "STATE", "AGE"]


def register(command: Callable[[str, str, str], Parser]) -> None:
    """Add ``runs``, ``tail`` and ``serve`` to the command line."""
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

    p = command(
        "serve",
        "watch runs live over HTTP: JSON API, server-sent events and a browser viewer",
        "Serve the log at DIR over HTTP (read-only, safe beside a live writer): GET /runs, "
        "/runs/RUN_ID, /runs/RUN_ID/events, /runs/RUN_ID/stream (server-sent events that "
        "resume from Last-Event-ID) and a live viewer at /. Needs the http extra: "
        "pip install 'segmentlog[http]'. Stops on Ctrl+C or SIGTERM.",
    )
    p.add_argument("dir", metavar="DIR", help="the log directory")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    p.add_argument(
        "--port", type=port, default=8000, help="TCP port (default 8000; 0 picks a free one)"
    )
    p.add_argument(
        "--token",
        default=os.environ.get("SEGMENTLOG_TOKEN") or None,
        help="require this token on every request, as 'Authorization: Bearer TOKEN' or "
        "?token=TOKEN (open the viewer as /?token=TOKEN); default: $SEGMENTLOG_TOKEN, "
        "else no token",
    )
    p.add_argument(
        "--heartbeat",
        metavar="SECONDS",
        type=seconds,
        default=15.0,
        help="seconds between keep-alive comments on idle streams (default 15)",
    )
    p.add_argument(
        "--allow-host",
        metavar="NAME",
        action="append",
        default=[],
        help="on a loopback address, also answer requests for Host NAME (repeatable; "
        "e.g. the name a reverse proxy forwards); others get 400",
    )
    p.set_defaults(handler=_cmd_serve)


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


# --- serve -------------------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from ..http.serve import serve
    except ImportError as exc:
        return fail("segmentlog serve", str(exc), EXIT_FAILURE)
    serve(
        args.dir,
        host=args.host,
        port=args.port,
        token=args.token,
        heartbeat=args.heartbeat,
        allow_hosts=args.allow_host,
    )
    return EXIT_OK
