"""SSE end to end: a writer process appends while a client streams through ``segmentlog
serve``; the client drops mid-run, reconnects with Last-Event-ID, and ends up with every seq
once, in order, the stream ending at the terminal event."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.http.conftest import ServeProcess, Writer, collect_events, seqs_of
from tests.http.sse import SseMessage


def follow_across_a_reconnect(base: str, writer: Writer, run_id: uuid.UUID) -> None:
    """The shared scenario (SegmentLog and PostgreSQL): the writer has appended seqs 1..21."""
    url = f"{base}/runs/{run_id}/stream"
    with httpx.Client(timeout=httpx.Timeout(20.0)) as client:
        live_sent = False

        def on_event(message: SseMessage) -> None:
            nonlocal live_sent
            if message.id == "21" and not live_sent:  # replay done: append while we listen
                writer.send("deltas 30 0.005")
                live_sent = True

        first = collect_events(client, url, stop_at=35, on_event=on_event)  # drops mid-run
        assert seqs_of(first) == list(range(1, 36))
        assert writer.wait() == 51

        writer.do("deltas 30")  # appended while the client is away: seqs 52..81
        writer.send("deltas 20 0.005")
        writer.send("end")  # seq 102, terminal
        second = collect_events(client, url, {"Last-Event-ID": first[-1].id or ""})
        assert writer.wait() == 102

        seqs = seqs_of(first) + seqs_of(second)
        assert seqs == list(range(1, 103)), "every seq once, in order, nothing missing"
        assert second[-1].event == "RunCompleted"  # the body ended right after it

        # The browser reconnects after a clean end; at the end of a finished run it gets 204.
        done = client.get(url, headers={"Last-Event-ID": "102"})
        assert done.status_code == 204
        assert client.get(url, params={"after": "102"}).status_code == 204
        # ...but a reconnect from further back still gets the rest.
        tail = collect_events(client, url, {"Last-Event-ID": "100"})
        assert seqs_of(tail) == [101, 102]


def test_stream_follows_a_writer_process_across_a_reconnect(
    tmp_path: Path,
    writers: Callable[..., Writer],
    serve_processes: Callable[..., ServeProcess],
) -> None:
    run_id = uuid.uuid4()
    log_dir = tmp_path / "log"
    writer = writers(run_id, "--dir", str(log_dir))
    assert writer.do("start", "deltas 20") == 21
    server = serve_processes(log_dir, "--heartbeat", "1")
    follow_across_a_reconnect(server.url, writer, run_id)
