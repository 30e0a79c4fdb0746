"""SegmentLog.subscribe (the blocking iterator): replay, then follow, then stop at the end."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import segmentlog
from segmentlog import (
    Envelope,
    LogClosedError,
    LogFailedError,
    RunCompleted,
    RunStarted,
    TextDelta,
)
from segmentlog._fs import FileSystem


def _start(run: uuid.UUID) -> RunStarted:
    return RunStarted(run_id=run, session_id=uuid.uuid4(), provider="p", model="m")


def _consume(it: Iterator[Envelope[object]], out: list[int]) -> threading.Thread:
    def work() -> None:
        for env in it:
            out.append(env.seq)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def _wait_until(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


@pytest.fixture
def log(tmp_path: Path) -> Iterator[segmentlog.SegmentLog[object]]:
    with segmentlog.open(tmp_path / "log", fsync="batch", segment_bytes=4096) as opened:
        yield opened


def test_subscribe_replays_then_follows_live_appends_then_stops_at_terminal(
    log: segmentlog.SegmentLog[object],
) -> None:
    run = uuid.uuid4()
    log.append(_start(run))
    log.append_batch([TextDelta(run_id=run, delta=str(i)) for i in range(10)])
    seen: list[int] = []
    consumer = _consume(log.subscribe(run), seen)
    _wait_until(lambda: len(seen) == 11)
    for i in range(50):
        log.append(TextDelta(run_id=run, delta="live" * 30 + str(i)))
    log.append(RunCompleted(run_id=run, finish_reason="stop", iterations=1))
    consumer.join(10)
    assert not consumer.is_alive()
    assert seen == list(range(1, 63))


def test_subscribe_resumes_exactly_after_the_last_seen_seq(
    log: segmentlog.SegmentLog[object],
) -> None:
    run = uuid.uuid4()
    log.append(_start(run))
    for i in range(20):
        log.append(TextDelta(run_id=run, delta=str(i)))
    log.append(RunCompleted(run_id=run, finish_reason="stop", iterations=1))
    first = []
    for env in log.subscribe(run):
        first.append(env.seq)
        if env.seq == 7:
            break
    rest = [env.seq for env in log.subscribe(run, after_seq=first[-1])]
    assert first + rest == list(range(1, 23))


def test_subscribe_waits_for_a_run_that_has_no_events_yet(
    log: segmentlog.SegmentLog[object],
) -> None:
    run = uuid.uuid4()
    seen: list[int] = []
    consumer = _consume(log.subscribe(run), seen)
    time.sleep(0.05)
    assert seen == []
    log.append(_start(run))
    log.append(RunCompleted(run_id=run, finish_reason="stop", iterations=1))
    consumer.join(10)
    assert seen == [1, 2]


def test_a_read_only_subscriber_follows_a_writer_by_watching_the_files(
    log: segmentlog.SegmentLog[object],
) -> None:
    run = uuid.uuid4()
    log.append(_start(run))
    seen: list[int] = []
    with segmentlog.open(log.path, read_only=True) as reader:
        consumer = _consume(reader.subscribe(run), seen)
        for i in range(40):  # crosses segment rolls (4 KiB segments)
            log.append(TextDelta(run_id=run, delta="r" * 150 + str(i)))
        log.append(RunCompleted(run_id=run, finish_reason="stop", iterations=1))
        consumer.join(10)
        assert not consumer.is_alive()
    assert seen == list(range(1, 43))


def test_closing_the_log_ends_a_waiting_subscriber_with_log_closed_error(
    tmp_path: Path,
) -> None:
    log = segmentlog.open(tmp_path / "log")
    run = uuid.uuid4()
    log.append(_start(run))
    errors: list[BaseException] = []
    seen: list[int] = []

    def work() -> None:
        try:
            for env in log.subscribe(run):
                seen.append(env.seq)
        except LogClosedError as exc:
            errors.append(exc)

    consumer = threading.Thread(target=work, daemon=True)
    consumer.start()
    _wait_until(lambda: seen == [1])
    log.close()
    consumer.join(10)
    assert not consumer.is_alive()
    assert seen == [1]
    assert len(errors) == 1


class _FailingSync(FileSystem):
    """fdatasync fails once, when armed."""

    def __init__(self) -> None:
        self.armed = False

    def fdatasync(self, fd: int) -> None:
        if self.armed:
            self.armed = False
            raise OSError(5, "injected EIO")
        super().fdatasync(fd)


def test_an_event_whose_append_failed_is_never_delivered(tmp_path: Path) -> None:
    fs = _FailingSync()
    log = segmentlog.open(tmp_path / "log", fsync="batch", fs=fs)
    run = uuid.uuid4()
    log.append(_start(run))
    seen: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for env in log.subscribe(run, poll_interval=0.01):
                seen.append(env.seq)
        except LogClosedError as exc:
            errors.append(exc)

    consumer = threading.Thread(target=work, daemon=True)
    consumer.start()
    _wait_until(lambda: seen == [1])
    fs.armed = True
    with pytest.raises(LogFailedError):
        log.append(TextDelta(run_id=run, delta="never stored"))
    time.sleep(0.1)  # a wrongly delivered seq 2 would show up here
    log.close()
    consumer.join(10)
    assert seen == [1]
    assert errors
    with segmentlog.open(tmp_path / "log", read_only=True) as reader:
        assert reader.last_seq(run) == 1
