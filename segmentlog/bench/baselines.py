"""Baselines: SQLite doing the same job, and the raw floor of pure Python on this disk.

Strategy and invariants
- Every baseline starts from the same events as segmentlog, stamps them into the same
  Envelopes (``data.Stamper``: seq, session, UUIDv7 id, timestamp) and encodes them with the same
  msgspec encoder; readers decode every payload back into an ``Envelope[AgentEvent]``. Encode and
  decode are part of every measured time, on both sides.
- SQLite runs in WAL mode with ``events(run_id BLOB, seq INTEGER, payload BLOB,
  PRIMARY KEY (run_id, seq)) WITHOUT ROWID``: the table a careful engineer would choose for
  "append to a run, page through a run". ``synchronous`` is FULL against segmentlog's
  ``always``/``batch`` and OFF or NORMAL against ``never``/``interval``. Connections are in
  autocommit mode, so one ``execute`` of an INSERT is one committed transaction.
- With several threads, SQLite gets one shared connection behind a lock. Per-thread
  connections would make writers wait in SQLite's busy handler, which sleeps in whole
  milliseconds and would make SQLite look slower than it can be.
- The raw floor writes the very frames the engine writes (``frames.FrameEncoder``) into one
  file, one ``os.write`` per 64 KiB and no other bookkeeping, and reads them back with one big
  read and a ``read_frame`` walk. It is the limit of pure Python with this codec on this disk:
  the engine can approach it, not beat it. The durable floor is ``os.write`` + ``fdatasync``
  per record.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any, Final

from ..events import AgentEvent, Envelope
from ..format import (
    DEFAULT_MAX_RECORD_BYTES,
    FramedRecord,
)
from ..frames import (
    FrameEncoder,
    read_frame,
)
from ..schema import EnvelopeCodec
from .data import Stamper, envelope_decoder, envelope_encoder
from .timing import Sample, latency_sample, peak_rss_kib, rss_kib, run_threads

__all__ = [
    "RawFileBuilder",
    "SqliteBuilder",
    "raw_append",
    "raw_append_durable",
    "raw_replay",
    "raw_replay_probe",
    "sqlite_append",
    "sqlite_append_batches",
    "sqlite_append_threads",
    "sqlite_connect",
    "sqlite_kill_writer",
    "sqlite_open_runs",
    "sqlite_reopen_after_kill",
    "sqlite_replay",
    "sqlite_replay_probe",
    "sqlite_seek",
]

RAW_CHUNK: Final = 64 * 1024
DB_NAME: Final = "events.db"
RAW_NAME: Final = "frames.raw"

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS events (run_id BLOB NOT NULL, seq INTEGER NOT NULL, "
    "payload BLOB NOT NULL, PRIMARY KEY (run_id, seq)) WITHOUT ROWID"
)
_INSERT: Final = "INSERT INTO events (run_id, seq, payload) VALUES (?, ?, ?)"
_PAGE: Final = "SELECT payload FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?"


# --- SQLite ----------------------------------------------------------------------------


def sqlite_connect(
    directory: str, synchronous: str, *, check_same_thread: bool = True
) -> sqlite3.Connection:
    """Open (creating if needed) the baseline database in ``directory``."""
    conn = sqlite3.connect(
        os.path.join(directory, DB_NAME),
        isolation_level=None,
        check_same_thread=check_same_thread,
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(_SCHEMA)
    return conn


def sqlite_append(directory: str, events: list[Any], synchronous: str) -> Sample:
    """One committed INSERT per event. Value: events per second."""
    conn = sqlite_connect(directory, synchronous)
    stamp = Stamper().stamp
    encode = envelope_encoder().encode
    execute = conn.execute
    start = time.perf_counter()
    for event in events:
        env = stamp(event)
        execute(_INSERT, (env.run_id.bytes, env.seq, encode(env)))
    conn.close()
    elapsed = time.perf_counter() - start
    return Sample(len(events) / elapsed, {"seconds": elapsed})


def sqlite_append_batches(directory: str, batches: list[list[Any]], synchronous: str) -> Sample:
    """One transaction per batch (``executemany``). Value: events per second."""
    conn = sqlite_connect(directory, synchronous)
    stamp = Stamper().stamp
    encode = envelope_encoder().encode
    count = sum(len(b) for b in batches)
    start = time.perf_counter()
    for batch in batches:
        rows = []
        for event in batch:
            env = stamp(event)
            rows.append((env.run_id.bytes, env.seq, encode(env)))
        conn.execute("BEGIN")
        conn.executemany(_INSERT, rows)
        conn.execute("COMMIT")
    conn.close()
    elapsed = time.perf_counter() - start
    return Sample(count / elapsed, {"seconds": elapsed})


def sqlite_append_threads(directory: str, per_thread: list[list[Any]], synchronous: str) -> Sample:
    """Each thread appends its list of events (its own run, or a shared one), one commit per
    event. Seqs are assigned under the connection's lock, as the engine assigns them under
    the run's lock. Value: events per second."""
    conn = sqlite_connect(directory, synchronous, check_same_thread=False)
    lock = threading.Lock()
    encode = envelope_encoder().encode
    stamp = Stamper().stamp

    def insert(event: Any) -> None:
        with lock:
            env = stamp(event)
            conn.execute(_INSERT, (env.run_id.bytes, env.seq, encode(env)))

    try:
        elapsed = run_threads(per_thread, insert)
    finally:
        conn.close()
    count = sum(len(x) for x in per_thread)
    return Sample(count / elapsed, {"seconds": elapsed})


class SqliteBuilder:
    """Fills a baseline database with already stamped envelopes (fixture, not timed)."""

    def __init__(self, directory: str) -> None:
        self._conn = sqlite_connect(directory, "OFF")
        self._encode = envelope_encoder().encode

    def add(self, envelopes: Iterable[Envelope[Any]]) -> None:
        """Insert envelopes in one transaction."""
        encode = self._encode
        self._conn.execute("BEGIN")
        self._conn.executemany(_INSERT, ((e.run_id.bytes, e.seq, encode(e)) for e in envelopes))
        self._conn.execute("COMMIT")

    def close(self) -> None:
        """Checkpoint the WAL into the database file and close."""
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._conn.close()


def _sqlite_read_all(conn: sqlite3.Connection, runs: list[uuid.UUID], limit: int) -> int:
    decode = envelope_decoder().decode
    count = 0
    for run_id in runs:
        key = run_id.bytes
        after = 0
        while True:
            rows = conn.execute(_PAGE, (key, after, limit)).fetchall()
            if not rows:
                break
            page = [decode(row[0]) for row in rows]
            count += len(page)
            after = page[-1].seq
            if len(rows) < limit:
                break
    return count


def sqlite_replay(directory: str, runs: list[uuid.UUID], limit: int) -> Sample:
    """Page through every run, decoding each payload. Value: events per second."""
    conn = sqlite_connect(directory, "NORMAL")
    start = time.perf_counter()
    count = _sqlite_read_all(conn, runs, limit)
    elapsed = time.perf_counter() - start
    conn.close()
    return Sample(count / elapsed, {"seconds": elapsed, "events": count})


def sqlite_replay_probe(directory: str, runs: list[uuid.UUID], limit: int) -> dict[str, float]:
    """Child-process memory probe of ``sqlite_replay``."""
    before = rss_kib()
    conn = sqlite_connect(directory, "NORMAL")
    count = _sqlite_read_all(conn, runs, limit)
    conn.close()
    return {"rss_before_kib": before, "peak_rss_kib": peak_rss_kib(), "events": count}


def sqlite_seek(
    directory: str, run_id: uuid.UUID, run_events: int, probes: int, limit: int, seed: int
) -> Sample:
    """Latency of one page of ``limit`` after a random seq. Value: p50 in microseconds."""
    conn = sqlite_connect(directory, "NORMAL")
    decode = envelope_decoder().decode
    rng = random.Random(seed)
    key = run_id.bytes
    top = max(1, run_events - limit)
    latencies: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(probes):
        k = rng.randrange(top)
        t0 = clock()
        rows = conn.execute(_PAGE, (key, k, limit)).fetchall()
        page = [decode(row[0]) for row in rows]
        latencies.append(clock() - t0)
        if not page:
            raise AssertionError("sqlite seek returned nothing")
    conn.close()
    return latency_sample(latencies)


def sqlite_kill_writer(directory: str, runs: dict[uuid.UUID, list[Any]]) -> None:
    """Child process: write runs with synchronous=NORMAL, then die by SIGKILL mid-flight."""
    conn = sqlite_connect(directory, "NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    stamp = Stamper().stamp
    encode = envelope_encoder().encode
    lists = list(runs.values())
    for i in range(max(len(x) for x in lists)):
        for events in lists:
            if i < len(events):
                env = stamp(events[i])
                conn.execute(_INSERT, (env.run_id.bytes, env.seq, encode(env)))
    os.kill(os.getpid(), 9)


def sqlite_reopen_after_kill(directory: str) -> Sample:
    """Open a database left by a killed writer and read every run's last seq. Value: seconds."""
    start = time.perf_counter()
    conn = sqlite_connect(directory, "NORMAL")
    rows = conn.execute("SELECT run_id, MAX(seq) FROM events GROUP BY run_id").fetchall()
    conn.close()
    elapsed = time.perf_counter() - start
    return Sample(elapsed, {"runs": len(rows)})


def sqlite_open_runs(directory: str) -> Sample:
    """Open a database and list its distinct run ids. Value: seconds."""
    start = time.perf_counter()
    conn = sqlite_connect(directory, "NORMAL")
    rows = conn.execute("SELECT DISTINCT run_id FROM events").fetchall()
    conn.close()
    elapsed = time.perf_counter() - start
    return Sample(elapsed, {"runs": len(rows)})


# --- the raw floor ---------------------------------------------------------------------


def raw_append(directory: str, events: list[Any]) -> Sample:
    """Frames written one ``os.write`` per 64 KiB, no index, no per-run files.

    Value: events per second.
    """
    stamp = Stamper().stamp
    encode = FrameEncoder().encode
    fd = os.open(os.path.join(directory, RAW_NAME), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    buf = bytearray()
    write = os.write
    start = time.perf_counter()
    for event in events:
        encode(buf, stamp(event), 0)
        if len(buf) >= RAW_CHUNK:
            write(fd, buf)
            buf.clear()
    if buf:
        write(fd, buf)
    os.close(fd)
    elapsed = time.perf_counter() - start
    return Sample(len(events) / elapsed, {"seconds": elapsed})


def raw_append_durable(directory: str, events: list[Any]) -> Sample:
    """One ``os.write`` + ``os.fdatasync`` per frame. Value: events per second."""
    stamp = Stamper().stamp
    encode = FrameEncoder().encode
    fd = os.open(os.path.join(directory, RAW_NAME), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    buf = bytearray()
    write = os.write
    sync = os.fdatasync
    start = time.perf_counter()
    for event in events:
        encode(buf, stamp(event), 1)
        write(fd, buf)
        sync(fd)
        buf.clear()
    os.close(fd)
    elapsed = time.perf_counter() - start
    return Sample(len(events) / elapsed, {"seconds": elapsed})


class RawFileBuilder:
    """Writes already stamped envelopes as frames into one file (fixture, not timed)."""

    def __init__(self, directory: str) -> None:
        self._fd = os.open(
            os.path.join(directory, RAW_NAME), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644
        )
        self._encode = FrameEncoder().encode

    def add(self, envelopes: Iterable[Envelope[Any]]) -> None:
        """Append the envelopes' frames."""
        buf = bytearray()
        for env in envelopes:
            self._encode(buf, env, 1)
        os.write(self._fd, buf)

    def close(self) -> None:
        """Close the file."""
        os.close(self._fd)


def _raw_walk(path: str, limit: int) -> int:
    decode = EnvelopeCodec[Any](AgentEvent).decode
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    count = 0
    page: list[Envelope[Any]] = []
    max_bytes = DEFAULT_MAX_RECORD_BYTES
    while True:
        rec = read_frame(data, pos, max_bytes)
        if not isinstance(rec, FramedRecord):
            break
        page.append(decode(rec.payload))
        if len(page) == limit:
            count += limit
            page = []
        pos = rec.end
    return count + len(page)


def raw_replay(directory: str, limit: int) -> Sample:
    """One big read, then a frame walk decoding every payload. Value: events per second."""
    path = os.path.join(directory, RAW_NAME)
    start = time.perf_counter()
    count = _raw_walk(path, limit)
    elapsed = time.perf_counter() - start
    return Sample(count / elapsed, {"seconds": elapsed, "events": count})


def raw_replay_probe(directory: str, limit: int) -> dict[str, float]:
    """Child-process memory probe of ``raw_replay``."""
    before = rss_kib()
    count = _raw_walk(os.path.join(directory, RAW_NAME), limit)
    return {"rss_before_kib": before, "peak_rss_kib": peak_rss_kib(), "events": count}
