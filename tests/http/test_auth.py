"""With a token, every route (the stream and the viewer's files included) answers 401 unless
the request presents it: as a Bearer header, as ``?token=``, or as the viewer's cookie."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from segmentlog import MemoryEventStore, RunCompleted, RunStarted, TextDelta
from segmentlog.http import create_app
from tests.http.conftest import ThreadServer, collect_events, seqs_of

TOKEN = "s3cret-token"
RUN = uuid.UUID("0190f5e4-8a7b-7c3d-9e2f-123456789abc")
PATHS = [
    "/",
    "/viewer.js",
    "/viewer.css",
    "/event-types",
    "/runs",
    f"/runs/{RUN}",
    f"/runs/{RUN}/events",
    f"/runs/{RUN}/stream",
    f"/runs/{RUN}/stream?after=1",
    f"/runs/{uuid.uuid4()}",
    "/runs/not-a-uuid",
    "/no-such-route",
]


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadServer]:
    store: MemoryEventStore[Any] = MemoryEventStore()
    store.append(RunStarted(run_id=RUN, session_id=uuid.uuid4(), provider="p", model="m"))
    store.append(TextDelta(run_id=RUN, delta="hi"))
    store.append(RunCompleted(run_id=RUN, finish_reason="stop", iterations=1))
    with ThreadServer(create_app(store, token=TOKEN)) as running:
        yield running


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "credentials",
    [
        {},
        {"headers": {"Authorization": f"Bearer {TOKEN}x"}},
        {"headers": {"Authorization": f"Basic {TOKEN}"}},
        {"headers": {"Authorization": "Bearer"}},
        {"params": {"token": TOKEN[:-1]}},
        {"params": {"token": ""}},
        {"cookies": {"segmentlog_token": "wrong"}},
    ],
    ids=["none", "wrong-bearer", "basic", "empty-bearer", "wrong-query", "empty-query", "cookie"],
)
def test_every_route_refuses_a_request_without_the_token(
    server: ThreadServer, path: str, credentials: dict[str, Any]
) -> None:
    with httpx.Client(timeout=10, cookies=credentials.pop("cookies", None)) as client:
        response = client.get(server.url + path, **credentials)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"] == "unauthorized"
    assert TOKEN not in response.text


@pytest.mark.parametrize("path", PATHS)
def test_every_route_answers_with_the_bearer_token(server: ThreadServer, path: str) -> None:
    response = httpx.get(
        server.url + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    expected = {
        f"/runs/{RUN}/stream": 200,
        f"/runs/{RUN}/stream?after=1": 200,
        "/runs/not-a-uuid": 400,
    }.get(path, 404 if path in PATHS[-3:] else 200)
    assert response.status_code == expected, response.text


def test_the_stream_with_a_query_token_or_a_header(server: ThreadServer) -> None:
    url = f"{server.url}/runs/{RUN}/stream"
    with httpx.Client(timeout=10) as client:
        by_query = collect_events(client, f"{url}?token={TOKEN}")
        by_header = collect_events(client, url, {"Authorization": f"Bearer {TOKEN}"})
    assert seqs_of(by_query) == seqs_of(by_header) == [1, 2, 3]


def test_the_viewer_page_trades_the_query_token_for_a_strict_cookie(server: ThreadServer) -> None:
    with httpx.Client(timeout=10) as client:
        page = client.get(f"{server.url}/?token={TOKEN}")
        assert page.status_code == 200 and "<title>segmentlog viewer</title>" in page.text
        cookie = page.headers["set-cookie"]
        assert cookie.startswith(f"segmentlog_token={TOKEN};")
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert page.headers["referrer-policy"] == "no-referrer"
        # What the viewer's scripts then do: no token in the URL, the cookie only.
        assert client.get(f"{server.url}/runs").status_code == 200
        assert seqs_of(collect_events(client, f"{server.url}/runs/{RUN}/stream")) == [1, 2, 3]
        client.cookies.clear()
        assert client.get(f"{server.url}/runs").status_code == 401
        # A wrong query token on the page sets no cookie (and is refused).
        wrong = client.get(f"{server.url}/?token=guess")
        assert wrong.status_code == 401 and "set-cookie" not in wrong.headers


def test_without_a_token_nothing_is_asked() -> None:
    with ThreadServer(create_app(MemoryEventStore())) as open_server:
        assert httpx.get(f"{open_server.url}/runs", timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("localhost", 200),
        ("localhost:8000", 200),
        ("127.0.0.1:1234", 200),
        ("[::1]:8000", 200),
        ("LOCALHOST", 200),
        ("rebind.attacker.example", 400),
        ("rebind.attacker.example:8000", 400),
        ("", 400),
    ],
)
def test_allowed_hosts_refuse_other_host_headers(host: str, status: int) -> None:
    app = create_app(MemoryEventStore(), allowed_hosts=["localhost", "127.0.0.1", "::1"])
    with ThreadServer(app) as running:
        response = httpx.get(f"{running.url}/runs", headers={"Host": host}, timeout=10)
    assert response.status_code == status
    if status == 400:
        assert response.json()["error"] == "bad_host"
