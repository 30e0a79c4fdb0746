"""Child processes that print promises: start one, SIGKILL it, and read every line it printed.

The kill -9 tests trust each line a child printed after an append returned. The parent reads
the child's ``ready`` line through ``proc.stdout`` (a buffered reader), and that one
``readline`` may pull later lines into the reader's buffer as well. So everything after it is
read through the same buffered reader until end of file; ``Popen.communicate()`` would read the
raw pipe instead and silently drop the lines already buffered (it lost about half of 2000 lines
printed together with ``ready`` in ``test_kill9.py``'s check of this).
"""

from __future__ import annotations

import signal
import subprocess
import time

__all__ = ["kill_and_read"]


def kill_and_read(proc: subprocess.Popen[bytes], delay: float) -> bytes:
    """Wait for the child's ``ready`` line, SIGKILL it ``delay`` seconds later, and return
    everything it printed to stdout after ``ready`` (unfinished last line included).

    Raises ``AssertionError`` with the child's stderr when it did not start, or when it exited
    by itself instead of being killed.
    """
    assert proc.stdout is not None and proc.stderr is not None
    try:
        first = proc.stdout.readline()
        if first != b"ready\n":
            proc.kill()
            err = proc.stderr.read()
            raise AssertionError(f"child did not start: {first!r} {err.decode()[-2000:]}")
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        out = proc.stdout.read()  # the buffered lines first, then the pipe until end of file
        err = proc.stderr.read()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"child exited on its own: {err.decode()[-2000:]}"
    return out
