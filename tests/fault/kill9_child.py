"""Child process of the kill -9 test: append forever and print every acknowledged seq.

Usage: ``python kill9_child.py <log dir> <fsync policy> <threads> <seed> [<batch share>]``
(the share of appends that are ``append_batch`` calls, default 0.2). Each thread appends
to its own run (run ids derived from the thread number, so every cycle continues the same runs)
and, after ``append`` returns, prints ``<run id> <seq> <event id>`` on one line and flushes. The
line is printed only after the append was acknowledged, so every printed line is a promise the
parent checks after it SIGKILLs this process. ``ready`` is printed once the log is open.
"""

from __future__ import annotations

import random
import sys
import threading
import uuid

import segmentlog
from segmentlog import TextDelta


def main() -> None:
    path, policy, threads, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    batch_share = float(sys.argv[5]) if len(sys.argv) > 5 else 0.2
    log = segmentlog.open(path, fsync=policy, segment_bytes=16384, index_interval_bytes=1024)
    out_lock = threading.Lock()

    def write(line: str) -> None:
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def worker(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        run_id = uuid.UUID(int=0x0190A8C4_1E00_7000_8000_00000000_0000 + n)
        while True:
            if rng.random() < batch_share:
                events = [
                    TextDelta(run_id=run_id, delta="b" * rng.randint(1, 400))
                    for _ in range(rng.randint(2, 5))
                ]
                envs = log.append_batch(events)
            else:
                envs = [log.append(TextDelta(run_id=run_id, delta="a" * rng.randint(1, 600)))]
            for env in envs:
                write(f"{env.run_id} {env.seq} {env.event_id}")

    write("ready")
    workers = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()


if __name__ == "__main__":
    main()
