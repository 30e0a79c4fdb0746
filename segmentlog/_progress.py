"""A dependency-free progress bar for long commands (``segmentlog bench``, ``verify``).

Strategy and invariants
- Output goes to a text stream (stderr by default), never stdout, so a command's real output
  can be piped while the bar is shown.
- On a TTY the bar redraws one line in place with ``\\r`` at most every ``min_interval``
  seconds, and the line is ended with a newline when the bar closes.
- Anywhere else (a pipe, a log file, CI) ``\\r`` would pile up as garbage, so the bar prints a
  plain line only when a tenth of the work (or ``plain_interval`` seconds) has passed, and a
  final line at close; ``plain=False`` silences it completely off a TTY.
- The bar never raises on a broken stream: progress is decoration, not the job.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

__all__ = ["Progress"]

_BAR_WIDTH = 28


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
        self.done = 0
        self.status = ""
        self._stream = stream if stream is not None else sys.stderr
        if tty is None:
            try:
                tty = self._stream.isatty()
            except (AttributeError, ValueError, OSError):
                tty = False
        self._tty = tty
        self._plain = plain
        self._min_interval = min_interval
        self._plain_interval = plain_interval
        self._start = time.monotonic()
        self._last_draw = float("-inf")
        self._last_plain_tenth = -1
        self._last_plain_time = self._start
        self._last_plain_done = -1
        self._width = 0
        self._closed = False

    # --- public API ------------------------------------------------------------------------

    def advance(self, n: int = 1) -> None:
        """Mark ``n`` more units done and redraw if it is time to."""
        self.done += n
        self._maybe_draw()

    def set_status(self, status: str) -> None:
        """Show ``status`` (e.g. the step in progress) after the bar."""
        self.status = status
        self._maybe_draw()

    def write(self, line: str) -> None:
        """Print a line of text above the bar without garbling it."""
        if self._tty:
            self._emit("\r" + " " * self._width + "\r" + line + "\n")
            self._width = 0
            self._last_draw = float("-inf")
            self._maybe_draw()
        else:
            self._emit(line + "\n")

    def close(self) -> None:
        """Draw the final state and end the line. Calling it twice does nothing."""
        if self._closed:
            return
        self._closed = True
        if self._tty:
            self._emit("\r" + self._render().ljust(self._width) + "\n")
        elif self._plain and self.done != self._last_plain_done:
            self._emit(self._render() + "\n")

    def __enter__(self) -> Progress:
        self._maybe_draw()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- drawing ---------------------------------------------------------------------------

    def _render(self) -> str:
        elapsed = time.monotonic() - self._start
        prefix = f"{self.label} " if self.label else ""
        if self.total:
            frac = min(1.0, self.done / self.total)
            filled = round(frac * _BAR_WIDTH)
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            text = f"{prefix}[{bar}] {self.done}/{self.total} {frac * 100:3.0f}% {elapsed:5.1f}s"
        else:
            text = f"{prefix}{self.done} done {elapsed:5.1f}s"
        if self.status:
            text += f"  {self.status}"
        return text

    def _maybe_draw(self) -> None:
        if self._closed:
            return
        now = time.monotonic()
        if self._tty:
            finished = self.total and self.done >= self.total
            if now - self._last_draw < self._min_interval and not finished:
                return
            self._last_draw = now
            text = self._render()
            pad = max(0, self._width - len(text))
            self._width = len(text)
            self._emit("\r" + text + " " * pad)
            return
        if not self._plain:
            return
        tenth = (self.done * 10) // self.total if self.total else -1
        if tenth > self._last_plain_tenth or now - self._last_plain_time >= self._plain_interval:
            if self.done == 0 and self._last_plain_tenth >= 0:
                return
            self._last_plain_tenth = max(tenth, self._last_plain_tenth)
            self._last_plain_time = now
            self._last_plain_done = self.done
            self._emit(self._render() + "\n")

    def _emit(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            self._tty = False
            self._plain = False
