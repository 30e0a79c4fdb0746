"""kill -9 between write and acknowledgement, then a retry with the same key: one event.

A child process (``keyed_child.py``) appends with idempotency keys and prints ``try n``
before and ``ack n seq event_id`` after each append. Two ways to kill it:

- **Committed, not acknowledged, every time.** The child's COMMIT waits for a synchronous
  standby that never comes (``commits_wait_for_a_missing_standby``): the commit is durable
  but neither visible nor answered. The parent SIGKILLs the child there, cancels the wait
  so that the commit becomes visible, sees the row, and retries the key from a new
  connection: the retry returns that row, and the key is stored once.
- **Anywhere.** The child appends as fast as it can and is killed a random moment later
  (before sending, in flight, between commit and ack, after the ack). The parent retries
  every key the child tried: each is stored exactly once, acked ones unchanged.

``SEGMENTLOG_SOAK=1`` runs many more cycles.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from segmentlog.postgres import EVENTS_TABLE, PostgresEventStore
from tests.postgres.faults import app_dsn, wait_for_backend
from tests.postgres.keyed_child import keyed_event, keyed_key

pytestmark = pytest.mark.postgres

SOAK = os.environ.get("SEGMENTLOG_SOAK") == "1"
COMMITTED_CYCLES = 60 if SOAK else 6
RANDOM_CYCLES = 200 if SOAK else 15
CHILD = Path(__file__).with_name("keyed_child.py")


class Child:
    """A running ``keyed_child.py``; ``lines`` is what it printed, once it is dead."""

    def __init__(self, dsn: str, schema: str, run_id: uuid.UUID, first: int, count: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), dsn, schema, str(run_id), str(first), str(count)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()
        if ready != b"ready\n":
            self.proc.kill()
            _, err = self.proc.communicate(timeout=30)
            raise AssertionError(f"child did not start: {ready!r} {err.decode()[-2000:]}")
        self.lines: list[list[str]] = []

    def kill(self) -> None:
        """SIGKILL the child and collect what it printed."""
        self.proc.send_signal(signal.SIGKILL)
        # Not communicate(): it reads the pipes' descriptors, skipping what readline buffered.
        assert self.proc.stdout is not None and self.proc.stderr is not None
        out, err = self.proc.stdout.read(), self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        self.proc.wait(30)
        assert self.proc.returncode == -signal.SIGKILL, f"child ended: {err.decode()[-2000:]}"
        self.lines = [line.split() for line in out.decode().split("\n")[:-1]]

    def tried(self) -> list[int]:
        return [int(line[1]) for line in self.lines if line[0] == "try"]

    def acked(self) -> dict[int, tuple[int, uuid.UUID]]:
        return {
            int(n): (int(seq), uuid.UUID(event_id))
            for kind, n, seq, event_id in (line for line in self.lines if line[0] == "ack")
        }


def _rows_with_key(admin: psycopg.Connection, schema: str, key: str) -> list[tuple[int]]:
    return admin.execute(
        sql.SQL("SELECT seq FROM {} WHERE key = %s").format(sql.Identifier(schema, EVENTS_TABLE)),
        (key,),
    ).fetchall()


def test_kill9_after_commit_before_ack_then_a_retry_stores_the_event_once(
    store: PostgresEventStore,
    dsn: str,
    schema: str,
    admin: psycopg.Connection,
    commits_wait_for_a_missing_standby: str,
) -> None:
    run_id = uuid.uuid4()
    for n in range(COMMITTED_CYCLES):
        victim_dsn, app = app_dsn(dsn)
        child = Child(f"{victim_dsn} {commits_wait_for_a_missing_standby}", schema, run_id, n, 1)
        pid = wait_for_backend(admin, app, "SyncRep")  # committed locally, not answered
        assert _rows_with_key(admin, schema, keyed_key(n)) == []  # nor visible yet
        child.kill()
        assert child.tried() == [n] and child.acked() == {}
        admin.execute("SELECT pg_cancel_backend(%s)", (pid,))  # the commit becomes visible
        deadline = time.monotonic() + 10
        while not (rows := _rows_with_key(admin, schema, keyed_key(n))):
            assert time.monotonic() < deadline, "the killed child's commit never became visible"
            time.sleep(0.01)
        assert rows == [(n + 1,)]
        with PostgresEventStore(dsn, schema=schema) as retrying:
            retried = retrying.append(keyed_event(run_id, n), key=keyed_key(n))
        assert (retried.seq, retried.key) == (n + 1, keyed_key(n))
        assert _rows_with_key(admin, schema, keyed_key(n)) == [(n + 1,)]
    stored = store.list_after(run_id)
    assert [(e.seq, e.key) for e in stored] == [
        (n + 1, keyed_key(n)) for n in range(COMMITTED_CYCLES)
    ]


def test_kill9_anywhere_in_keyed_appends_then_retries_store_each_key_once(
    store: PostgresEventStore, dsn: str, schema: str
) -> None:
    rng = random.Random("segmentlog-pg-kill9")
    run_id = uuid.uuid4()
    next_key, killed_in_flight = 0, 0
    acked: dict[int, tuple[int, uuid.UUID]] = {}
    for _ in range(RANDOM_CYCLES):
        child = Child(dsn, schema, run_id, next_key, 10_000)
        time.sleep(rng.uniform(0.0, 0.06))
        child.kill()
        tried = child.tried()
        acked.update(child.acked())
        killed_in_flight += bool(tried) and tried[-1] not in acked
        for n in tried:  # the parent retries whatever it cannot be sure of (and more)
            retried = store.append(keyed_event(run_id, n), key=keyed_key(n))
            if n in acked:
                assert (retried.seq, retried.event_id) == acked[n]
        next_key = (tried[-1] + 1) if tried else next_key
    stored = store.list_after(run_id, None, 100_000)
    assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
    assert [e.key for e in stored] == [keyed_key(n) for n in range(next_key)]
    assert [e.event for e in stored] == [keyed_event(run_id, n) for n in range(next_key)]
    assert {n: (stored[n].seq, stored[n].event_id) for n in acked} == acked
    assert killed_in_flight, "no kill landed between a try and its ack; the test proved little"
