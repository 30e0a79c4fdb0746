"""Load: 200 concurrent SSE clients on one run, while a writer process appends, each get
every seq in order; the server's memory (``segmentlog serve`` in a subprocess, VmRSS from
/proc) stays bounded. Run with ``-s`` to see the figures.

The clients are plain asyncio streams speaking HTTP/1.1 and chunked encoding, so that 200 of
them cost this process little CPU on a 2-core machine shared with the server.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.http.conftest import ServeProcess, Writer, rss_kib

CLIENTS = 200
BACKLOG = 100  # seqs 1..101 stored before the clients connect (RunStarted + 100 deltas)
LIVE = 400  # appended while the clients stream
TOTAL = 1 + BACKLOG + LIVE + 1  # ... and the terminal event
RSS_GROWTH_LIMIT_MIB = 150  # generous: measured growth is far below (see the printout)
DEADLINE = 50.0


async def sse_client(port: int, path: str, caught_up: asyncio.Event, ready: list[int]) -> list[int]:
    """Stream ``path`` and return the seq of every event, checking each against its data."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"transfer-encoding: chunked" in head.lower()
        seqs: list[int] = []
        pending = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                return seqs  # the body ended cleanly
            pending += (await reader.readexactly(size + 2))[:-2]
            *blocks, pending = pending.split(b"\r\n\r\n")
            for block in blocks:
                if not block.startswith(b"id: "):
                    continue  # the retry hint, or a heartbeat comment
                id_line, _, rest = block.partition(b"\r\n")
                seq = int(id_line[4:])
                assert b'"seq":%d,' % seq in rest, block
                seqs.append(seq)
                if seq == 1 + BACKLOG:
                    ready.append(seq)
                    if len(ready) == CLIENTS:
                        caught_up.set()
    finally:
        writer.close()


def test_200_clients_each_get_every_event_in_order_with_bounded_memory(
    tmp_path: Path,
    writers: Callable[..., Writer],
    serve_processes: Callable[..., ServeProcess],
) -> None:
    run_id = uuid.uuid4()
    log_dir = tmp_path / "log"
    writer = writers(run_id, "--dir", str(log_dir))
    assert writer.do("start", f"deltas {BACKLOG}") == 1 + BACKLOG
    server = serve_processes(log_dir, "--heartbeat", "5")
    pid = server.proc.pid
    # Warm up (imports, first run touch), then take the baseline.
    assert asyncio.run(_one_page(server.port, f"/runs/{run_id}/events?limit=1000"))
    baseline = rss_kib(pid)
    peak = baseline
    sampling = True

    def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, rss_kib(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()

    async def main() -> list[list[int]]:
        caught_up = asyncio.Event()
        ready: list[int] = []
        path = f"/runs/{run_id}/stream"
        tasks = [
            asyncio.create_task(sse_client(server.port, path, caught_up, ready))
            for _ in range(CLIENTS)
        ]
        await asyncio.wait_for(caught_up.wait(), DEADLINE)
        # Every client has replayed the backlog and is following live: append now.
        writer.send(f"deltas {LIVE} 0.002")
        writer.send("end")
        return await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE)

    started = time.monotonic()
    try:
        results = asyncio.run(main())
    finally:
        sampling = False
        sampler.join()
    elapsed = time.monotonic() - started
    assert writer.wait() == TOTAL
    after = rss_kib(pid)

    expected = list(range(1, TOTAL + 1))
    complete = sum(seqs == expected for seqs in results)
    print(
        f"\nload: {CLIENTS} SSE clients x {TOTAL} events ({BACKLOG + 1} replayed, "
        f"{LIVE + 1} live) = {CLIENTS * TOTAL} deliveries in {elapsed:.2f}s; "
        f"server RSS {baseline / 1024:.1f} MiB before, {peak / 1024:.1f} MiB peak, "
        f"{after / 1024:.1f} MiB after (growth {(peak - baseline) / 1024:.1f} MiB)"
    )
    assert complete == CLIENTS, f"only {complete} of {CLIENTS} clients got every seq in order"
    assert (peak - baseline) / 1024 < RSS_GROWTH_LIMIT_MIB
    assert server.stop() == 0


async def _one_page(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    return data
