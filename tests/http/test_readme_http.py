"""The README's "Watching a run over HTTP" section: its Python example builds a working app,
and every route in its table answers as the table says."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

import segmentlog
from segmentlog import RunCompleted, RunStarted, TextDelta
from tests.cli.test_readme_examples import ROOT, code_blocks, section
from tests.http.conftest import ThreadServer

HEADING = "Watching a run over HTTP"


def test_readme_http_example_serves_every_route_in_its_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = section((ROOT / "README.md").read_text(), HEADING)
    blocks = [body for lang, body in code_blocks(text) if lang == "python"]
    assert len(blocks) == 1, f"expected one python example under '{HEADING}'"
    run_id = uuid.uuid4()
    monkeypatch.chdir(tmp_path)
    with segmentlog.open("agent-log") as writer:  # the example opens it read-only beside us
        writer.append(RunStarted(run_id=run_id, session_id=uuid.uuid4(), provider="p", model="m"))
        writer.append(TextDelta(run_id=run_id, delta="hi"))
        writer.append(RunCompleted(run_id=run_id, finish_reason="stop", iterations=1))
        namespace: dict[str, object] = {}
        exec(compile(blocks[0], "README.md", "exec"), namespace)
        app, log = namespace["app"], namespace["log"]
        assert isinstance(app, Starlette)
        routes = re.findall(r"^\| `GET ([^`?]+)[^`]*` \|", text, re.M)
        assert len(routes) == 6, routes
        try:
            with ThreadServer(app) as server, httpx.Client(timeout=10) as client:
                auth = {"Authorization": "Bearer change-me"}
                for route in routes:
                    url = server.url + route.replace("{run_id}", str(run_id))
                    assert client.get(url).status_code == 401, route  # the example's token
                    assert client.get(url, headers=auth).status_code == 200, route
        finally:
            log.close()  # type: ignore[attr-defined]
