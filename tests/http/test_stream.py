"""The SSE stream's behaviour: headers, retry hint, heartbeats, resume rules, 204, errors,
shared following, disconnects, the send timeout, shutdown, and every kind of store."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import segmentlog
import segmentlog.aio
from segmentlog import MemoryEventStore, RunCompleted, RunStarted, TextDelta
from segmentlog.http import create_app
from tests.http.conftest import (
    ServeProcess,
    ThreadServer,
    Writer,
    collect_events,
    seqs_of,
    stream_messages,
    wait_until,
)


def start_run(store: Any, run_id: uuid.UUID, deltas: int, *, finish: bool = False) -> None:
    store.append(RunStarted(run_id=run_id, session_id=uuid.uuid4(), provider="p", model="m"))
    for i in range(deltas):
        store.append(TextDelta(run_id=run_id, delta=f"d{i}"))
    if finish:
        store.append(RunCompleted(run_id=run_id, finish_reason="stop", iterations=1))


@pytest.fixture
def memory() -> MemoryEventStore[Any]:
    return MemoryEventStore()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=httpx.Timeout(15.0)) as c:
        yield c


def test_stream_headers_retry_hint_and_no_compression(
    memory: MemoryEventStore[Any], client: httpx.Client
) -> None:
    run_id = uuid.uuid4()
    start_run(memory, run_id, 2, finish=True)
    with (
        ThreadServer(create_app(memory, retry_ms=1234)) as server,
        client.stream(
            "GET",
            f"{server.url}/runs/{run_id}/stream",
            headers={"Accept-Encoding": "gzip, deflate, br"},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in response.headers
        messages = list(stream_messages(response))
    assert messages[0].retry == 1234 and not messages[0].is_event
    events = [m for m in messages if m.is_event]
    assert seqs_of(events) == [1, 2, 3, 4]
    assert [m.event for m in events] == ["RunStarted", "TextDelta", "TextDelta", "RunCompleted"]


def test_idle_stream_gets_heartbeat_comments(
    memory: MemoryEventStore[Any], client: httpx.Client
) -> None:
    run_id = uuid.uuid4()
    start_run(memory, run_id, 0)
    comments = 0
    with (
        ThreadServer(create_app(memory, heartbeat=0.2)) as server,
        client.stream("GET", f"{server.url}/runs/{run_id}/stream?after=1") as response,
    ):
        for message in stream_messages(response):
            assert not message.is_event  # nothing after seq 1 yet
            comments += sum(c.startswith("ping") for c in message.comments)
            if comments >= 3:
                break
    assert comments >= 3


def test_resume_point_header_wins_over_after_and_finished_runs_get_204(
    memory: MemoryEventStore[Any], client: httpx.Client
) -> None:
    run_id = uuid.uuid4()
    start_run(memory, run_id, 8, finish=True)  # seqs 1..10
    with ThreadServer(create_app(memory)) as server:
        url = f"{server.url}/runs/{run_id}/stream"
        assert seqs_of(collect_events(client, url + "?after=7")) == [8, 9, 10]
        both = collect_events(client, url + "?after=2", {"Last-Event-ID": "8"})
        assert seqs_of(both) == [9, 10]
        for headers, query in [({"Last-Event-ID": "10"}, ""), ({}, "?after=10"), ({}, "?after=99")]:
            response = client.get(url + query, headers=headers)
            assert response.status_code == 204, (headers, query)
            assert response.content == b""


@pytest.mark.parametrize(
    ("query", "headers", "status", "mentions"),
    [
        ("", {"Last-Event-ID": "abc"}, 400, "Last-Event-ID"),
        ("", {"Last-Event-ID": "-3"}, 400, "Last-Event-ID"),
        ("", {"Last-Event-ID": "1.5"}, 400, "Last-Event-ID"),
        ("?after=x", {}, 400, "after"),
        ("?after=-1", {}, 400, "after"),
    ],
)
def test_stream_refuses_malformed_resume_points(
    memory: MemoryEventStore[Any],
    client: httpx.Client,
    query: str,
    headers: dict[str, str],
    status: int,
    mentions: str,
) -> None:
    run_id = uuid.uuid4()
    start_run(memory, run_id, 1)
    with ThreadServer(create_app(memory)) as server:
        response = client.get(f"{server.url}/runs/{run_id}/stream{query}", headers=headers)
    assert response.status_code == status
    body = response.json()
    assert body["error"] == "bad_request" and mentions in body["detail"]


def test_stream_of_unknown_or_malformed_run_is_a_json_error(
    memory: MemoryEventStore[Any], client: httpx.Client
) -> None:
    with ThreadServer(create_app(memory)) as server:
        unknown = client.get(f"{server.url}/runs/{uuid.uuid4()}/stream")
        malformed = client.get(f"{server.url}/runs/not-a-uuid/stream")
    assert unknown.status_code == 404 and unknown.json()["error"] == "run_not_found"
    assert malformed.status_code == 400 and "run id" in malformed.json()["detail"]


def _append_slowly(store: Any, run_id: uuid.UUID, count: int, pause: float = 0.002) -> None:
    for i in range(count):
        store.append(TextDelta(run_id=run_id, delta=f"live {i}"))
        time.sleep(pause)
    store.append(RunCompleted(run_id=run_id, finish_reason="stop", iterations=1))


def test_clients_at_different_points_share_one_follower_and_miss_nothing(
    memory: MemoryEventStore[Any],
) -> None:
    """A tiny window (4 frames) and pages of 3 force every path: store pages for clients
    behind the window, window slices, and live frames, with three clients at once."""
    run_id = uuid.uuid4()
    start_run(memory, run_id, 9)  # seqs 1..10
    app = create_app(memory, cache_size=4, page_size=3, poll_interval=0.01)
    results: dict[int, list[int]] = {}
    samples: set[tuple[int, int]] = set()

    def stream_from(after: int, url: str) -> None:
        with httpx.Client(timeout=20) as c:
            events = collect_events(c, f"{url}/runs/{run_id}/stream?after={after}")
        results[after] = seqs_of(events)

    with ThreadServer(app) as server:
        threads = [
            threading.Thread(target=stream_from, args=(after, server.url)) for after in (0, 5, 10)
        ]
        for t in threads:
            t.start()
        wait_until(lambda: app.state.feeds.streams == 3, 10, "three open streams")
        for i in range(60):  # seqs 11..70 (no stream can end before the terminal event)
            memory.append(TextDelta(run_id=run_id, delta=f"live {i}"))
            samples.add((app.state.feeds.streams, app.state.feeds.followed_runs))
            time.sleep(0.002)
        memory.append(RunCompleted(run_id=run_id, finish_reason="stop", iterations=1))
        for t in threads:
            t.join(30)
    assert results == {after: list(range(after + 1, 72)) for after in (0, 5, 10)}
    assert samples == {(3, 1)}, "three streams, one follower for their run"
    assert app.state.feeds.streams == 0 and app.state.feeds.followed_runs == 0


def test_a_client_disconnect_frees_its_stream_and_the_runs_follower(
    memory: MemoryEventStore[Any],
) -> None:
    run_id = uuid.uuid4()
    start_run(memory, run_id, 3)
    app = create_app(memory, heartbeat=30)
    with ThreadServer(app) as server, httpx.Client(timeout=10) as c:
        with c.stream("GET", f"{server.url}/runs/{run_id}/stream") as response:
            # Keep the iterator referenced: dropping it at ``break`` would close httpcore's
            # stream (GeneratorExit), and so the connection, before the check below.
            messages = stream_messages(response)
            wanted = 0
            for message in messages:
                wanted += message.is_event
                if wanted == 4:
                    break
            assert app.state.feeds.streams == 1 and app.state.feeds.followed_runs == 1
            del messages
        # Leaving the block closed the connection, mid-stream, with no terminal event sent.
        wait_until(lambda: app.state.feeds.streams == 0, 10, "the stream to be released")
        assert app.state.feeds.followed_runs == 0


def test_a_client_that_stops_reading_is_cut_off_by_the_send_timeout(
    memory: MemoryEventStore[Any],
) -> None:
    run_id = uuid.uuid4()
    memory.append(RunStarted(run_id=run_id, session_id=uuid.uuid4(), provider="p", model="m"))
    memory.append_batch([TextDelta(run_id=run_id, delta="x" * 8000) for _ in range(2000)])
    app = create_app(memory, send_timeout=0.5, heartbeat=0.2)
    with ThreadServer(app) as server, socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(f"GET /runs/{run_id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head = sock.recv(200)
        assert head.startswith(b"HTTP/1.1 200")
        wait_until(lambda: app.state.feeds.streams == 1, 10, "the stream to start")
        # Read nothing more: the server's buffers fill, a send blocks, the timeout fires.
        wait_until(lambda: app.state.feeds.streams == 0, 20, "the stalled stream to be cut")
        received = len(head)
        while chunk := sock.recv(1 << 16):  # the rest of what was buffered, then EOF
            received += len(chunk)
    assert received < 2000 * 8000, "the client cannot have been sent the whole run"


def test_server_shutdown_ends_every_stream_cleanly(
    tmp_path: Path,
    writers: Callable[..., Writer],
    serve_processes: Callable[..., ServeProcess],
) -> None:
    run_id = uuid.uuid4()
    log_dir = tmp_path / "log"
    writers(run_id, "--dir", str(log_dir)).do("start", "deltas 2")
    server = serve_processes(log_dir)
    outcomes: list[object] = []
    opened = threading.Barrier(4, timeout=15)

    def listen() -> None:
        try:
            with (
                httpx.Client(timeout=20) as c,
                c.stream("GET", f"{server.url}/runs/{run_id}/stream") as response,
            ):
                seen = 0
                for message in stream_messages(response):
                    seen += message.is_event
                    if seen == 3:
                        opened.wait()
                outcomes.append(seen)  # the body ended without an error
        except Exception as exc:  # an abrupt close shows up here
            outcomes.append(exc)

    threads = [threading.Thread(target=listen) for _ in range(3)]
    for t in threads:
        t.start()
    opened.wait()
    started = time.monotonic()
    assert server.stop(signal.SIGTERM) == 0
    for t in threads:
        t.join(15)
    assert outcomes == [3, 3, 3]
    assert time.monotonic() - started < 10, "streams must not hold the shutdown up"


def test_stream_over_a_segmentlog_writer_in_this_process_uses_wait_for(tmp_path: Path) -> None:
    run_id = uuid.uuid4()
    with segmentlog.open(tmp_path / "log", fsync="never") as log:
        start_run(log, run_id, 2)
        app = create_app(log)
        assert app.state.reader.can_wait
        with ThreadServer(app) as server, httpx.Client(timeout=15) as c:
            appender = threading.Thread(target=_append_slowly, args=(log, run_id, 40))
            appender.start()
            events = collect_events(c, f"{server.url}/runs/{run_id}/stream")
            appender.join(15)
    assert seqs_of(events) == list(range(1, 45))  # 3 stored, 40 live, the terminal


class ListAfterOnly:
    """A store with only the EventStore contract: no runs, last_seq, run_info or wait_for."""

    def __init__(self, inner: MemoryEventStore[Any]) -> None:
        self._inner = inner
        self.append = inner.append
        self.append_batch = inner.append_batch
        self.list_after = inner.list_after


def test_a_store_with_only_list_after_still_streams(memory: MemoryEventStore[Any]) -> None:
    run_id = uuid.uuid4()
    start_run(memory, run_id, 2)
    store = ListAfterOnly(memory)
    with (
        ThreadServer(create_app(store, poll_interval=0.01)) as server,
        httpx.Client(timeout=15) as c,
    ):
        appender = threading.Thread(target=_append_slowly, args=(store, run_id, 20))
        appender.start()
        events = collect_events(c, f"{server.url}/runs/{run_id}/stream?after=1")
        appender.join(15)
        assert seqs_of(events) == list(range(2, 25))
        # The resume point's own envelope shows the run is over: 204.
        assert c.get(f"{server.url}/runs/{run_id}/stream?after=24").status_code == 204
        assert seqs_of(collect_events(c, f"{server.url}/runs/{run_id}/stream?after=23")) == [24]
        listing = c.get(f"{server.url}/runs")
        assert listing.status_code == 501 and listing.json()["error"] == "not_supported"


def test_stream_over_an_async_segmentlog(tmp_path: Path) -> None:
    run_id = uuid.uuid4()
    log = asyncio.run(_open_async(tmp_path / "log"))
    try:
        start_run(log.blocking, run_id, 2)
        app = create_app(log)
        assert app.state.reader.is_async
        with ThreadServer(app) as server, httpx.Client(timeout=15) as c:
            appender = threading.Thread(target=_append_slowly, args=(log.blocking, run_id, 20))
            appender.start()
            events = collect_events(c, f"{server.url}/runs/{run_id}/stream")
            appender.join(15)
            info = c.get(f"{server.url}/runs/{run_id}").json()
    finally:
        asyncio.run(log.close())
    assert seqs_of(events) == list(range(1, 25))
    assert info["terminal"] is True and info["events"] == 24 and info["segments"] == 1


async def _open_async(path: Path) -> segmentlog.aio.AsyncSegmentLog[Any]:
    return await segmentlog.aio.open(path, fsync="never")
