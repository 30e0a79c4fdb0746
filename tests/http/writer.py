"""A writer process for the HTTP tests: appends to one run as told on stdin.

Usage: ``python -m tests.http.writer (--dir PATH | --postgres DSN --schema NAME) RUN_ID``.
Commands, one per line: ``start`` (RunStarted), ``deltas N [PAUSE]`` (N TextDelta appends,
one call each, PAUSE seconds apart), ``text JSON`` (one TextDelta whose delta is the JSON
string), ``end`` (RunCompleted). Each command is answered with ``ok <last seq>``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from typing import Any

import segmentlog
from segmentlog import RunCompleted, RunStarted, TextDelta


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir")
    parser.add_argument("--postgres")
    parser.add_argument("--schema", default="public")
    parser.add_argument("run_id", type=uuid.UUID)
    args = parser.parse_args()
    store: Any
    if args.postgres:
        from segmentlog.postgres import PostgresEventStore

        store = PostgresEventStore(args.postgres, schema=args.schema)
    else:
        store = segmentlog.open(args.dir, fsync="never")
    run = args.run_id
    last = 0
    with store:
        for line in sys.stdin:
            words = line.split(maxsplit=1)
            if not words:
                continue
            if words[0] == "start":
                env = store.append(
                    RunStarted(run_id=run, session_id=uuid.uuid4(), provider="p", model="m")
                )
                last = env.seq
            elif words[0] == "deltas":
                count, *pause = words[1].split()
                for i in range(int(count)):
                    last = store.append(TextDelta(run_id=run, delta=f"delta {last + 1}")).seq
                    if pause and i + 1 < int(count):
                        time.sleep(float(pause[0]))
            elif words[0] == "text":
                last = store.append(TextDelta(run_id=run, delta=json.loads(words[1]))).seq
            elif words[0] == "end":
                last = store.append(
                    RunCompleted(run_id=run, finish_reason="stop", iterations=1)
                ).seq
            else:
                raise SystemExit(f"unknown command {line!r}")
            sys.stdout.write(f"ok {last}\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
