"""segmentlog.aio: the asyncio API, group commit off the loop, and async subscribe.

Run this file as a script to measure event-loop lag with 1000 concurrent appending
coroutines under fsync="batch": ``python tests/unit/test_aio.py [DIR]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

import segmentlog
import segmentlog.aio
from segmentlog import (
    Envelope,
    LogClosedError,
    LogFailedError,
    NotFoundError,
    RunCompleted,
    RunStarted,
    TextDelta,
)
from segmentlog._fs import FileSystem
from segmentlog.bench.workloads import measure_loop_lag


def _in_event_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in a fresh, real event loop (no plugin needed)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 30))

    return run


def _start(run: uuid.UUID) -> RunStarted:
    return RunStarted(run_id=run, session_id=uuid.uuid4(), provider="p", model="m")


def _done(run: uuid.UUID) -> RunCompleted:
    return RunCompleted(run_id=run, finish_reason="stop", iterations=1)


class _RecordingFS(FileSystem):
    """Records the thread of every file-system call; fdatasync can be slowed or failed."""

    def __init__(self, sync_delay: float = 0.0) -> None:
        self.threads: set[int] = set()
        self.sync_delay = sync_delay
        self.fail_next_sync = False

    def fdatasync(self, fd: int) -> None:
        if self.sync_delay:
            time.sleep(self.sync_delay)
        if self.fail_next_sync:
            self.fail_next_sync = False
            raise OSError(5, "injected EIO")
        super().fdatasync(fd)


def _record_calls(cls: type[_RecordingFS]) -> None:
    for name, member in list(vars(FileSystem).items()):
        if name.startswith("_") or not callable(member):
            continue
        inner = getattr(cls, name)

        def wrapper(
            self: _RecordingFS, *args: Any, __inner: Callable[..., Any] = inner, **kwargs: Any
        ) -> Any:
            self.threads.add(threading.get_ident())
            return __inner(self, *args, **kwargs)

        setattr(cls, name, wrapper)


_record_calls(_RecordingFS)


@_in_event_loop
async def test_open_append_and_read_back(tmp_path: Path) -> None:
    log = await segmentlog.aio.open(tmp_path / "log")
    async with log:
        run = uuid.uuid4()
        first = await log.append(_start(run))
        batch = await log.append_batch([TextDelta(run_id=run, delta=str(i)) for i in range(3)])
        assert first.seq == 1 and [e.seq for e in batch] == [2, 3, 4]
        assert await log.list_after(run) == [first, *batch]
        assert await log.list_after(run, 2, limit=1) == [batch[1]]
        assert await log.runs() == [run]
        assert await log.last_seq(run) == 4
        assert (await log.run_info(run)).events == 4
        await log.sync()
        assert log.stats().appends == 4
        with pytest.raises(NotFoundError):
            await log.list_after(uuid.uuid4())
    assert log.closed and log.blocking.closed
    with pytest.raises(LogClosedError):
        await log.append(_start(run))


@_in_event_loop
async def test_open_is_also_an_async_context_manager(tmp_path: Path) -> None:
    async with segmentlog.aio.open(tmp_path / "log", fsync="always") as log:
        run = uuid.uuid4()
        await log.append(_start(run))
    with segmentlog.open(tmp_path / "log", read_only=True) as reader:
        assert reader.last_seq(run) == 1


@_in_event_loop
async def test_import_envelopes_keeps_ids_and_refuses_overwrites(tmp_path: Path) -> None:
    async with segmentlog.aio.open(tmp_path / "a") as a, segmentlog.aio.open(tmp_path / "b") as b:
        run = uuid.uuid4()
        envs = await a.append_batch([_start(run), _done(run)])
        assert await b.import_envelopes(envs) == 2
        assert await b.list_after(run) == envs
        with pytest.raises(ValueError, match="refused"):
            await b.import_envelopes(envs)


@_in_event_loop
async def test_no_disk_io_runs_on_the_event_loop_thread(tmp_path: Path) -> None:
    fs = _RecordingFS()
    loop_thread = threading.get_ident()
    async with segmentlog.aio.open(tmp_path / "log", fs=fs, fsync="batch") as log:
        run = uuid.uuid4()
        await log.append(_start(run))
        await asyncio.gather(*(log.append(TextDelta(run_id=run, delta="x")) for _ in range(50)))
        await log.list_after(run)
        seen = [env.seq async for env in _until(log.subscribe(run), 51)]
        assert seen == list(range(1, 52))
        await log.run_info(run)
        await log.delete_run(run)
    assert fs.threads, "the recording file system saw no calls"
    assert loop_thread not in fs.threads


async def _until(it: Any, last_seq: int) -> Any:
    async with contextlib.aclosing(it):
        async for env in it:
            yield env
            if env.seq >= last_seq:
                return


@_in_event_loop
async def test_concurrent_appends_share_fsyncs_under_batch(tmp_path: Path) -> None:
    fs = _RecordingFS(sync_delay=0.02)
    async with segmentlog.aio.open(tmp_path / "log", fs=fs, fsync="batch") as log:
        run = uuid.uuid4()
        await log.append(_start(run))
        before = log.stats().fsyncs
        envs = await asyncio.gather(
            *(log.append(TextDelta(run_id=run, delta=str(i))) for i in range(64))
        )
        fsyncs = log.stats().fsyncs - before
    assert sorted(e.seq for e in envs) == list(range(2, 66))
    # 64 appends, each durable before it returned, in at most half as many fsyncs: appends
    # written while an fsync runs share the next one (group commit). Sixteen pool threads
    # typically need about 20 here (the engine fsyncs at once when nobody else is).
    assert 1 <= fsyncs <= 32


@_in_event_loop
async def test_subscribe_replays_then_follows_then_stops_at_terminal(tmp_path: Path) -> None:
    async with segmentlog.aio.open(tmp_path / "log") as log:
        run = uuid.uuid4()
        await log.append(_start(run))
        await log.append_batch([TextDelta(run_id=run, delta=str(i)) for i in range(5)])
        seen: list[int] = []

        async def consume() -> None:
            async for env in log.subscribe(run):
                seen.append(env.seq)

        task = asyncio.create_task(consume())
        while len(seen) < 6:
            await asyncio.sleep(0.001)
        for i in range(30):
            await log.append(TextDelta(run_id=run, delta=str(i)))
        await log.append(_done(run))
        await asyncio.wait_for(task, 10)
    assert seen == list(range(1, 38))


@_in_event_loop
async def test_subscribe_resumes_exactly_after_the_last_seen_seq(tmp_path: Path) -> None:
    async with segmentlog.aio.open(tmp_path / "log") as log:
        run = uuid.uuid4()
        await log.append_batch([_start(run), *[TextDelta(run_id=run, delta="d")] * 8, _done(run)])
        first = [env.seq async for env in _until(log.subscribe(run, page_size=3), 4)]
        rest = [env.seq async for env in log.subscribe(run, after_seq=first[-1])]
    assert first == [1, 2, 3, 4]
    assert rest == list(range(5, 11))


@_in_event_loop
async def test_subscribe_waits_for_a_run_with_no_events_yet(tmp_path: Path) -> None:
    async with segmentlog.aio.open(tmp_path / "log") as log:
        run = uuid.uuid4()
        task = asyncio.create_task(_collect(log.subscribe(run)))
        await asyncio.sleep(0.05)
        assert not task.done()
        await log.append(_start(run))
        await log.append(_done(run))
        assert [e.seq for e in await asyncio.wait_for(task, 10)] == [1, 2]


async def _collect(it: Any) -> list[Envelope[Any]]:
    return [env async for env in it]


@_in_event_loop
async def test_a_slow_subscriber_never_blocks_appenders(tmp_path: Path) -> None:
    async with segmentlog.aio.open(tmp_path / "log") as log:
        run = uuid.uuid4()
        await log.append(_start(run))
        sub = log.subscribe(run, page_size=10)
        first = await anext(sub)  # the subscriber now holds one page and stops reading
        assert first.seq == 1
        for i in range(300):
            await log.append(TextDelta(run_id=run, delta=str(i)))
        await log.append(_done(run))
        rest = [env.seq async for env in sub]
    assert rest == list(range(2, 303))


@_in_event_loop
async def test_a_read_only_async_subscriber_follows_another_writer(tmp_path: Path) -> None:
    run = uuid.uuid4()
    with segmentlog.open(tmp_path / "log", segment_bytes=4096) as writer:
        writer.append(_start(run))
        async with segmentlog.aio.open(tmp_path / "log", read_only=True) as reader:
            task = asyncio.create_task(_collect(reader.subscribe(run)))
            for i in range(40):
                await asyncio.to_thread(writer.append, TextDelta(run_id=run, delta="w" * 200))
                if i % 10 == 0:
                    await asyncio.sleep(0.01)
            writer.append(_done(run))
            envs = await asyncio.wait_for(task, 10)
    assert [e.seq for e in envs] == list(range(1, 43))


@_in_event_loop
async def test_closing_the_log_ends_a_waiting_subscriber(tmp_path: Path) -> None:
    log = await segmentlog.aio.open(tmp_path / "log")
    run = uuid.uuid4()
    await log.append(_start(run))
    seen: list[int] = []

    async def consume() -> None:
        async for env in log.subscribe(run):
            seen.append(env.seq)

    task = asyncio.create_task(consume())
    while not seen:
        await asyncio.sleep(0.001)
    await log.close()
    with pytest.raises(LogClosedError):
        await asyncio.wait_for(task, 10)
    assert seen == [1]


@_in_event_loop
async def test_a_failed_append_is_never_delivered_to_a_subscriber(tmp_path: Path) -> None:
    fs = _RecordingFS()
    log = await segmentlog.aio.open(tmp_path / "log", fs=fs, fsync="batch")
    run = uuid.uuid4()
    await log.append(_start(run))
    seen: list[int] = []

    async def consume() -> None:
        async for env in log.subscribe(run, poll_interval=0.01):
            seen.append(env.seq)

    task = asyncio.create_task(consume())
    while not seen:
        await asyncio.sleep(0.001)
    fs.fail_next_sync = True
    with pytest.raises(LogFailedError):
        await log.append(TextDelta(run_id=run, delta="lost"))
    await asyncio.sleep(0.1)  # a wrongly delivered seq 2 would arrive here
    await log.close()
    with pytest.raises(LogClosedError):
        await asyncio.wait_for(task, 10)
    assert seen == [1]


def test_bad_arguments_are_refused_before_any_io(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="threads"):
        segmentlog.aio.open(tmp_path / "log", threads=0)
    assert not (tmp_path / "log").exists()


# --- event-loop lag under 1000 concurrent appenders ------------------------------------------


@_in_event_loop
async def test_loop_keeps_ticking_while_many_coroutines_append(tmp_path: Path) -> None:
    lags, envs, fsyncs = await measure_loop_lag(str(tmp_path / "log"), 200, 2)
    assert sorted(e.seq for e in envs) == list(range(2, 402))
    assert lags, "the ticker never ran while appends were in flight"
    assert fsyncs <= 401
