"""The JSON routes and their errors, through httpx against uvicorn on 127.0.0.1, over a
``SegmentLog`` opened read-only beside a writer and over a ``MemoryEventStore``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import msgspec
import pytest

import segmentlog
from segmentlog import MemoryEventStore, RunCompleted, RunStarted, TextDelta
from segmentlog.errors import CorruptionError
from segmentlog.http import create_app
from tests.http.conftest import ThreadServer

RUNS = 5


@pytest.fixture(params=["segmentlog", "memory"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, str, Any]]:
    """(the writer's store, the server's URL, the store the server reads)."""
    if request.param == "segmentlog":
        writer: Any = segmentlog.open(tmp_path / "log", fsync="never")
        reader: Any = segmentlog.open(tmp_path / "log", read_only=True)
    else:
        writer = reader = MemoryEventStore()
    for n in range(RUNS):
        run_id = uuid.uuid4()
        writer.append(RunStarted(run_id=run_id, session_id=uuid.uuid4(), provider="p", model="m"))
        for i in range(n):
            writer.append(TextDelta(run_id=run_id, delta=f"<b>{i}</b>"))
        if n % 2 == 0:
            writer.append(RunCompleted(run_id=run_id, finish_reason="stop", iterations=1))
    with ThreadServer(create_app(reader)) as server:
        yield writer, server.url, reader
    if request.param == "segmentlog":
        reader.close()
        writer.close()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=15) as c:
        yield c


def _run_ids(store: Any) -> list[uuid.UUID]:
    return sorted(store.runs(), key=str)


def test_runs_lists_every_run_with_counts_state_and_mtime(
    served: tuple[Any, str, Any], client: httpx.Client
) -> None:
    writer, url, _ = served
    body = client.get(f"{url}/runs").json()
    assert body["next_cursor"] is None
    assert [r["run_id"] for r in body["runs"]] == [str(r) for r in _run_ids(writer)]
    for run in body["runs"]:
        page = writer.list_after(uuid.UUID(run["run_id"]), 0, 1000)
        assert run["events"] == run["last_seq"] == len(page)
        assert run["first_seq"] == 1
        assert run["terminal"] is page[-1].is_terminal
        assert run["session_id"] == str(page[-1].session_id)
        assert abs(run["mtime"] - page[-1].emitted_at.timestamp()) < 60


def test_runs_are_paginated_with_limit_and_cursor(
    served: tuple[Any, str, Any], client: httpx.Client
) -> None:
    writer, url, _ = served
    seen: list[str] = []
    pages = 0
    cursor: str | None = None
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        body = client.get(f"{url}/runs", params=params).json()
        pages += 1
        seen += [r["run_id"] for r in body["runs"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert cursor == body["runs"][-1]["run_id"]
    assert pages == 3
    assert seen == [str(r) for r in _run_ids(writer)]


def test_run_info_of_one_run(served: tuple[Any, str, Any], client: httpx.Client) -> None:
    writer, url, reader = served
    run_id = _run_ids(writer)[0]
    body = client.get(f"{url}/runs/{run_id}").json()
    page = writer.list_after(run_id, 0, 1000)
    assert body["run_id"] == str(run_id) and body["last_seq"] == len(page)
    if hasattr(reader, "run_info"):  # SegmentLog: exactly its RunInfo
        assert body == msgspec.to_builtins(reader.run_info(run_id))
    else:
        assert body["bytes"] is None and body["segments"] is None


def test_events_pages_are_the_stores_envelopes_as_json(
    served: tuple[Any, str, Any], client: httpx.Client
) -> None:
    writer, url, _ = served
    run_id = max(_run_ids(writer), key=lambda r: len(writer.list_after(r, 0, 1000)))
    stored = writer.list_after(run_id, 0, 1000)
    assert len(stored) >= 4
    whole = client.get(f"{url}/runs/{run_id}/events")
    assert whole.headers["content-type"] == "application/json"
    assert whole.content == msgspec.json.encode(stored)
    middle = client.get(f"{url}/runs/{run_id}/events", params={"after": "1", "limit": "2"})
    assert [e["seq"] for e in middle.json()] == [2, 3]
    assert middle.json()[0]["event"]["delta"] == "<b>0</b>"  # JSON text, never interpreted
    past = client.get(f"{url}/runs/{run_id}/events", params={"after": str(len(stored))})
    assert past.json() == []


@pytest.mark.parametrize(
    ("path", "status", "code", "mentions"),
    [
        ("/runs/not-a-uuid", 400, "bad_request", "run id"),
        ("/runs/{hex}", 400, "bad_request", "canonical"),
        ("/runs/urn:uuid:{run}", 400, "bad_request", "run id"),
        ("/runs/{run}/../../etc/passwd", 404, "not_found", "no route"),
        ("/runs/{unknown}", 404, "run_not_found", "{unknown}"),
        ("/runs/{unknown}/events", 404, "run_not_found", "has no events"),
        ("/runs/{run}/events?after=-1", 400, "bad_request", "after"),
        ("/runs/{run}/events?after=1.5", 400, "bad_request", "after"),
        ("/runs/{run}/events?after=%201", 400, "bad_request", "after"),
        ("/runs/{run}/events?after=99999999999999999999", 400, "bad_request", "after"),
        ("/runs/{run}/events?limit=0", 400, "bad_request", "limit"),
        ("/runs/{run}/events?limit=-5", 400, "bad_request", "limit"),
        ("/runs/{run}/events?limit=1001", 400, "bad_request", "limit"),
        ("/runs/{run}/events?limit=ten", 400, "bad_request", "limit"),
        ("/runs?limit=0", 400, "bad_request", "limit"),
        ("/runs?cursor=nope", 400, "bad_request", "run id"),
        ("/no/such/route", 404, "not_found", "no route"),
    ],
)
def test_errors_are_json_saying_what_was_wrong(
    served: tuple[Any, str, Any],
    client: httpx.Client,
    path: str,
    status: int,
    code: str,
    mentions: str,
) -> None:
    writer, url, _ = served
    run = _run_ids(writer)[0]
    names = {"run": str(run), "hex": run.hex, "unknown": str(uuid.uuid4())}
    response = client.get(url + path.format(**names))
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == code
    assert mentions.format(**names) in body["detail"]


def test_writes_are_refused_with_405(served: tuple[Any, str, Any], client: httpx.Client) -> None:
    _, url, _ = served
    response = client.post(f"{url}/runs", content=b"{}")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


class Base(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    run_id: uuid.UUID


class JobQueued(Base, tag="queued", frozen=True, kw_only=True):
    queue: str


class JobDone(Base, tag="done", frozen=True, kw_only=True):
    terminal: ClassVar[bool] = True
    exit_code: int


def test_user_event_types_name_the_sse_events(tmp_path: Path, client: httpx.Client) -> None:
    job = uuid.uuid4()
    with segmentlog.open(tmp_path / "jobs", event_type=JobQueued | JobDone) as log:
        log.append(JobQueued(run_id=job, queue="default"))
        log.append(JobDone(run_id=job, exit_code=0))
        with ThreadServer(create_app(log)) as server:
            types = client.get(f"{server.url}/event-types").json()
            stream = client.get(f"{server.url}/runs/{job}/stream")
            info = client.get(f"{server.url}/runs/{job}").json()
    assert types == {"event_types": ["done", "queued"]}
    assert "event: queued" in stream.text and "event: done" in stream.text
    assert info["terminal"] is True


class DamagedStore(MemoryEventStore[Any]):
    def list_after(self, run_id: uuid.UUID, after_seq: int | None = None, limit: int = 1000) -> Any:
        raise CorruptionError(
            "checksum mismatch", path="runs/x/0.seg", offset=128, first_seq=3, last_seq=None
        )


def test_store_damage_is_a_500_naming_it(client: httpx.Client) -> None:
    with ThreadServer(create_app(DamagedStore())) as server:
        response = client.get(f"{server.url}/runs/{uuid.uuid4()}/events")
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "store_error" and "checksum mismatch" in body["detail"]
