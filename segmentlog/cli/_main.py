"""The parser and ``main``: arguments in, one handler called, errors out as one line.

Strategy and invariants
- The top-level parser knows only the commands' names; each command group module
  (``_read``, ``_repair``, ``_copy``, ``_serve``) registers its own subcommands, options
  and help text beside the code that runs them.
- ``bench`` is dispatched before argparse sees it: every argument after it belongs to
  ``segmentlog.bench.main``, which has its own parser (and is imported only then).
- Errors become one line and an exit code here, and only here (``_exit_code``). The
  engine's log records are dropped (the commands print what they did), unless
  ``SEGMENTLOG_DEBUG`` is set.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from .._build import version_text
from ..errors import (
    CorruptionError,
    FormatVersionError,
    LockedError,
    NotASegmentLogError,
    NotFoundError,
    SegmentLogError,
)
from . import _copy, _read, _repair, _serve
from ._common import (
    EXIT_DAMAGE,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    Parser,
    UsageError,
    fail,
    silence_stdout,
)

__all__ = ["build_parser", "main"]


def build_parser() -> Parser:
    """The whole command line's parser."""
    parser = Parser(
        prog="segmentlog",
        description="Inspect, check, repair, copy and benchmark segmentlog directories.",
        epilog="Exit codes: 0 success, 1 damage found, 2 usage error, 3 any other failure. "
        "Run 'segmentlog COMMAND --help' for a command's options.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=version_text(),
        help="print the version, the code path that runs (native or pure-Python) and how "
        "fsyncs are made durable on this platform, then exit",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str, description: str) -> Parser:
        p: Parser = sub.add_parser(name, help=help_text, description=description)
        return p

    _read.register(command)
    _repair.register(command)
    _copy.register(command)
    _serve.register(command)
    p = command(
        "bench",
        "measure segmentlog against SQLite and the raw floor (see 'segmentlog bench --help')",
        "Benchmark; every argument after 'bench' goes to the benchmark harness.",
    )
    p.set_defaults(handler=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "bench":
        return _run_bench(args_list[1:])
    if not os.environ.get("SEGMENTLOG_DEBUG"):
        # The commands print every repair themselves (on stdout); the engine's log records of
        # the same acts would reach stderr through Python's last-resort handler, line by line.
        logging.getLogger("segmentlog").addHandler(logging.NullHandler())
    parser = build_parser()
    command = "segmentlog"
    args = argparse.Namespace(dir="DIR")
    try:
        try:
            args = parser.parse_args(args_list)
        except SystemExit as exc:  # --help and --version
            return exc.code if isinstance(exc.code, int) else EXIT_OK
        command = f"segmentlog {args.command}"
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except UsageError as exc:
        return fail(exc.command or command, str(exc), EXIT_USAGE)
    except BrokenPipeError:
        silence_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
    except NotFoundError as exc:
        return fail(
            command,
            f"run {exc.run_id} has no events in {args.dir}; list the runs with: "
            f"segmentlog runs {args.dir}",
            EXIT_USAGE,
        )
    except (SegmentLogError, OSError) as exc:
        return fail(command, _describe(exc), _exit_code(exc))
    except Exception as exc:
        if os.environ.get("SEGMENTLOG_DEBUG"):
            raise
        return fail(
            command,
            f"unexpected {type(exc).__name__}: {exc} (a bug; rerun with SEGMENTLOG_DEBUG=1 "
            "for a traceback and report it)",
            EXIT_FAILURE,
        )


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, CorruptionError):
        return EXIT_DAMAGE
    if isinstance(exc, NotASegmentLogError | NotFoundError):
        return EXIT_USAGE
    if isinstance(exc, LockedError | FormatVersionError):
        return EXIT_FAILURE
    return EXIT_FAILURE


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return str(exc)


def _run_bench(argv: list[str]) -> int:
    from .. import bench

    try:
        return bench.main(argv)
    except SystemExit as exc:  # argparse inside the harness: --help, or a usage error
        if exc.code is None:
            return EXIT_OK
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
