"""Unit tests of ``segmentlog.durability``: policy parsing, fsync accounting, the flusher.

Latencies come from a scripted clock (the module's ``time`` is swapped), so the percentile
and slow-fsync tests never depend on how fast this machine is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from segmentlog import durability
from segmentlog.durability import FsyncTimer, IntervalFlusher
from segmentlog.options import FsyncPolicy

WAIT = 10.0  # upper bound for waiting on a background thread; never a timing assertion


# --- FsyncPolicy ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["always", "batch", "interval", "never"])
def test_parse_accepts_each_policy_name(name: str) -> None:
    policy = FsyncPolicy.parse(name)
    assert policy.value == name
    assert FsyncPolicy.parse(policy) is policy


@pytest.mark.parametrize("bad", ["", "ALWAYS", "sometimes", "batch ", None, 1])
def test_parse_refuses_anything_else_naming_the_option_and_the_choices(bad: object) -> None:
    with pytest.raises(ValueError, match="fsync must be one of") as info:
        FsyncPolicy.parse(bad)  # type: ignore[arg-type]
    for name in ("always", "batch", "interval", "never"):
        assert repr(name) in str(info.value)


def test_only_always_and_batch_acknowledge_durably() -> None:
    assert FsyncPolicy.ALWAYS.durable_ack
    assert FsyncPolicy.BATCH.durable_ack
    assert not FsyncPolicy.INTERVAL.durable_ack
    assert not FsyncPolicy.NEVER.durable_ack


# --- FsyncTimer -------------------------------------------------------------------------


class ScriptedClock:
    """A stand-in for the ``time`` module whose ``perf_counter`` steps by scripted amounts."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.durations: Iterator[float] = iter(())
        self._started = False

    def script(self, durations: list[float]) -> None:
        self.durations = iter(durations)

    def perf_counter(self) -> float:
        # Called twice per fsync: at the start (returns now) and at the end (now + duration).
        if self._started:
            self.now += next(self.durations)
        self._started = not self._started
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> ScriptedClock:
    fake = ScriptedClock()
    monkeypatch.setattr(durability, "time", fake)
    return fake


def test_timer_counts_calls_and_passes_the_descriptor(clock: ScriptedClock) -> None:
    timer = FsyncTimer(slow_threshold_s=10.0)
    seen: list[int] = []
    clock.script([0.001, 0.002])
    timer.run(seen.append, 7, "a.seg")
    timer.run(seen.append, 9, "b.seg")
    assert seen == [7, 9]
    assert timer.count == 2


def test_timer_percentiles_of_no_fsyncs_are_zero() -> None:
    timer = FsyncTimer(slow_threshold_s=1.0)
    assert timer.percentile_us(0.5) == 0.0
    assert timer.percentile_us(0.99) == 0.0


def test_timer_percentiles_come_from_the_recorded_latencies(clock: ScriptedClock) -> None:
    timer = FsyncTimer(slow_threshold_s=10.0)
    # 1..100 ms in shuffled order: the percentiles must not depend on arrival order.
    latencies = [((i * 37) % 100 + 1) / 1000 for i in range(100)]
    assert sorted(latencies) == [(i + 1) / 1000 for i in range(100)]
    clock.script(latencies)
    for _ in latencies:
        timer.run(lambda fd: None, 3, "x.seg")
    assert timer.percentile_us(0.5) == pytest.approx(51_000, rel=1e-6)
    assert timer.percentile_us(0.99) == pytest.approx(100_000, rel=1e-6)
    assert timer.percentile_us(0.0) == pytest.approx(1_000, rel=1e-6)
    assert timer.percentile_us(1.0) == pytest.approx(100_000, rel=1e-6)


def test_timer_keeps_only_a_window_of_recent_latencies(clock: ScriptedClock) -> None:
    timer = FsyncTimer(slow_threshold_s=10.0, window=4)
    clock.script([5.0, 5.0, 5.0, 5.0, 0.001, 0.001, 0.001, 0.001])
    for _ in range(8):
        timer.run(lambda fd: None, 3, "x.seg")
    assert timer.count == 8
    assert timer.percentile_us(0.99) == pytest.approx(1_000, rel=1e-6)


def test_timer_logs_a_slow_fsync_with_the_file_name(
    clock: ScriptedClock, caplog: pytest.LogCaptureFixture
) -> None:
    timer = FsyncTimer(slow_threshold_s=0.0)
    clock.script([0.25])
    with caplog.at_level(logging.WARNING, logger="segmentlog"):
        timer.run(lambda fd: None, 3, "/logs/runs/abc/00000000000000000001.seg")
    records = [r for r in caplog.records if r.name == "segmentlog"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    message = records[0].getMessage()
    assert "slow fsync" in message
    assert "0.250" in message
    assert "/logs/runs/abc/00000000000000000001.seg" in message


def test_timer_stays_quiet_below_the_threshold(
    clock: ScriptedClock, caplog: pytest.LogCaptureFixture
) -> None:
    timer = FsyncTimer(slow_threshold_s=1.0)
    clock.script([0.5, 0.999])
    with caplog.at_level(logging.DEBUG, logger="segmentlog"):
        timer.run(lambda fd: None, 3, "x.seg")
        timer.run(lambda fd: None, 3, "x.seg")
    assert [r for r in caplog.records if r.name == "segmentlog"] == []


def test_timer_lets_an_fsync_error_through_and_does_not_count_it() -> None:
    timer = FsyncTimer(slow_threshold_s=0.0)

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError, match="Input/output"):
        timer.run(failing, 3, "x.seg")
    assert timer.count == 0
    assert timer.percentile_us(0.5) == 0.0


def test_timer_is_safe_to_share_between_threads() -> None:
    timer = FsyncTimer(slow_threshold_s=100.0, window=100_000)

    def work() -> None:
        for _ in range(2000):
            timer.run(lambda fd: None, 3, "x.seg")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert timer.count == 16_000


# --- IntervalFlusher --------------------------------------------------------------------


def test_flusher_calls_flush_repeatedly_until_stopped() -> None:
    calls: list[int] = []
    third = threading.Event()

    def flush() -> None:
        calls.append(1)
        if len(calls) >= 3:
            third.set()

    flusher = IntervalFlusher(0.001, flush)
    try:
        assert third.wait(WAIT)
    finally:
        flusher.stop()
    stopped_at = len(calls)
    assert stopped_at >= 3
    # stop() joined the thread: nothing runs after it returns.
    assert not flusher._thread.is_alive()
    assert flusher._thread.name == "segmentlog-flusher"
    assert flusher._thread.daemon
    assert len(calls) == stopped_at


def test_flusher_does_not_flush_before_its_first_interval() -> None:
    calls: list[int] = []
    flusher = IntervalFlusher(3600.0, lambda: calls.append(1))
    flusher.stop()
    assert calls == []


def test_flusher_survives_a_failing_flush_and_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []
    again = threading.Event()

    def flush() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(5, "Input/output error")
        again.set()

    with caplog.at_level(logging.ERROR, logger="segmentlog"):
        flusher = IntervalFlusher(0.001, flush)
        try:
            assert again.wait(WAIT)
        finally:
            flusher.stop()
    assert any("background fsync failed" in r.getMessage() for r in caplog.records)


def test_flusher_can_be_stopped_from_inside_its_flush() -> None:
    done = threading.Event()
    holder: list[IntervalFlusher] = []
    ready = threading.Event()

    def flush() -> None:
        ready.wait(WAIT)
        holder[0].stop()
        done.set()

    holder.append(IntervalFlusher(0.001, flush))
    ready.set()
    assert done.wait(WAIT)
    holder[0]._thread.join(WAIT)
    assert not holder[0]._thread.is_alive()
