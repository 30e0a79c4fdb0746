"""Child process for the keyed-append tests across processes.

``python keyed_child.py retry <log> <run> <fsync> <keys...>``: open the log with
``multiprocess=True`` and append one event per key (its text is the key, its timestamp
fixed, so every process builds the same event for a key); print ``<key> <seq> <event id>``
after each acknowledgement.

``python keyed_child.py loop <log> <run> <fsync> <start>``: append keyed events ``k<start>``,
``k<start+1>``... forever, printing each acknowledgement; the parent kills it with SIGKILL.

``python keyed_child.py expect <log> <run> <fsync> <name>``: read the run's last seq, wait
for a line on stdin (so every contender has read the same seq), then append with
``expected_seq`` set to it; print ``won <seq>`` or ``lost <actual>``.
"""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime

import segmentlog
from segmentlog import SeqConflictError, TextDelta

STAMP = datetime(2026, 1, 1, tzinfo=UTC)


def event(run: uuid.UUID, key: str) -> TextDelta:
    """The one event every process builds for ``key``."""
    return TextDelta(run_id=run, delta=key, timestamp=STAMP)


def main() -> None:
    mode, path, run_text, policy = sys.argv[1:5]
    run = uuid.UUID(run_text)
    log = segmentlog.open(path, multiprocess=True, fsync=policy)
    out = sys.stdout
    if mode == "retry":
        for key in sys.argv[5:]:
            env = log.append(event(run, key), key=key)
            out.write(f"{key} {env.seq} {env.event_id}\n")
            out.flush()
    elif mode == "loop":
        n = int(sys.argv[5])
        out.write("ready\n")
        out.flush()
        while True:
            key = f"k{n}"
            env = log.append(event(run, key), key=key)
            out.write(f"{key} {env.seq} {env.event_id}\n")
            out.flush()
            n += 1
    elif mode == "expect":
        last = log.last_seq(run) or 0
        out.write(f"read {last}\n")
        out.flush()
        sys.stdin.readline()
        try:
            env = log.append(event(run, sys.argv[5]), expected_seq=last)
            out.write(f"won {env.seq}\n")
        except SeqConflictError as exc:
            out.write(f"lost {exc.actual}\n")
        out.flush()
    log.close()


if __name__ == "__main__":
    main()
