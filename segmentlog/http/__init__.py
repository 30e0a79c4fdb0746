"""Watch runs over HTTP: a JSON API, resumable server-sent events and a live viewer.

Strategy and invariants
- Optional: needs ``pip install 'segmentlog[http]'`` (Starlette, uvicorn, sse-starlette).
  ``import segmentlog`` never imports this package; importing it without the extra raises an
  ImportError that says what to install.
- ``create_app(store)`` returns the ASGI app (``app.py``); ``segmentlog serve DIR`` runs it
  with uvicorn over a ``read_only`` open of DIR (``serve.py``). The app only reads.
- One concern per module: ``_params`` (strict request parsing), ``_errors`` (JSON errors),
  ``_auth``
  (token and Host gates), ``_reader`` (async face over blocking and async stores),
  ``_feed`` (one shared follower per streamed run), ``app`` (routes), ``serve`` (the CLI's
  server), ``static/`` (the viewer: plain HTML, JS and CSS, no build step, no CDN).
"""

from __future__ import annotations

try:
    import sse_starlette  # noqa: F401
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as _exc:  # pragma: no cover - depends on the install
    raise ImportError(
        f"segmentlog.http needs the http extra ({_exc.name} is missing): "
        "pip install 'segmentlog[http]'"
    ) from _exc

from ._reader import RunSummary
from .app import DEFAULT_HEARTBEAT, create_app

__all__ = ["DEFAULT_HEARTBEAT", "RunSummary", "create_app"]
