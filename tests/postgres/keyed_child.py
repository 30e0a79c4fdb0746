"""Child process of the PostgreSQL kill -9 tests: keyed appends, each announced and acked.

Usage: ``python keyed_child.py <dsn> <schema> <run id> <first key number> <count>``.
For ``n`` from the first key number on, ``count`` times, it prints ``try <n>``, appends
``keyed_event(run_id, n)`` with key ``keyed_key(n)`` and, once ``append`` has returned,
prints ``ack <n> <seq> <event id>``; every line is flushed at once. ``ready`` is printed
once the store has connected. The parent SIGKILLs it somewhere in between, then retries.
"""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime

from segmentlog import TextDelta
from segmentlog.postgres import PostgresEventStore

_STAMP = datetime(2025, 5, 6, 7, 8, 9, tzinfo=UTC)


def keyed_key(n: int) -> str:
    """The idempotency key of the child's ``n``th append."""
    return f"k{n}"


def keyed_event(run_id: uuid.UUID, n: int) -> TextDelta:
    """The child's ``n``th event; the same every time, so that a retry sends it again."""
    return TextDelta(run_id=run_id, delta=f"event {n}", timestamp=_STAMP)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> None:
    dsn, schema, run_id = sys.argv[1], sys.argv[2], uuid.UUID(sys.argv[3])
    first, count = int(sys.argv[4]), int(sys.argv[5])
    store: PostgresEventStore = PostgresEventStore(dsn, schema=schema)
    store.runs()  # connected: what follows is appends only
    _say("ready")
    for n in range(first, first + count):
        _say(f"try {n}")
        envelope = store.append(keyed_event(run_id, n), key=keyed_key(n))
        _say(f"ack {n} {envelope.seq} {envelope.event_id}")


if __name__ == "__main__":
    main()
