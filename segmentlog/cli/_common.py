"""What every command shares: exit codes, the one-line errors, argument types and output.

Strategy and invariants
- A user mistake raises ``UsageError`` (exit 2); ``cli._main`` turns every error into one line
  on stderr, ``segmentlog COMMAND: error: ...``, and an exit code.
- Argument types raise ``argparse.ArgumentTypeError`` with a message that says what was
  expected, so argparse's own error line is already the whole explanation.
- Output goes to the binary stdout in large writes (``Output``); ``flush_lines`` is for
  ``tail --follow``, whose reader must see each event as it is appended.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import uuid
from collections.abc import Iterator
from typing import IO, Any, NoReturn

from .. import log as log_module
from ..events import Envelope
from ..store import DEFAULT_PAGE_LIMIT

__all__ = [
    "EXIT_DAMAGE",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "Output",
    "Parser",
    "UsageError",
    "duration",
    "fail",
    "isatty",
    "note",
    "open_read",
    "pages",
    "port",
    "positive",
    "run_id",
    "seconds",
    "seq",
    "silence_stdout",
]

#: Success.
EXIT_OK = 0
#: ``verify`` found damage; ``runs``/``tail``/``export`` met a corrupt record.
EXIT_DAMAGE = 1
#: Bad arguments, a missing or foreign directory, a malformed or unknown run id, bad input.
EXIT_USAGE = 2
#: Anything else: the lock is held, an I/O error, a newer format version.
EXIT_FAILURE = 3


class UsageError(Exception):
    """A mistake in how the command was called; printed as one line, exit code 2."""

    def __init__(self, message: str, command: str | None = None) -> None:
        super().__init__(message)
        self.command = command


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (and a hint) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)", self.prog)


def fail(command: str, message: str, code: int) -> int:
    """Print ``message`` as one line on stderr, naming the command; return ``code``."""
    line = " ".join(message.split())
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"{command}: error: {line}\n")
        sys.stderr.flush()
    return code


def note(text: str) -> None:
    """A one-line remark on stderr (counts, what was skipped); never fails the command."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


# --- argument types ----------------------------------------------------------------------


def run_id(text: str) -> uuid.UUID:
    """A run id argument: a UUID."""
    try:
        value = uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a run id; a run id is a UUID such as "
            "0190f5e4-8a7b-7c3d-9e2f-123456789abc (list them with: segmentlog runs DIR)"
        ) from None
    return value


def seq(text: str) -> int:
    """A seq argument: a whole number >= 0 (0 is the start of a run)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seq (a whole number >= 0)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a seq (seqs start at 1; 0 = the start)")
    return value


def positive(text: str) -> int:
    """A whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number >= 1")
    return value


def port(text: str) -> int:
    """A TCP port, 0 to 65535."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0 to 65535)")
    return int(text)


def seconds(text: str) -> float:
    """A number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds > 0")
    return value


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """A duration: seconds (``3600``) or a number with a unit ``s``, ``m``, ``h`` or ``d``
    (``90m``, ``12h``, ``7d``). Returns seconds."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration; give seconds (3600) or a number with a unit "
            "s, m, h or d (90m, 12h, 7d)"
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


# --- reading a log -----------------------------------------------------------------------


def open_read(path: str) -> log_module.SegmentLog[Any]:
    """Open ``path`` read-only: no lock, no writes, never creates a directory."""
    return log_module.open(path, read_only=True)


def pages(
    log: log_module.SegmentLog[Any], rid: uuid.UUID, after: int, limit: int | None
) -> Iterator[Envelope[Any]]:
    """The run's envelopes after ``after``, at most ``limit``, read page by page."""
    remaining = limit
    while remaining is None or remaining > 0:
        size = DEFAULT_PAGE_LIMIT if remaining is None else min(DEFAULT_PAGE_LIMIT, remaining)
        page = log.list_after(rid, after, size)
        if not page:
            return
        yield from page
        after = page[-1].seq
        if remaining is not None:
            remaining -= len(page)


def isatty(stream: Any) -> bool:
    """True when ``stream`` is a terminal (False for anything that cannot say)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class Output:
    """Binary stdout with one large buffer; ``flush_lines`` flushes after every line."""

    def __init__(self, flush_lines: bool = False) -> None:
        stream: IO[bytes] | None = getattr(sys.stdout, "buffer", None)
        self._stream = stream
        self._flush_lines = flush_lines

    def line(self, data: bytes) -> None:
        """Write ``data`` and a newline."""
        if self._stream is None:
            sys.stdout.write(data.decode() + "\n")
            if self._flush_lines:
                sys.stdout.flush()
            return
        self._stream.write(data + b"\n")
        if self._flush_lines:
            self._stream.flush()

    def text(self, text: str) -> None:
        """Write ``text`` and a newline."""
        self.line(text.encode())

    def close(self) -> None:
        """Flush what is buffered."""
        if self._stream is not None:
            self._stream.flush()
        else:
            sys.stdout.flush()


def silence_stdout() -> None:
    """Point stdout at /dev/null after the reader went away (``... | head``), so the
    interpreter's final flush does not raise again; the documented Python idiom."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
