"""The API's errors: every one is JSON, ``{"error": code, "detail": sentence}``.

Strategy and invariants
- ``ApiError`` carries a status, a short machine-readable code and a human sentence saying what
  was wrong; request parsing raises it (``_params``).
- ``EXCEPTION_HANDLERS`` renders it, Starlette's own 404 and 405, the store's errors
  (``NotFoundError`` is a 404 ``run_not_found``; PostgreSQL out of reach is a 503; anything
  else a store raises is a 500 with its message) and ``Unsupported`` (501) the same way, so
  a client never has to parse HTML or plain text.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..errors import NotFoundError, SegmentLogError
from ._reader import Unsupported

__all__ = ["EXCEPTION_HANDLERS", "JSON_HEADERS", "ApiError", "error_body"]

logger = logging.getLogger("segmentlog.http")

#: Headers of every JSON answer: live data is never cached.
JSON_HEADERS = {"cache-control": "no-store"}


class ApiError(Exception):
    """An error answered with ``status`` and a JSON body ``{"error": code, "detail": ...}``."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})


class _ErrorBody(msgspec.Struct, frozen=True):
    error: str
    detail: str


def error_body(code: str, detail: str) -> bytes:
    """The JSON body of an error response."""
    return msgspec.json.encode(_ErrorBody(code, detail))


def _unavailable_error() -> type[BaseException] | None:
    module = sys.modules.get("segmentlog.postgres")  # loaded only if a Postgres store exists
    error: type[BaseException] | None = getattr(module, "PostgresUnavailableError", None)
    return error


def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        error_body(code, detail),
        status_code=status,
        media_type="application/json",
        headers={**JSON_HEADERS, **(headers or {})},
    )


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _error(exc.status, exc.code, exc.detail, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _error(404, "not_found", f"no route {request.method} {request.url.path}")
    if exc.status_code == 405:
        return _error(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed here; this API is read-only (GET)",
            dict(exc.headers or {}),
        )
    return _error(exc.status_code, "http_error", str(exc.detail), dict(exc.headers or {}))


async def _not_found(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NotFoundError)
    return _error(404, "run_not_found", f"run {exc.run_id} has no events")


async def _unsupported(request: Request, exc: Exception) -> Response:
    return _error(501, "not_supported", str(exc))


async def _store_error(request: Request, exc: Exception) -> Response:
    unavailable = _unavailable_error()
    if unavailable is not None and isinstance(exc, unavailable):
        return _error(503, "store_unavailable", str(exc), {"retry-after": "2"})
    logger.error("store error on %s: %s", request.url.path, exc)
    return _error(500, "store_error", str(exc))


EXCEPTION_HANDLERS: Mapping[Any, Any] = {
    ApiError: _api_error,
    HTTPException: _http_error,
    NotFoundError: _not_found,
    Unsupported: _unsupported,
    SegmentLogError: _store_error,
}
