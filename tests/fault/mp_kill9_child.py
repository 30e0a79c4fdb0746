"""Child process of the multiprocess kill -9 oracle: append to shared runs until killed.

Usage: ``python mp_kill9_child.py <log dir> <fsync policy> <threads> <seed> <tag> <run id>...``.
Opens the log with ``multiprocess=True``; each thread appends to the given runs, chosen at
random, single events or batches of 2-5, and after each append returns prints one line per
envelope, ``<run id> <seq> <event id> <name> <size>`` (the event is ``delta(run, name,
size)`` of ``tests/multiproc.py``), then flushes. A line is printed only after the append
was acknowledged, so every complete line is a promise the parent checks after it SIGKILLs
this process. ``ready`` is printed once the log is open.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import uuid

import segmentlog
from segmentlog import TextDelta


def main() -> None:
    path, policy, threads, seed, tag = sys.argv[1:6]
    runs = [uuid.UUID(r) for r in sys.argv[6:]]
    log = segmentlog.open(
        path, fsync=policy, multiprocess=True, segment_bytes=16384, index_interval_bytes=1024
    )
    out_lock = threading.Lock()

    def write(lines: list[str]) -> None:
        data = "".join(line + "\n" for line in lines).encode()
        with out_lock:
            os.write(1, data)  # unbuffered: nothing is held back in this process

    def worker(n: int) -> None:
        rng = random.Random(f"{seed}-{n}")
        count = 0
        while True:
            run_id = rng.choice(runs)
            items = []
            for _ in range(rng.randint(2, 5) if rng.random() < 0.2 else 1):
                count += 1
                name = f"{tag}.{n}.{count}"
                size = rng.randint(1, 700)
                items.append((name, size))
            events = [
                TextDelta(run_id=run_id, delta=name + "x" * max(0, size - len(name)))
                for name, size in items
            ]
            envs = log.append_batch(events) if len(events) > 1 else [log.append(events[0])]
            write(
                [
                    f"{e.run_id} {e.seq} {e.event_id} {name} {size}"
                    for e, (name, size) in zip(envs, items, strict=True)
                ]
            )

    write(["ready"])
    pool = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(int(threads))]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


if __name__ == "__main__":
    main()
