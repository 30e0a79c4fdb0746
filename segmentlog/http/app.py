"""``create_app(store)``: the Starlette app with the JSON routes, the SSE stream and the viewer.

Strategy and invariants
- Routes: ``GET /runs`` (a page of run summaries, ``?limit=&cursor=``), ``GET
  /runs/{run_id}``, ``GET /runs/{run_id}/events?after=&limit=`` (a JSON array of envelopes),
  ``GET /runs/{run_id}/stream`` (server-sent events), ``GET /event-types`` (the SSE event
  names, for clients that must subscribe by name), and the viewer: ``/``, ``/viewer.js``,
  ``/viewer.css``. Every response is JSON or one of those three files; every error is JSON
  (``_errors``). The viewer's files are read from the package once, at startup:
  no file path is ever built from a request.
- The stream resumes after ``Last-Event-ID`` (or, without that header, ``?after=``), so a
  browser that reconnects after a drop gets exactly the seqs it has not seen. A finished
  run whose resume point is at or past its last seq gets 204, which makes ``EventSource``
  stop for good; the stream itself ends right after the terminal event.
- sse-starlette does the stream's transport: heartbeat comments every ``heartbeat`` seconds,
  a ``send_timeout`` that cuts off a client that stopped reading, disconnect detection, and
  the server-shutdown signal, which ends each stream with a clean end of body (the generator
  returns within about ``wait_step``) so browsers reconnect to the next server. Nothing
  compresses: there is no GZip middleware, and ``EventSourceResponse`` refuses compression.
- Store access goes through ``StoreReader`` (bounded worker threads) and following through
  ``FeedRegistry`` (one follower per run); the app's state holds the feeds, so
  ``app.state.feeds.streams`` counts open streams.
"""

from __future__ import annotations

import bisect
import hmac
import logging
import typing
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib import resources
from typing import Any

import anyio
import msgspec
from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..events import AgentEvent
from ._auth import COOKIE_NAME, HostGate, TokenGate
from ._errors import EXCEPTION_HANDLERS, JSON_HEADERS
from ._feed import FeedRegistry, event_name
from ._params import parse_limit, parse_run_id, parse_seq
from ._reader import RunSummary, StoreReader, Unsupported

__all__ = ["DEFAULT_HEARTBEAT", "create_app"]

logger = logging.getLogger("segmentlog.http")

#: Seconds between heartbeat comments on an idle stream.
DEFAULT_HEARTBEAT = 15.0

_PAGE_HEADERS = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
}
_STATIC = {
    "/": ("index.html", "text/html"),
    "/viewer.js": ("viewer.js", "text/javascript"),
    "/viewer.css": ("viewer.css", "text/css"),
}


class _RunsPage(msgspec.Struct, frozen=True):
    runs: list[RunSummary]
    next_cursor: str | None


class _EventTypes(msgspec.Struct, frozen=True):
    event_types: list[str]


def _json(value: Any, status: int = 200) -> Response:
    return Response(
        msgspec.json.encode(value),
        status_code=status,
        media_type="application/json",
        headers=JSON_HEADERS,
    )


def _event_names(event_type: Any) -> list[str]:
    variants = typing.get_args(event_type) or (event_type,)
    return sorted({event_name(cls) for cls in variants if hasattr(cls, "__struct_config__")})


def _store_event_type(store: Any) -> Any:
    inner = getattr(store, "blocking", store)  # AsyncSegmentLog wraps a SegmentLog
    options = getattr(inner, "options", None)
    return getattr(options, "event_type", AgentEvent)


def create_app(
    store: Any,
    *,
    token: str | None = None,
    heartbeat: float = DEFAULT_HEARTBEAT,
    send_timeout: float = 30.0,
    retry_ms: int = 2000,
    threads: int = 8,
    poll_interval: float = 0.1,
    wait_step: float = 0.5,
    page_size: int = 200,
    cache_size: int = 1024,
    event_type: Any = None,
    allowed_hosts: Sequence[str] | None = None,
    shutdown_grace: float = 2.0,
) -> Starlette:
    """An ASGI app (Starlette) serving ``store`` over HTTP: JSON routes, SSE and the viewer.

    ``store`` is any event store: ``SegmentLog`` (typically opened ``read_only`` beside a
    writer process), ``MemoryEventStore``, ``PostgresEventStore``, their asyncio twins, or
    anything with ``list_after`` (``runs``, ``last_seq``, ``run_info`` and ``wait_for`` are
    used where present). The app never writes to it, and never closes it.

    Parameters:
        token: when set, every request must present it (``Authorization: Bearer``,
            ``?token=``, or the viewer's cookie), else 401.
        heartbeat: seconds between comment lines on an idle stream (> 0).
        send_timeout: seconds one write to a client may take before the stream is cut off.
        retry_ms: the reconnect delay suggested to browsers (the stream's ``retry:`` field).
        threads: most blocking store calls at once (plus as many for ``wait_for``).
        poll_interval: seconds between polls of a followed run, for stores without
            ``wait_for``; ``wait_step``: longest single ``wait_for`` call.
        page_size: most envelopes read from the store per call while streaming.
        cache_size: newest frames kept per followed run, shared by its clients.
        event_type: the store's msgspec event type, for ``GET /event-types`` (default: the
            ``SegmentLog``'s own, else ``AgentEvent``).
        allowed_hosts: if given, requests whose ``Host`` is not one of these names get 400
            (protects a server on 127.0.0.1 from DNS rebinding).
        shutdown_grace: seconds streams get to end cleanly when the server shuts down.

    Raises ``TypeError`` for an object without ``list_after``, ``ValueError`` for a bad
    parameter.
    """
    for name, value in (
        ("heartbeat", heartbeat),
        ("send_timeout", send_timeout),
        ("poll_interval", poll_interval),
        ("wait_step", wait_step),
    ):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
    for name, count in (
        ("retry_ms", retry_ms),
        ("threads", threads),
        ("page_size", page_size),
        ("cache_size", cache_size),
    ):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"{name} must be an int >= 1, got {count!r}")
    if token is not None and (not isinstance(token, str) or not token):
        raise ValueError("token must be a non-empty str, or None for no token")

    reader = StoreReader(store, threads=threads)
    feeds = FeedRegistry(
        reader,
        cache_size=cache_size,
        page_size=page_size,
        wait_step=wait_step,
        poll_interval=poll_interval,
    )
    names = _event_names(event_type if event_type is not None else _store_event_type(store))
    static_dir = resources.files("segmentlog.http").joinpath("static")
    static = {
        path: (static_dir.joinpath(file).read_bytes(), media)
        for path, (file, media) in _STATIC.items()
    }
    token_bytes = token.encode("utf-8") if token is not None else None

    def page_file(path: str) -> Callable[[Request], Awaitable[Response]]:
        body, media = static[path]

        async def endpoint(request: Request) -> Response:
            response = Response(body, media_type=media, headers=_PAGE_HEADERS)
            given = request.query_params.get("token")
            if (
                token_bytes is not None
                and given is not None
                and hmac.compare_digest(given.encode("utf-8"), token_bytes)
            ):
                # The viewer's later requests (scripts, fetches, EventSource) carry this
                # cookie instead of the token in every URL.
                response.set_cookie(COOKIE_NAME, given, httponly=True, samesite="strict")
            return response

        return endpoint

    async def event_types(request: Request) -> Response:
        return _json(_EventTypes(names))

    async def list_runs(request: Request) -> Response:
        limit = parse_limit(request.query_params.get("limit"), 100)
        cursor_text = request.query_params.get("cursor")
        ids = await reader.runs()
        start = 0
        if cursor_text is not None:
            cursor = str(parse_run_id(cursor_text))
            start = bisect.bisect_right(ids, cursor, key=str)
        chosen = ids[start : start + limit]
        more = start + limit < len(ids)
        runs = await reader.summaries(chosen)
        return _json(_RunsPage(runs, str(chosen[-1]) if more and chosen else None))

    async def get_run(request: Request) -> Response:
        run_id = parse_run_id(request.path_params["run_id"])
        return _json(await reader.summary(run_id))

    async def list_events(request: Request) -> Response:
        run_id = parse_run_id(request.path_params["run_id"])
        after = parse_seq(request.query_params.get("after"), "after") or 0
        limit = parse_limit(request.query_params.get("limit"), 100)
        return _json(await reader.list_after(run_id, after, limit))

    async def resume_point(run_id: uuid.UUID, after: int) -> tuple[int, bool]:
        """(the run's last seq, whether it is finished); NotFoundError for an unknown run."""
        try:
            info = await reader.summary(run_id)
            return info.last_seq or 0, info.terminal
        except Unsupported:  # a store with list_after only: look at the client's last seq
            page = await reader.list_after(run_id, max(after - 1, 0), 1)
            seen = page[0] if page and page[0].seq == after else None
            return after, seen is not None and seen.is_terminal

    async def stream(request: Request) -> Response:
        run_id = parse_run_id(request.path_params["run_id"])
        header = request.headers.get("last-event-id")
        if header is not None:
            after = parse_seq(header.strip(), "Last-Event-ID") or 0
        else:
            after = parse_seq(request.query_params.get("after"), "after") or 0
        last, finished = await resume_point(run_id, after)
        if finished and after >= last:
            return Response(status_code=204, headers=JSON_HEADERS)
        shutdown = anyio.Event()
        return _RunStream(
            run_id,
            _frames(feeds, run_id, after, last, shutdown, retry_ms),
            headers=JSON_HEADERS,
            ping=heartbeat,
            send_timeout=send_timeout,
            shutdown_event=shutdown,
            shutdown_grace_period=shutdown_grace,
        )

    routes = [Route(path, page_file(path), methods=["GET"]) for path in static]
    routes += [
        Route("/event-types", event_types, methods=["GET"]),
        Route("/runs", list_runs, methods=["GET"]),
        Route("/runs/{run_id}", get_run, methods=["GET"]),
        Route("/runs/{run_id}/events", list_events, methods=["GET"]),
        Route("/runs/{run_id}/stream", stream, methods=["GET"]),
    ]
    middleware = []
    if allowed_hosts is not None:
        middleware.append(Middleware(HostGate, allowed_hosts=list(allowed_hosts)))
    if token is not None:
        middleware.append(Middleware(TokenGate, token=token))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers=dict(EXCEPTION_HANDLERS),
    )
    app.state.feeds = feeds
    app.state.reader = reader
    return app


class _RunStream(EventSourceResponse):
    """An ``EventSourceResponse`` that reports a cut-off slow client in one log line."""

    def __init__(self, run_id: uuid.UUID, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run_id = run_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            client = scope.get("client") or ("?", 0)
            logger.warning(
                "stream of run %s to %s:%s cut off: the client stopped reading "
                "(a write took longer than send_timeout=%ss)",
                self.run_id,
                client[0],
                client[1],
                self.send_timeout,
            )


async def _frames(
    feeds: FeedRegistry,
    run_id: uuid.UUID,
    after: int,
    last: int,
    shutdown: anyio.Event,
    retry_ms: int,
) -> AsyncIterator[bytes]:
    # The first message carries only the retry hint (and a comment): no event is dispatched.
    yield b": segmentlog run %s after seq %d\r\nretry: %d\r\n\r\n" % (
        str(run_id).encode(),
        after,
        retry_ms,
    )
    cursor = after
    async with feeds.follow(run_id, last) as feed:
        while True:
            frames = await feed.frames_after(cursor, shutdown)
            if not frames:
                return
            end = next((i for i, f in enumerate(frames) if f.terminal), len(frames) - 1)
            yield b"".join(f.data for f in frames[: end + 1])
            cursor = frames[end].seq
            if frames[end].terminal:
                return
