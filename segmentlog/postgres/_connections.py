"""What both stores decide about connections, with the I/O left to their drivers.

Strategy and invariants
- Given a DSN a store opens its own connections (autocommit) and keeps up to
  ``max_idle_connections`` idle, all closed by ``close()``; given a psycopg_pool pool it
  borrows and returns the pool's and never closes the pool. ``IdleConnections`` is the
  first case's bookkeeping; the opening and closing are the driver's (``_sync``/``_async``).
- A connection that broke is discarded, and so is every idle one (the server probably went
  away for all of them). Before an idle connection is used, ``still_open`` checks its socket
  without a round trip for the EOF a restarted server leaves, so the store reconnects knowing
  nothing was sent rather than sending into a dead connection.
- A ``Lease`` is one operation's hold on a connection: borrowed at the first step that
  needs one, swapped by ``Reconnect``, given back when the operation ends.
"""

from __future__ import annotations

import select
import threading
from typing import Any, Generic, Protocol, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import ExecStatus, TransactionStatus

from ._errors import first_line

__all__ = [
    "IdleConnections",
    "Lease",
    "describe_target",
    "has_rows",
    "is_broken",
    "is_pool",
    "libpq_connect_timeout",
    "needs_rollback",
    "pool_target",
    "still_open",
]


class _Conn(Protocol):
    @property
    def closed(self) -> bool: ...
    @property
    def broken(self) -> bool: ...
    @property
    def info(self) -> psycopg.ConnectionInfo: ...
    def fileno(self) -> int: ...


C = TypeVar("C", bound=_Conn)


class Lease(Generic[C]):
    """One operation's hold on a connection."""

    __slots__ = ("autocommit", "conn")

    def __init__(self) -> None:
        self.conn: C | None = None
        #: What ``autocommit`` was before ``Listen`` switched it on, else None.
        self.autocommit: bool | None = None


class IdleConnections(Generic[C]):
    """Up to ``max_idle`` open connections kept for reuse; thread-safe."""

    def __init__(self, max_idle: int) -> None:
        self._max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: list[C] = []
        self._closed = False

    def take(self) -> C | None:
        """An idle connection, or None (then open a new one)."""
        with self._lock:
            return self._idle.pop() if self._idle else None

    def keep(self, conn: C) -> bool:
        """Keep ``conn`` for reuse if it is reusable and there is room; False: close it."""
        reusable = not is_broken(conn) and conn.info.transaction_status == TransactionStatus.IDLE
        with self._lock:
            if reusable and not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return True
        return False

    def drain(self) -> list[C]:
        """Forget every idle connection and return them (to be closed)."""
        with self._lock:
            idle, self._idle = self._idle, []
        return idle

    def close(self) -> list[C]:
        """Keep nothing from now on; return the idle connections (to be closed)."""
        with self._lock:
            self._closed = True
        return self.drain()


def is_broken(conn: _Conn | None) -> bool:
    """True when the connection is gone (closed, or lost by psycopg)."""
    return conn is None or conn.closed or conn.broken


def still_open(conn: _Conn) -> bool:
    """False when this idle connection may be dead; checked without a round trip.

    A server that shut down or terminated the backend leaves a FATAL message and EOF in the
    socket, and nothing else arrives unasked on an idle connection that is not listening.
    """
    if is_broken(conn):
        return False
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    return not readable


def has_rows(cursor: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> bool:
    """True when the cursor's last statement returned rows (``fetchall`` would not raise).

    Rejected: ``cursor.description is not None``, which builds a Column object per column
    and cost more than a tenth of a whole append.
    """
    result = cursor.pgresult
    return result is not None and result.status == ExecStatus.TUPLES_OK


def needs_rollback(conn: _Conn) -> bool:
    """True when a pool's connection must be rolled back before it is returned."""
    return not is_broken(conn) and conn.info.transaction_status != TransactionStatus.IDLE


def is_pool(source: object) -> bool:
    """True for a psycopg_pool pool (sync or async), by its shape: psycopg_pool is optional."""
    return hasattr(source, "getconn") and hasattr(source, "putconn")


def libpq_connect_timeout(seconds: float) -> int:
    """``connect_timeout`` as libpq takes it: whole seconds, at least 2 (it rounds smaller
    values up to 2 anyway)."""
    return max(2, round(seconds))


def pool_target(pool: Any) -> str:
    """How errors name a pool."""
    return f"pool {getattr(pool, 'name', '?')}"


def describe_target(dsn: str) -> str:
    """How errors name the server of ``dsn``; raises ``ValueError`` for a malformed DSN."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ValueError(f"invalid PostgreSQL DSN: {first_line(exc)}") from exc
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return f"host={host} port={params.get('port') or 5432} dbname={params.get('dbname') or '-'}"
