"""`segmentlog tail --follow` beside a writer in another process."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import segmentlog

from .conftest import SCRIPT

WRITER = """
import sys, time, uuid
import segmentlog
from segmentlog import RunCompleted, RunStarted, TextDelta

path, run, count = sys.argv[1], uuid.UUID(sys.argv[2]), int(sys.argv[3])
with segmentlog.open(path, fsync="batch", segment_bytes=4096) as log:
    print("ready", flush=True)
    sys.stdin.readline()  # the follower has started (the run has no events yet)
    log.append(RunStarted(run_id=run, session_id=uuid.uuid4(), provider="p", model="m"))
    sys.stdin.readline()  # the follower printed seq 1: everything after is followed live
    for i in range(count):
        if i % 5 == 0:
            log.append_batch([TextDelta(run_id=run, delta="b" * 50) for _ in range(3)])
        else:
            log.append(TextDelta(run_id=run, delta="x" * 200))
        time.sleep(0.005)
    log.append(RunCompleted(run_id=run, finish_reason="stop", iterations=1))
"""


def test_follow_prints_every_seq_once_in_order_and_exits_at_the_terminal_event(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log"
    run = uuid.uuid4()
    count = 60
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(run), str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    follower = None

    def kill_all() -> None:
        for proc in (writer, follower):
            if proc is not None:
                proc.kill()

    watchdog = threading.Timer(60, kill_all)
    watchdog.start()
    try:
        assert writer.stdout is not None and writer.stdin is not None
        assert writer.stdout.readline().strip() == "ready"
        follower = subprocess.Popen(
            [str(SCRIPT), "tail", str(path), str(run), "--follow"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert follower.stdout is not None and follower.stderr is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
        out = [follower.stdout.readline()]
        writer.stdin.write("go\n")
        writer.stdin.flush()
        out.extend(follower.stdout)
        err = follower.stderr.read()
        assert follower.wait() == 0, err
        assert writer.wait() == 0
    finally:
        watchdog.cancel()
        for proc in (writer, follower):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    envs = [json.loads(line) for line in out]
    expected_last = 1 + (count // 5) * 3 + (count - count // 5) + 1
    assert [e["seq"] for e in envs] == list(range(1, expected_last + 1))
    assert envs[-1]["event"]["type"] == "RunCompleted"
    with segmentlog.open(path, read_only=True) as log:
        stored = log.list_after(run, None, 10_000)
    assert [e["event_id"] for e in envs] == [str(e.event_id) for e in stored]
