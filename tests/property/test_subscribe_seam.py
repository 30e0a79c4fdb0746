"""Property: subscribe's seam between replay and live never gaps or duplicates.

Whatever was stored before the subscription, wherever it starts (``after_seq``), however
appends race with it (batches, several writers, pauses) and however slowly it is consumed,
a subscriber receives exactly the seqs ``after_seq + 1 .. terminal``, in order, each once,
and the envelopes are the stored ones.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import segmentlog
import segmentlog.aio
from segmentlog import Envelope, RunCompleted, RunStarted, TextDelta

SETTINGS = settings(max_examples=25, deadline=None)


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    stored = draw(st.integers(0, 25))
    return {
        "stored": stored,
        "after": draw(st.integers(0, stored)),
        "batches": draw(st.lists(st.integers(1, 6), max_size=12)),
        "writer_pause": draw(st.sampled_from([0.0, 0.0005, 0.002])),
        "reader_pause": draw(st.sampled_from([0.0, 0.001])),
        "page_size": draw(st.sampled_from([1, 3, 1000])),
    }


def _events(run: uuid.UUID, n: int, tag: str) -> list[Any]:
    return [TextDelta(run_id=run, delta=f"{tag}{i}") for i in range(n)]


def _prefill(log: segmentlog.SegmentLog[Any], run: uuid.UUID, stored: int) -> None:
    if stored:
        log.append(RunStarted(run_id=run, session_id=uuid.uuid4(), provider="p", model="m"))
        if stored > 1:
            log.append_batch(_events(run, stored - 1, "old"))


def _check(
    received: list[Envelope[Any]], log: segmentlog.SegmentLog[Any], run: uuid.UUID, after: int
) -> None:
    stored = log.list_after(run, None, 100_000)
    assert stored[-1].is_terminal
    assert [e.seq for e in received] == list(range(after + 1, stored[-1].seq + 1))
    assert received == stored[after:]


@SETTINGS
@given(scenarios())
def test_blocking_subscribe_seam_under_concurrent_appends(s: dict[str, Any]) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        segmentlog.open(Path(tmp) / "log", fsync="batch", segment_bytes=4096) as log,
    ):
        run = uuid.uuid4()
        _prefill(log, run, s["stored"])
        go = threading.Barrier(2)

        def write() -> None:
            go.wait()
            for i, size in enumerate(s["batches"]):
                if size == 1:
                    log.append(TextDelta(run_id=run, delta="n" * 100 + str(i)))
                else:
                    log.append_batch(_events(run, size, f"b{i}."))
                time.sleep(s["writer_pause"])
            log.append(RunCompleted(run_id=run, finish_reason="stop", iterations=1))

        writer = threading.Thread(target=write)
        writer.start()
        received: list[Envelope[Any]] = []
        go.wait()
        for env in log.subscribe(run, s["after"], poll_interval=0.05):
            received.append(env)
            if s["reader_pause"]:
                time.sleep(s["reader_pause"])
        writer.join()
        _check(received, log, run, s["after"])


@SETTINGS
@given(scenarios(), st.booleans())
def test_async_subscribe_seam_under_concurrent_appends(
    s: dict[str, Any], blocking_writer: bool
) -> None:
    async def scenario(tmp: str) -> None:
        async with segmentlog.aio.open(Path(tmp) / "log", segment_bytes=4096) as log:
            run = uuid.uuid4()
            _prefill(log.blocking, run, s["stored"])

            async def write() -> None:
                for i, size in enumerate(s["batches"]):
                    if blocking_writer:  # appends the subscriber is not told about
                        await asyncio.to_thread(log.blocking.append_batch, _events(run, size, "t"))
                    elif size == 1:
                        await log.append(TextDelta(run_id=run, delta=str(i)))
                    else:  # several coroutines at once: they race each other and the reader
                        await asyncio.gather(*(log.append(e) for e in _events(run, size, f"c{i}.")))
                    await asyncio.sleep(s["writer_pause"])
                await log.append(RunCompleted(run_id=run, finish_reason="stop", iterations=1))

            async def read() -> list[Envelope[Any]]:
                out: list[Envelope[Any]] = []
                sub = log.subscribe(run, s["after"], poll_interval=0.01, page_size=s["page_size"])
                async for env in sub:
                    out.append(env)
                    await asyncio.sleep(s["reader_pause"])
                return out

            _, received = await asyncio.gather(write(), read())
            _check(received, log.blocking, run, s["after"])

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(asyncio.wait_for(scenario(tmp), 30))
