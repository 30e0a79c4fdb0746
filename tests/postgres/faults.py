"""Helpers for the PostgreSQL fault tests: find a client's backend, run a call in a thread,
and make COMMIT wait (``commits_wait_for_a_missing_standby`` in ``conftest.py``).

Making COMMIT wait: ``synchronous_standby_names`` names a standby that never connects, and
only the victim's sessions use ``synchronous_commit = on`` (the libpq option
``SYNC_COMMIT_OPTION``). Its COMMIT is then durable locally, but invisible to other sessions
and unacknowledged, until the backend is cancelled or terminated: exactly "committed, not
acknowledged".
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg

#: The libpq option that makes a session's COMMIT wait for the missing standby.
SYNC_COMMIT_OPTION = "options='-c synchronous_commit=on'"
GHOST_STANDBY = "segmentlog_ghost"


def app_dsn(dsn: str) -> tuple[str, str]:
    """``dsn`` with a fresh application_name (to find its backends), and that name."""
    app = f"victim_{uuid.uuid4().hex[:8]}"
    return f"{dsn} application_name={app}", app


def wait_for_backend(admin: psycopg.Connection, app: str, wait_event: str) -> int:
    """The pid of the ``app`` backend once it waits on ``wait_event`` (10 s at most)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND wait_event = %s",
            (app, wait_event),
        ).fetchone()
        if row is not None:
            return int(row[0])
        time.sleep(0.01)
    raise AssertionError(f"no backend of {app} ever waited on {wait_event}")


def count_backends(admin: psycopg.Connection, app: str) -> int:
    """How many server backends ``app`` has now."""
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Start ``call`` in a thread; its ``result`` or ``error`` lands in the dict."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def set_standby(dsn: str, names: str | None) -> None:
    """Name the synchronous standby (``None``: reset), and wait until the server uses it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if names is None:
            conn.execute("ALTER SYSTEM RESET synchronous_commit")
            conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
        else:
            conn.execute("ALTER SYSTEM SET synchronous_commit = 'local'")
            conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{names}'")
        conn.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SHOW synchronous_standby_names").fetchone()
        if row == (names or "",):
            return
        time.sleep(0.02)
    raise AssertionError("the server never reloaded synchronous_standby_names")
