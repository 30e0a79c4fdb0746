"""The progress bar of long commands (``segmentlog bench``, ``verify``), drawn by tqdm.

Strategy and invariants
- tqdm draws and times the bar (rate, ETA, in-place redraws); this module only keeps the
  command line's policy, which tqdm does not have, behind the small API the commands use.
- Output goes to a text stream (stderr by default), never stdout, so a command's real output
  can be piped while the bar is shown.
- On a TTY the bar redraws one line in place at most every ``min_interval`` seconds (tqdm's
  ``mininterval``), and the line is ended with a newline when the bar closes.
- Anywhere else (a pipe, a log file, CI) ``\\r`` would pile up as garbage, so the bar prints a
  whole line only when a tenth of the work (tqdm's ``miniters``) or ``plain_interval`` seconds
  have passed, and a final line at close unless that state was just printed; ``plain=False``
  silences it completely off a TTY. Those lines use ASCII bars (log viewers vary).
- The bar never raises on a broken stream: progress is decoration, not the job. The stream is
  wrapped so that a failed write silences the bar instead.
- Rejected: keeping the hand-written renderer. It duplicated what tqdm, small and well kept,
  already does (and does better: ETA, rate, terminal width).
"""

from __future__ import annotations

import math
import sys
import time
from types import TracebackType
from typing import Any, TextIO

from tqdm import tqdm

__all__ = ["Progress"]


class _Guarded:
    """The stream the bar writes to; a write or flush that fails silences the bar."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.broken = False

    def write(self, text: str) -> None:
        if self.broken:
            return
        try:
            self._stream.write(text)
        except (OSError, ValueError):
            self.broken = True

    def flush(self) -> None:
        if self.broken:
            return
        try:
            self._stream.flush()
        except (OSError, ValueError):
            self.broken = True

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty: tqdm asks for them
        return getattr(self._stream, name)


class _InPlace(tqdm):  # type: ignore[type-arg]
    """tqdm as it is, noting when it last drew (for ``set_status``)."""

    shown_at = 0.0

    def display(self, msg: str | None = None, pos: int | None = None) -> None:
        self.shown_at = time.monotonic()
        super().display(msg, pos)


class _Lines(_InPlace):
    """tqdm printing whole lines instead of redrawing one with ``\\r``."""

    shown_n: float = -1

    def display(self, msg: str | None = None, pos: int | None = None) -> None:
        if msg == "":  # tqdm clearing the line: nothing to clear in line mode
            return
        self.shown_at = time.monotonic()
        self.shown_n = self.n
        self.fp.write((str(self) if msg is None else msg) + "\n")
        self.fp.flush()

    def close(self) -> None:
        if not self.disable and self.n != self.shown_n:
            self.display()
        super().close()  # leave=False: tqdm only asks display() to clear


class Progress:
    """Shows how much of ``total`` units of work is done.

    Use it as a context manager::

        with Progress(total=120, label="bench") as p:
            for step in steps:
                p.set_status(step.name)
                step.run()
                p.advance()

    Parameters:
        total: the number of units the job has (a total of 0 shows only counts).
        label: a short word printed before the bar.
        stream: where to write; defaults to ``sys.stderr``.
        tty: force TTY (in-place) or plain mode; ``None`` asks ``stream.isatty()``.
        plain: off a TTY, print occasional plain lines (``True``) or nothing (``False``).
        min_interval: seconds between in-place redraws on a TTY.
        plain_interval: longest gap in seconds between plain lines while work advances.
    """

    def __init__(
        self,
        total: int,
        label: str = "",
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        plain: bool = True,
        min_interval: float = 0.1,
        plain_interval: float = 10.0,
    ) -> None:
        self.total = max(0, total)
        self.label = label
        self.status = ""
        self._stream = _Guarded(stream if stream is not None else sys.stderr)
        if tty is None:
            try:
                tty = bool(self._stream.isatty())
            except (AttributeError, ValueError, OSError):
                tty = False
        self._tty = tty
        self._min_interval = min_interval
        self._plain_interval = plain_interval
        options: dict[str, Any] = {
            "total": self.total or None,
            "desc": label or None,
            "file": self._stream,
            "disable": not (tty or plain),
        }
        if tty:
            self._bar: _InPlace = _InPlace(mininterval=min_interval, leave=True, **options)
        else:
            tenth = math.ceil(self.total / 10) if self.total else 1
            self._bar = _Lines(miniters=tenth, mininterval=0, leave=False, ascii=True, **options)
        self._closed = False

    @property
    def done(self) -> int:
        """Units done so far."""
        return int(self._bar.n)

    # --- public API ------------------------------------------------------------------------

    def advance(self, n: int = 1) -> None:
        """Mark ``n`` more units done and redraw if it is time to."""
        if self._closed:
            return
        bar = self._bar
        if bar.update(n) or self._tty or bar.disable:
            return
        if time.monotonic() - bar.shown_at >= self._plain_interval:
            bar.refresh()  # slow work: a line every plain_interval even within a tenth

    def set_status(self, status: str) -> None:
        """Show ``status`` (e.g. the step in progress) after the bar."""
        if self._closed:
            return
        self.status = status
        bar = self._bar
        bar.set_postfix_str(status, refresh=False)
        if self._tty and time.monotonic() - bar.shown_at >= self._min_interval:
            bar.refresh()

    def write(self, line: str) -> None:
        """Print a line of text above the bar without garbling it."""
        if self._tty and not self._closed:
            self._bar.write(line, file=self._stream)
        else:
            self._stream.write(line + "\n")
            self._stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line. Calling it twice does nothing."""
        if self._closed:
            return
        self._closed = True
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
