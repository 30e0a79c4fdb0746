"""``segmentlog serve``: the log over HTTP (the work is in ``segmentlog.http.serve``).

Strategy and invariants
- The http extra is imported only when the command runs, so the rest of the command line
  works without it; its absence is a one-line error naming the extra to install.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from ._common import EXIT_FAILURE, EXIT_OK, Parser, fail, port, seconds

__all__ = ["register"]


def register(command: Callable[[str, str, str], Parser]) -> None:
    """Add ``serve`` to the command line."""
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
