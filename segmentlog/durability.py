"""fsync policies, fsync accounting, and the interval flusher.

Strategy and invariants
- ``FsyncPolicy`` names when an append's bytes reach stable storage:
  ``always`` (each append fdatasyncs before returning), ``batch`` (group commit: appenders
  wait for one shared fdatasync that covers their bytes), ``interval`` (a background thread
  syncs every ``fsync_interval_ms``), ``never`` (the OS decides).
- Under every policy the frame is written to the kernel before ``append`` returns, so a
  process crash loses nothing acknowledged.
- An fsync is never retried: after an error the page cache may have dropped the data, and a
  second fsync could report success for bytes that are gone. The caller fails stop.
- ``FsyncTimer`` records latencies for ``stats()`` and logs fsyncs slower than a threshold
  through the ``segmentlog`` logger.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import ClassVar, TypeVar

__all__ = ["FsyncPolicy", "FsyncTimer", "IntervalFlusher", "OptionEnum"]

logger = logging.getLogger("segmentlog")


Choice = TypeVar("Choice", bound="OptionEnum")


class OptionEnum(enum.Enum):
    """An option that takes one of a few names (``fsync``, ``recovery``)."""

    #: The option's name, for error messages.
    __option__: ClassVar[str] = "option"

    @classmethod
    def parse(cls: type[Choice], value: Choice | str) -> Choice:
        """Accept a member or its name; raise ValueError naming the choices otherwise."""
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in cls)
            raise ValueError(f"{cls.__option__} must be one of {choices}, got {value!r}") from None


class FsyncPolicy(OptionEnum):
    """When appended bytes are made durable. See the README for what each can lose."""

    __option__ = "fsync"

    ALWAYS = "always"
    BATCH = "batch"
    INTERVAL = "interval"
    NEVER = "never"

    @property
    def durable_ack(self) -> bool:
        """True when an acknowledged append survives power loss."""
        return self in (FsyncPolicy.ALWAYS, FsyncPolicy.BATCH)


class FsyncTimer:
    """Counts fsyncs and keeps recent latencies for percentiles."""

    def __init__(self, slow_threshold_s: float, window: int = 4096) -> None:
        self.slow_threshold_s = slow_threshold_s
        self.count = 0
        self._recent: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def run(self, sync: Callable[[int], None], fd: int, what: str) -> None:
        """Call ``sync(fd)``, timing it; exceptions propagate untouched."""
        start = time.perf_counter()
        sync(fd)
        elapsed = time.perf_counter() - start
        with self._lock:
            self.count += 1
            self._recent.append(elapsed)
        if elapsed >= self.slow_threshold_s:
            logger.warning("slow fsync: %.3f s on %s", elapsed, what)

    def percentile_us(self, q: float) -> float:
        """The ``q`` quantile (0..1) of recent fsync latencies, in microseconds."""
        with self._lock:
            samples = sorted(self._recent)
        if not samples:
            return 0.0
        i = min(len(samples) - 1, int(q * len(samples)))
        return samples[i] * 1e6


class IntervalFlusher:
    """A daemon thread that calls ``flush`` every ``interval_s`` until stopped."""

    def __init__(self, interval_s: float, flush: Callable[[], None]) -> None:
        self._interval_s = interval_s
        self._flush = flush
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="segmentlog-flusher", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._flush()
            except Exception:  # the log has already failed stop; keep the thread quiet
                logger.exception("background fsync failed")

    def stop(self) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
