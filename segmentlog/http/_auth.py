"""The bearer-token gate in front of every route (ASGI middleware).

Strategy and invariants
- With a token configured, a request passes only if it presents that token, as
  ``Authorization: Bearer <token>`` (API clients), as the query parameter ``?token=``
  (``EventSource`` cannot set headers, and a person opens the viewer from a link), or as the
  ``segmentlog_token`` cookie that the viewer page sets when it was opened with ``?token=``
  (so its scripts, style sheet, fetches and EventSource need not carry the token in URLs).
  Everything else gets 401 with a JSON body and ``WWW-Authenticate: Bearer``.
- Every comparison is ``hmac.compare_digest`` over bytes, whichever channel the token came
  in; a request that carries several candidates passes if any one matches.
- The gate wraps the whole app, so no route (the stream, the viewer's files, unknown paths)
  can be reached without the token. Lifespan messages pass through untouched.
"""

from __future__ import annotations

import hmac
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from ._errors import error_body

__all__ = ["COOKIE_NAME", "HostGate", "TokenGate"]

#: The cookie the viewer page sets (HttpOnly, SameSite=Strict) after ``/?token=...``.
COOKIE_NAME = "segmentlog_token"


def _candidates(scope: Scope) -> list[bytes]:
    found: list[bytes] = []
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, credentials = value.partition(b" ")
            if scheme.lower() == b"bearer":
                found.append(credentials.strip())
        elif name == b"cookie":
            try:
                jar = SimpleCookie(value.decode("latin-1"))
            except CookieError:
                continue
            morsel = jar.get(COOKIE_NAME)
            if morsel is not None:
                found.append(morsel.value.encode("utf-8", "surrogateescape"))
    query = scope.get("query_string", b"")
    if b"token=" in query:
        for key, val in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if key == "token":
                found.append(val.encode("latin-1"))
    return found


class TokenGate:
    """ASGI middleware: 401 unless the request presents ``token`` (see the module doc)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        if not token:
            raise ValueError("token must be a non-empty string (or None for no token)")
        self.app = app
        self._token = token.encode("utf-8")

    def allows(self, scope: Scope) -> bool:
        """True if the request carries the token in any accepted place."""
        ok = False
        for candidate in _candidates(scope):
            # No early exit: every candidate is compared, in constant time each.
            ok |= hmac.compare_digest(candidate, self._token)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.allows(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":  # no websocket routes; refuse before accepting
            await send({"type": "websocket.close", "code": 1008})
            return
        body = error_body(
            "unauthorized",
            "this server needs a token: send 'Authorization: Bearer <token>' "
            "(or ?token=<token> in the URL)",
        )
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="segmentlog"'),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class HostGate:
    """ASGI middleware: 400 unless the ``Host`` header names one of ``allowed_hosts``.

    A server on 127.0.0.1 is reachable from any web page the user visits through DNS
    rebinding (a hostile name that resolves to 127.0.0.1); such requests carry the hostile
    name in ``Host``, so allowing only the names the server is meant to be reached by stops
    them. Ports are ignored; IPv6 literals are matched with or without brackets.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: list[str]) -> None:
        self.app = app
        self._allowed = {_host_name(h.encode("utf-8")) for h in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = b""
        for name, value in scope.get("headers", ()):
            if name == b"host":
                host = value
                break
        if _host_name(host) in self._allowed:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = error_body(
            "bad_host",
            "this server answers only requests addressed to "
            + ", ".join(sorted(h.decode() for h in self._allowed))
            + " (see segmentlog serve --allow-host)",
        )
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _host_name(host: bytes) -> bytes:
    host = host.strip().lower()
    if host.startswith(b"["):  # [::1]:8000
        return host[1:].partition(b"]")[0]
    if host.count(b":") == 1:  # name:port
        return host.partition(b":")[0]
    return host  # a name, or a bare IPv6 literal
