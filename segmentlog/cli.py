"""The ``segmentlog`` command line (also ``python -m segmentlog``).

Strategy and invariants
- One subcommand per job: ``runs``, ``tail``, ``verify``, ``recover``, ``export``, ``import``,
  ``serve`` (whose work is in ``segmentlog.http.serve``, imported only when it runs) and
  ``bench`` (which hands every remaining argument to ``segmentlog.bench.main``).
- Exit codes: 0 success, 1 damage found, 2 usage error (bad arguments, missing or foreign
  directory, malformed or unknown run id, input that does not fit the log), 3 any other
  failure (another writer holds the lock, I/O errors, a newer on-disk format).
- Every error is one line on stderr naming the command and what to do next; a user mistake
  never prints a traceback. ``SEGMENTLOG_DEBUG=1`` re-raises unexpected errors.
- Read commands (``runs``, ``tail``, ``verify``, ``export``) open the log ``read_only``, so
  they take no lock, write nothing and never create a directory; ``recover`` refuses a
  missing directory instead of creating one. Only ``import`` may create a log.
- Envelopes travel as one JSON object per line (msgspec's encoding of ``Envelope``: the event
  carries its ``"type"`` tag), so ``export | import`` is lossless and ``tail`` feeds ``jq``.
- Output goes to the binary stdout in large writes; ``tail --follow`` flushes after every
  line so a pipe sees events as they are appended.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, NoReturn

import msgspec

from . import __version__, maintenance
from . import log as log_module
from .errors import (
    CorruptionError,
    FormatVersionError,
    LockedError,
    NotASegmentLogError,
    NotFoundError,
    SegmentLogError,
)
from .events import AgentEvent, Envelope
from .store import DEFAULT_PAGE_LIMIT

__all__ = ["EXIT_DAMAGE", "EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "main"]

#: Success.
EXIT_OK = 0
#: ``verify`` found damage; ``runs``/``tail``/``export`` met a corrupt record.
EXIT_DAMAGE = 1
#: Bad arguments, a missing or foreign directory, a malformed or unknown run id, bad input.
EXIT_USAGE = 2
#: Anything else: the lock is held, an I/O error, a newer format version.
EXIT_FAILURE = 3

#: ``verify --progress auto`` shows the bar on a terminal for stores with this many runs.
PROGRESS_MIN_RUNS = 20

_IMPORT_GROUP = 1000


class UsageError(Exception):
    """A mistake in how the command was called; printed as one line, exit code 2."""

    def __init__(self, message: str, command: str | None = None) -> None:
        super().__init__(message)
        self.command = command


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (and a hint) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)", self.prog)


# --- argument types --------------------------------------------------------------------------


def _run_id(text: str) -> uuid.UUID:
    try:
        value = uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a run id; a run id is a UUID such as "
            "0190f5e4-8a7b-7c3d-9e2f-123456789abc (list them with: segmentlog runs DIR)"
        ) from None
    return value


def _seq(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seq (a whole number >= 0)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a seq (seqs start at 1; 0 = the start)")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number >= 1")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0 to 65535)")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds > 0")
    return value


# --- the parser ------------------------------------------------------------------------------


def _build_parser() -> _Parser:
    parser = _Parser(
        prog="segmentlog",
        description="Inspect, check, repair, copy and benchmark segmentlog directories.",
        epilog="Exit codes: 0 success, 1 damage found, 2 usage error, 3 any other failure. "
        "Run 'segmentlog COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"segmentlog {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str, description: str) -> _Parser:
        p: _Parser = sub.add_parser(name, help=help_text, description=description)
        return p

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
        'run_id, session_id, event with its "type" tag, emitted_at), ready for jq. '
        "Read-only: safe beside a live writer.",
    )
    p.add_argument("dir", metavar="DIR", help="the log directory")
    p.add_argument("run_id", metavar="RUN_ID", type=_run_id, help="the run's id (a UUID)")
    p.add_argument(
        "--after",
        metavar="SEQ",
        type=_seq,
        default=0,
        help="print only envelopes with seq greater than SEQ (default 0: from the start); "
        "pass the last seq you saw to resume exactly after it",
    )
    p.add_argument(
        "--limit",
        metavar="N",
        type=_positive,
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
        "verify",
        "read and checksum every record; report damage (exit 1 if any)",
        "Read and checksum every record of every run (or of one run), changing nothing: safe "
        "beside a live writer, though a frame being written at a run's very end can show up "
        "as cut short. Prints each problem with its file, byte offset and affected seq range. "
        "Exit code 0 if clean, 1 if damage was found.",
    )
    p.add_argument("dir", metavar="DIR", help="the log directory")
    p.add_argument(
        "--run", metavar="RUN_ID", type=_run_id, help="check only this run (default: every run)"
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
        "repair a log: cut torn tails, rebuild indexes, report what was dropped",
        "The repair half of verify: keep every run's valid prefix, truncate torn or damaged "
        "tails, rebuild sparse indexes, remove leftovers of interrupted operations, and print "
        "every repair with the seq range it dropped. Refuses (exit 3) while a writer has the "
        "log open. Exit code 0 once the log is consistent (repairs are printed, not errors).",
    )
    p.add_argument("dir", metavar="DIR", help="the log directory")
    p.set_defaults(handler=_cmd_recover)

    p = command(
        "export",
        "write envelopes as JSON lines (lossless; see import)",
        "Write every envelope of the log (or of one run) to stdout, one JSON object per line, "
        "runs in id order and seqs in order. Event ids, seqs and timestamps are kept, so "
        "'segmentlog import' rebuilds the same log. Read-only.",
    )
    p.add_argument("dir", metavar="DIR", help="the log directory")
    p.add_argument(
        "--run", metavar="RUN_ID", type=_run_id, help="export only this run (default: every run)"
    )
    p.set_defaults(handler=_cmd_export)

    p = command(
        "import",
        "append exported JSON lines to a log (refuses gaps and overwrites)",
        "Read envelopes, one JSON object per line as written by 'segmentlog export', and "
        "append them unchanged (event ids, seqs and timestamps kept). Each envelope's seq "
        "must be its run's next seq: import never creates a gap or overwrites a stored seq "
        "(exit 2, nothing of the offending run group is written; groups before it stay). "
        "Creates DIR if it is missing or empty.",
    )
    p.add_argument("dir", metavar="DIR", help="the log directory (created if missing)")
    p.add_argument(
        "file",
        metavar="FILE",
        nargs="?",
        default="-",
        help="the JSON-lines file to read (default '-': standard input)",
    )
    p.set_defaults(handler=_cmd_import)

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
        "--port", type=_port, default=8000, help="TCP port (default 8000; 0 picks a free one)"
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
        type=_seconds,
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

    p = command(
        "bench",
        "measure segmentlog against SQLite and the raw floor (see 'segmentlog bench --help')",
        "Benchmark; every argument after 'bench' goes to the benchmark harness.",
    )
    p.set_defaults(handler=None)
    return parser


# --- entry point -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "bench":
        return _run_bench(args_list[1:])
    parser = _build_parser()
    command = "segmentlog"
    try:
        try:
            args = parser.parse_args(args_list)
        except SystemExit as exc:  # --help and --version
            return exc.code if isinstance(exc.code, int) else EXIT_OK
        command = f"segmentlog {args.command}"
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except UsageError as exc:
        return _fail(exc.command or command, str(exc), EXIT_USAGE)
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
    except NotFoundError as exc:
        return _fail(
            command,
            f"run {exc.run_id} has no events in {args.dir}; list the runs with: "
            f"segmentlog runs {args.dir}",
            EXIT_USAGE,
        )
    except (SegmentLogError, OSError) as exc:
        return _fail(command, _describe(exc), _exit_code(exc))
    except Exception as exc:
        if os.environ.get("SEGMENTLOG_DEBUG"):
            raise
        return _fail(
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


def _fail(command: str, message: str, code: int) -> int:
    line = " ".join(message.split())
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"{command}: error: {line}\n")
        sys.stderr.flush()
    return code


def _silence_stdout() -> None:
    # The reader went away (``segmentlog tail ... | head``). Point stdout at /dev/null so the
    # interpreter's final flush does not raise again; the documented Python idiom.
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _run_bench(argv: list[str]) -> int:
    from . import bench

    try:
        return bench.main(argv)
    except SystemExit as exc:  # argparse inside the harness: --help, or a usage error
        if exc.code is None:
            return EXIT_OK
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE


# --- shared helpers --------------------------------------------------------------------------


def _open_read(path: str) -> log_module.SegmentLog[Any]:
    return log_module.open(path, read_only=True)


class _Output:
    """Binary stdout with one large buffer; ``flush_lines`` flushes after every line."""

    def __init__(self, flush_lines: bool) -> None:
        stream: IO[bytes] | None = getattr(sys.stdout, "buffer", None)
        self._stream = stream
        self._flush_lines = flush_lines

    def line(self, data: bytes) -> None:
        if self._stream is None:
            sys.stdout.write(data.decode() + "\n")
            if self._flush_lines:
                sys.stdout.flush()
            return
        self._stream.write(data + b"\n")
        if self._flush_lines:
            self._stream.flush()

    def text(self, text: str) -> None:
        self.line(text.encode())

    def close(self) -> None:
        if self._stream is not None:
            self._stream.flush()
        else:
            sys.stdout.flush()


def _pages(
    log: log_module.SegmentLog[Any], run_id: uuid.UUID, after: int, limit: int | None
) -> Iterator[Envelope[Any]]:
    remaining = limit
    while remaining is None or remaining > 0:
        size = DEFAULT_PAGE_LIMIT if remaining is None else min(DEFAULT_PAGE_LIMIT, remaining)
        page = log.list_after(run_id, after, size)
        if not page:
            return
        yield from page
        after = page[-1].seq
        if remaining is not None:
            remaining -= len(page)


# --- runs ------------------------------------------------------------------------------------


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _cmd_runs(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    damaged: list[tuple[uuid.UUID, CorruptionError]] = []
    now = time.time()
    with _open_read(args.dir) as log:
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
    out = _Output(flush_lines=False)
    if args.json:
        public = [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]
        out.line(msgspec.json.encode(public))
    else:
        table = [["RUN_ID", "EVENTS", "FIRST", "LAST", "BYTES", "SEGS", "SESSION", "STATE", "AGE"]]
        for row in rows:
            table.append(
                [
                    str(row["run_id"]),
                    str(row["events"]),
                    "-" if row["first_seq"] is None else str(row["first_seq"]),
                    "-" if row["last_seq"] is None else str(row["last_seq"]),
                    str(row["bytes"]),
                    str(row["segments"]),
                    "-" if row["session_id"] is None else str(row["session_id"]),
                    row["_state"],
                    row["_age"],
                ]
            )
        for rid, _ in damaged:
            table.append([str(rid), "?", "?", "?", "?", "?", "?", "DAMAGED", "?"])
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        for r in table:
            out.text("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    out.close()
    for rid, damage in damaged:
        _fail("segmentlog runs", f"run {rid} is damaged: {damage}", EXIT_DAMAGE)
    return EXIT_DAMAGE if damaged else EXIT_OK


# --- tail ------------------------------------------------------------------------------------


def _cmd_tail(args: argparse.Namespace) -> int:
    encode = msgspec.json.Encoder().encode
    out = _Output(flush_lines=args.follow)
    try:
        with _open_read(args.dir) as log:
            if args.follow:
                for printed, env in enumerate(log.subscribe(args.run_id, args.after), 1):
                    out.line(encode(env))
                    if args.limit is not None and printed >= args.limit:
                        break
            else:
                for env in _pages(log, args.run_id, args.after, args.limit):
                    out.line(encode(env))
    finally:
        out.close()
    return EXIT_OK


# --- verify ----------------------------------------------------------------------------------


def _cmd_verify(args: argparse.Namespace) -> int:
    with _open_read(args.dir) as log:
        total = 1 if args.run is not None else len(log.runs())
    stream = sys.stderr
    show = args.progress == "always" or (
        args.progress == "auto" and total >= PROGRESS_MIN_RUNS and _isatty(stream)
    )
    progress = None
    if show:
        from ._progress import Progress  # tqdm takes ~25 ms to import: only when shown

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
    out = _Output(flush_lines=False)
    for problem in problems:
        out.text(str(problem))
    scope = f"run {args.run}" if args.run is not None else f"{total} run(s)"
    if problems:
        runs = len({p.run_id for p in problems})
        out.text(f"damage found: {len(problems)} problem(s) in {runs} run(s) of {scope} checked")
        out.text("run 'segmentlog recover DIR' (with no writer running) to keep the valid prefix")
    else:
        out.text(f"ok: {scope} checked, no damage found")
    out.close()
    return EXIT_DAMAGE if problems else EXIT_OK


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


# --- recover ---------------------------------------------------------------------------------


def _cmd_recover(args: argparse.Namespace) -> int:
    # recover opens the log for writing; check first so that a typo never creates a directory.
    with _open_read(args.dir):
        pass
    reports = maintenance.recover(args.dir)
    out = _Output(flush_lines=False)
    for r in reports:
        span = ""
        if r.first_seq is not None:
            last = "" if r.last_seq is None else str(r.last_seq)
            span = (
                f", dropped seqs {r.first_seq}..{last}"
                if last != str(r.first_seq)
                else (f", dropped seq {r.first_seq}")
            )
        dropped = f", {r.bytes_dropped} bytes dropped" if r.bytes_dropped else ""
        out.text(f"{r.action}: {r.path}: offset {r.offset}: {r.reason}{dropped}{span}")
    if reports:
        out.text(f"recovered: {len(reports)} repair(s) made; the log is consistent")
    else:
        out.text("ok: nothing to repair")
    out.close()
    return EXIT_OK


# --- serve -----------------------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from .http.serve import serve
    except ImportError as exc:
        return _fail("segmentlog serve", str(exc), EXIT_FAILURE)
    serve(
        args.dir,
        host=args.host,
        port=args.port,
        token=args.token,
        heartbeat=args.heartbeat,
        allow_hosts=args.allow_host,
    )
    return EXIT_OK


# --- export / import -------------------------------------------------------------------------


def _cmd_export(args: argparse.Namespace) -> int:
    encode = msgspec.json.Encoder().encode
    out = _Output(flush_lines=False)
    try:
        with _open_read(args.dir) as log:
            if args.run is not None:
                for env in _pages(log, args.run, 0, None):
                    out.line(encode(env))
                return EXIT_OK
            for rid in log.runs():
                try:
                    for env in _pages(log, rid, 0, None):
                        out.line(encode(env))
                except NotFoundError:
                    continue  # a run directory without events: nothing to export
    finally:
        out.close()
    return EXIT_OK


def _read_envelopes(stream: IO[bytes]) -> Iterator[tuple[int, Envelope[Any]]]:
    decoder = msgspec.json.Decoder(Envelope[AgentEvent])
    for number, raw in enumerate(stream, 1):
        line = raw.strip()
        if not line:
            continue
        try:
            yield number, decoder.decode(line)
        except msgspec.DecodeError as exc:
            raise UsageError(
                f"line {number}: not an envelope as written by 'segmentlog export' ({exc})"
            ) from None


def _import_groups(
    envelopes: Iterator[tuple[int, Envelope[Any]]],
) -> Iterator[list[tuple[int, Envelope[Any]]]]:
    group: list[tuple[int, Envelope[Any]]] = []
    for item in envelopes:
        if group and (item[1].run_id != group[-1][1].run_id or len(group) >= _IMPORT_GROUP):
            yield group
            group = []
        group.append(item)
    if group:
        yield group


def _cmd_import(args: argparse.Namespace) -> int:
    if args.file == "-":
        stream: IO[bytes] = sys.stdin.buffer
        close = False
    else:
        try:
            stream = open(args.file, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise UsageError(f"{args.file}: no such file") from None
        close = True
    imported = 0
    try:
        with log_module.open(args.dir) as log:
            for group in _import_groups(_read_envelopes(stream)):
                try:
                    imported += log.import_envelopes([env for _, env in group])
                except ValueError as exc:
                    raise UsageError(f"lines {group[0][0]}-{group[-1][0]}: {exc}") from None
    except UsageError as exc:
        raise UsageError(f"{exc}; {imported} envelope(s) before it were imported") from None
    finally:
        if close:
            stream.close()
    sys.stderr.write(f"imported {imported} envelope(s) into {args.dir}\n")
    return EXIT_OK
