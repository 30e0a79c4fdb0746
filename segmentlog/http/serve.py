"""``segmentlog serve DIR``: run ``create_app`` with uvicorn over a read-only open of DIR.

Strategy and invariants
- The log is opened ``read_only``: the server takes no lock, writes nothing, never creates a
  directory, and follows a writer in another process.
- The listening socket is bound here, before uvicorn starts, so a port in use or a bad host
  is an ``OSError`` that the CLI prints as one line (exit 3), and ``--port 0`` works: the
  line announcing the server names the port actually bound.
- Bound to a loopback address, the server answers only Host names that mean loopback
  (``localhost``, ``127.0.0.1``, ``::1``, plus ``--allow-host``), which stops DNS rebinding.
- uvicorn's access log would print ``?token=`` from request lines; a filter masks it.
- SIGINT/SIGTERM: uvicorn stops accepting, sse-starlette tells every stream, each ends with a
  clean end of body, and uvicorn waits at most ``GRACEFUL_SECONDS`` for the rest. uvicorn
  then raises the signal again for the handler that was there before it; for SIGTERM that
  is a no-op installed here, so ``serve`` returns, the log is closed and the exit code is 0
  (the default handler would kill the process before that).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Sequence

import uvicorn

from .. import log as log_module
from .app import DEFAULT_HEARTBEAT, create_app

__all__ = ["GRACEFUL_SECONDS", "LOOPBACK_NAMES", "serve"]

#: The longest uvicorn waits for open connections when told to stop.
GRACEFUL_SECONDS = 5
#: Host names a loopback-bound server answers to.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

_TOKEN_IN_URL = re.compile(r"(token=)[^&\s]*")


class _MaskToken(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_URL.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        return True


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def _sigterm_returns() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # uvicorn installs no signal handlers off the main thread either
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve(
    path: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    heartbeat: float = DEFAULT_HEARTBEAT,
    allow_hosts: Sequence[str] = (),
) -> None:
    """Serve the log at ``path`` until SIGINT or SIGTERM (see the module docstring).

    Raises what ``segmentlog.open(path, read_only=True)`` raises (``NotASegmentLogError``
    for a missing or foreign directory), and ``OSError`` when the address cannot be bound.
    """
    log = log_module.open(path, read_only=True)
    try:
        allowed = [*LOOPBACK_NAMES, *allow_hosts] if _is_loopback(host) else None
        app = create_app(log, token=token, heartbeat=heartbeat, allowed_hosts=allowed)
        sock = _bind(host, port)
        try:
            config = uvicorn.Config(
                app,
                log_level="info",
                timeout_graceful_shutdown=GRACEFUL_SECONDS,
                server_header=False,
                proxy_headers=False,
                lifespan="off",
            )
            logging.getLogger("uvicorn.access").addFilter(_MaskToken())
            bound = sock.getsockname()
            shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
            sys.stderr.write(
                f"segmentlog serve: serving {path} on http://{shown}:{bound[1]}/ "
                "(the viewer is at /; Ctrl+C stops)\n"
            )
            sys.stderr.flush()
            with _sigterm_returns():
                uvicorn.Server(config).run(sockets=[sock])
        finally:
            sock.close()
    finally:
        log.close()
