"""Fixtures for the HTTP tests: servers on 127.0.0.1 (in a thread, or ``segmentlog serve`` in
a subprocess), writer processes, and SSE reading helpers. Every wait here is bounded."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tests.http.sse import SseMessage, parse

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).with_name("segmentlog")


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ThreadServer:
    """uvicorn serving ``app`` on 127.0.0.1 (an ephemeral port) in a thread of this process."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadServer:
        self._thread.start()
        wait_until(lambda: self.server.started, 10, "uvicorn to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self._sock.close()
        assert not self._thread.is_alive(), "uvicorn did not stop"


class ServeProcess:
    """``segmentlog serve DIR`` in a subprocess; ``port=0`` picks a free port."""

    def __init__(self, path: Path, *args: str, port: int = 0, log: Path) -> None:
        self.log = log
        self._err = log.open("w")
        self.proc = subprocess.Popen(
            [str(SCRIPT), "serve", str(path), "--port", str(port), *args],
            stdout=self._err,
            stderr=self._err,
            cwd=ROOT,
            env=_serve_env(),
        )
        self.port = 0
        deadline = time.monotonic() + 20
        while not self.port:
            text = log.read_text()
            for line in text.splitlines():
                if line.startswith("segmentlog serve: serving"):
                    self.port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
            if self.proc.poll() is not None:
                raise AssertionError(f"segmentlog serve exited early:\n{text}")
            if time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise AssertionError(f"segmentlog serve did not start:\n{text}")
            time.sleep(0.05)
        # The socket is bound before the line is printed; wait until uvicorn answers.
        wait_until(self._answers, 20, "segmentlog serve to answer")

    def _answers(self) -> bool:
        try:
            httpx.get(f"{self.url}/no-such-route", timeout=2)
        except httpx.TransportError:
            return False
        return True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("segmentlog serve did not stop in time") from None
        finally:
            self._err.close()
        return code


class Writer:
    """``tests/http/writer.py`` in a subprocess, appending to one run when told."""

    def __init__(self, run_id: uuid.UUID, *target: str) -> None:
        self.run_id = run_id
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.http.writer", *target, str(run_id)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self._pending = 0

    def send(self, command: str) -> None:
        """Send a command without waiting for it (the writer appends meanwhile)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        self._pending += 1

    def wait(self) -> int:
        """Wait for every command sent so far; return the run's last seq."""
        assert self.proc.stdout is not None
        last = 0
        while self._pending:
            line = self.proc.stdout.readline()
            assert line.startswith("ok "), f"writer failed: {line!r}"
            last = int(line.split()[1])
            self._pending -= 1
        return last

    def do(self, *commands: str) -> int:
        for command in commands:
            self.send(command)
        return self.wait()

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def writers() -> Iterator[Callable[..., Writer]]:
    made: list[Writer] = []

    def make(run_id: uuid.UUID, *target: str) -> Writer:
        writer = Writer(run_id, *target)
        made.append(writer)
        return writer

    yield make
    for writer in made:
        writer.close()


@pytest.fixture
def serve_processes(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    made: list[ServeProcess] = []

    def start(path: Path, *args: str, port: int = 0) -> ServeProcess:
        server = ServeProcess(path, *args, port=port, log=tmp_path / f"serve-{len(made)}.log")
        made.append(server)
        return server

    yield start
    for server in made:
        if server.proc.poll() is None:
            server.stop(signal.SIGKILL)


def rss_kib(pid: int) -> int:
    """The resident set size of process ``pid``, in KiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def stream_messages(response: httpx.Response) -> Iterator[SseMessage]:
    """The SSE messages of a streaming httpx response."""
    return parse(response.iter_lines())


def collect_events(
    client: httpx.Client,
    url: str,
    headers: dict[str, str] | None = None,
    *,
    stop_at: int | None = None,
    on_event: Callable[[SseMessage], None] | None = None,
) -> list[SseMessage]:
    """Stream ``url`` and return its events: until the body ends, or (disconnecting) after
    the event with seq ``stop_at``."""
    events: list[SseMessage] = []
    with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, response.read()
        for message in stream_messages(response):
            if not message.is_event:
                continue
            events.append(message)
            if on_event is not None:
                on_event(message)
            if stop_at is not None and int(message.id or 0) >= stop_at:
                break
    return events


def seqs_of(events: list[SseMessage]) -> list[int]:
    """The seqs of ``events``, checking that each ``id:`` matches its envelope's seq."""
    seqs = []
    for message in events:
        envelope = message.envelope
        assert message.id == str(envelope["seq"]), (message.id, envelope["seq"])
        assert message.event == envelope["event"]["type"]
        seqs.append(envelope["seq"])
    return seqs


def _serve_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SEGMENTLOG_TOKEN", None)  # only the token a test passes applies
    return env
