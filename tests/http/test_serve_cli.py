"""``segmentlog serve`` as a user runs it: a subprocess on 127.0.0.1, its help, its errors."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.cli.conftest import assert_one_line_error, make_sample, run_cli
from tests.http.conftest import ServeProcess, collect_events, seqs_of


def test_serve_help_documents_every_option() -> None:
    result = run_cli("serve", "--help")
    assert result.code == 0, result.err
    text = " ".join(result.out.split())
    for option in ("DIR", "--host", "--port", "--token", "--heartbeat", "--allow-host"):
        assert option in text, option
    assert "default 127.0.0.1" in text and "default 8000" in text
    assert "SEGMENTLOG_TOKEN" in text


def test_serve_of_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("serve", tmp_path / "nope", "--port", "0")
    assert result.code == 2
    assert_one_line_error(result)
    assert not (tmp_path / "nope").exists(), "serve must never create a directory"


def test_serve_on_a_port_in_use_fails_with_one_line(tmp_path: Path) -> None:
    sample = make_sample(tmp_path / "log")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = run_cli("serve", sample.path, "--port", str(busy.getsockname()[1]))
    assert result.code == 3
    assert_one_line_error(result)
    assert "in use" in result.err


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    for args in (("--port", "70000"), ("--port", "x"), ("--heartbeat", "0")):
        result = run_cli("serve", tmp_path, *args)
        assert result.code == 2, args
        assert_one_line_error(result)


def test_serve_with_a_token_on_loopback(
    tmp_path: Path, serve_processes: Callable[..., ServeProcess]
) -> None:
    sample = make_sample(tmp_path / "log")
    server = serve_processes(sample.path, "--token", "tok-123")
    assert server.url.startswith("http://127.0.0.1:")  # the default bind
    auth = {"Authorization": "Bearer tok-123"}
    with httpx.Client(timeout=10) as client:
        assert client.get(f"{server.url}/runs").status_code == 401
        runs = client.get(f"{server.url}/runs", headers=auth).json()["runs"]
        assert {r["run_id"] for r in runs} == {str(sample.finished), str(sample.open_run)}
        url = f"{server.url}/runs/{sample.finished}/stream"
        assert client.get(url).status_code == 401
        assert seqs_of(collect_events(client, f"{url}?token=tok-123")) == [1, 2, 3, 4, 5]
        rebind = client.get(f"{server.url}/runs", headers={**auth, "Host": "evil.example"})
        assert rebind.status_code == 400
        assert client.get(f"{server.url}/runs/{uuid.uuid4()}", headers=auth).status_code == 404
    assert server.stop() == 0
    log = server.log.read_text()
    assert "GET /runs/" in log  # the access log is on...
    assert "tok-123" not in log  # ...but never shows the token
