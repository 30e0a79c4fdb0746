"""Two bugs met by the multiprocess tests: descriptors held per run, and aio after fork.

Run as subprocesses: one lowers its descriptor limit, the other forks.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from segmentlog.handles import Handles

_MANY_RUNS = """
import resource, sys, uuid
import segmentlog
from segmentlog import TextDelta

path, mode = sys.argv[1], sys.argv[2]
with segmentlog.open(path, multiprocess=True, fsync="never") as log:
    for i in range(600):
        log.append(TextDelta(run_id=uuid.UUID(int=i + 1), delta="x"))
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
options = {"read_only": {"read_only": True}, "multiprocess": {"multiprocess": True}}
with segmentlog.open(path, **options.get(mode, {})) as log:  # "batch": the default writer
    for i in range(600):
        assert log.last_seq(uuid.UUID(int=i + 1)) == 1
        assert log.list_after(uuid.UUID(int=i + 1))[0].event.delta == "x"
    held = log.stats().open_files
    assert held <= 256, held
print("ok")
"""


@pytest.mark.parametrize("mode", ["read_only", "multiprocess", "batch"])
def test_looking_at_many_runs_holds_a_bounded_number_of_descriptors(
    tmp_path: Path, mode: str
) -> None:
    """Every run a log looks at may map its ``STATE`` file, and CPython's ``mmap`` keeps a
    duplicate of the file descriptor for as long as the mapping lives. Only runs that opened
    writer descriptors were once in the ``max_open_files`` LRU, so a read-only log (``segmentlog
    serve``), or a writer that reads many runs, held one descriptor per run it ever touched
    and failed with EMFILE (here: a 256 limit and 600 runs). Mapped records now count in the
    LRU."""
    result = subprocess.run(
        [sys.executable, "-c", _MANY_RUNS, str(tmp_path / "log"), mode],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr[-2000:]


_AIO_FORK = """
import asyncio, os, sys, uuid
import segmentlog.aio
from segmentlog import TextDelta

async def opened():
    log = await segmentlog.aio.open(sys.argv[1], multiprocess=True)
    await log.append(TextDelta(run_id=run, delta="parent"))
    return log

run = uuid.uuid4()
log = asyncio.run(opened())
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    async def child():
        try:
            await asyncio.wait_for(log.append(TextDelta(run_id=run, delta="child")), 10)
            return "appended"
        except TimeoutError:
            return "hung"
        except Exception as exc:
            return type(exc).__name__
    os.write(w, asyncio.run(child()).encode())
    os._exit(0)
os.close(w)
print(os.read(r, 100).decode())
os.waitpid(pid, 0)
asyncio.run(log.close())
"""


def test_an_aio_log_used_in_a_fork_child_raises_log_forked_error(tmp_path: Path) -> None:
    """An ``AsyncSegmentLog`` opened before ``fork()`` must raise ``LogForkedError`` in the
    child, not hang: its thread pool's threads do not exist in
    the child, but the pool's idle count says they do, so the call is queued and never
    runs. The check has to happen before the call is handed to the pool."""
    result = subprocess.run(
        [sys.executable, "-c", _AIO_FORK, str(tmp_path / "log")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "LogForkedError"


class _Run:
    """A stand-in run for the LRU: holds ``open_files`` until released."""

    def __init__(self, held: int) -> None:
        self.open_files = held

    def release_files(self, *, blocking: bool) -> bool:
        self.open_files = 0
        return True


def test_the_lru_counts_descriptors_not_runs_and_keeps_under_half_the_process_limit() -> None:
    assert Handles(256).capacity == 256
    assert Handles(256, 100).capacity == 50  # half of ulimit -n, when that is lower
    assert Handles(256, 4096).capacity == 256
    lru = Handles(10)
    runs = [_Run(1 + i % 3) for i in range(12)]  # 1, 2 or 3 descriptors each
    for run in runs:
        lru.touch(run)
        assert lru.open_files() <= 10
    # The most recent runs kept theirs; the oldest were released first.
    assert runs[-1].open_files and runs[-2].open_files
    assert runs[0].open_files == 0
