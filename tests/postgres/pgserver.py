"""A throwaway PostgreSQL server for the test session.

Strategy and invariants
- ``SEGMENTLOG_PG_DSN`` set: use that server and never stop it (``server.controllable`` is
  False, so tests that restart the server do not run).
- Otherwise ``initdb`` a cluster in a fresh temporary directory and start it with ``pg_ctl``,
  listening on a Unix socket in that directory only (no TCP port, so parallel sessions never
  collide). initdb refuses to run as root, so under root the server runs as the ``postgres``
  system user (created if missing) and the directory is handed to it.
- The cluster runs with ``fsync=off``: the tests kill connections and restart the server
  cleanly, which loses nothing even without fsync; power loss is not what they test.
- A server that cannot start is an error (``PostgresServerError``), never a skip.
- ``shared_server()`` starts one server per process on first use and registers its stop with
  ``atexit``; the ``postgres_server`` session fixture stops it at the end of the session.
  The conformance backend reaches the same server through ``shared_server()``.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_BIN = Path(os.environ.get("SEGMENTLOG_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"
PORT = 5432


class PostgresServerError(RuntimeError):
    """The throwaway server could not be created, started or stopped."""


class PostgresServer:
    """A PostgreSQL server the tests connect to through ``dsn``."""

    def __init__(self, dsn: str, root: Path | None = None) -> None:
        self.dsn = dsn
        self.root = root
        self.controllable = root is not None

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", PG_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            log = self.root / "server.log" if self.root else None
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise PostgresServerError(
                f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n"
                f"server log tail:\n{tail}"
            )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        assert self.root is not None
        options = (
            f"-k {self.root} -c listen_addresses='' -p {PORT} -c fsync=off "
            "-c full_page_writes=off -c max_connections=60 -c shared_buffers=32MB"
        )
        self._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are disconnected, nothing is lost)."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        """Stop the server if it runs and delete its directory."""
        if self.root is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _ensure_pg_user() -> None:
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
            check=True,
            capture_output=True,
        )


def start_throwaway_server() -> PostgresServer:
    """Create and start a fresh cluster, or wrap ``SEGMENTLOG_PG_DSN`` when it is set."""
    external = os.environ.get("SEGMENTLOG_PG_DSN")
    if external:
        return PostgresServer(external)
    if not (PG_BIN / "initdb").exists():
        raise PostgresServerError(
            f"{PG_BIN / 'initdb'} not found: install PostgreSQL 15 "
            "(apt-get install postgresql-15), set SEGMENTLOG_PG_BIN to its bin directory, "
            "or point SEGMENTLOG_PG_DSN at a running server"
        )
    root = Path(tempfile.mkdtemp(prefix="segmentlog-pg-"))
    if os.geteuid() == 0:
        _ensure_pg_user()
        user = pwd.getpwnam(PG_USER)
        os.chown(root, user.pw_uid, user.pw_gid)
    root.chmod(0o755)
    server = PostgresServer(f"host={root} port={PORT} user={PG_USER} dbname=postgres", root)
    try:
        server._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(server.data_dir),
            "-U",
            PG_USER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
            timeout=120,
        )
        server.start()
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return server


_lock = threading.Lock()
_shared: PostgresServer | None = None


def shared_server() -> PostgresServer:
    """The process's server, started on first use and stopped at exit (or by the fixture)."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = start_throwaway_server()
            atexit.register(_stop_shared)
        return _shared


def _stop_shared() -> None:
    global _shared
    with _lock:
        server, _shared = _shared, None
    if server is not None:
        server.destroy()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server; stopped and deleted when the session ends."""
    server = shared_server()
    try:
        yield server
    finally:
        _stop_shared()
