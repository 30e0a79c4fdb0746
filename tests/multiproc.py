"""Helpers for tests that drive several real processes against one log directory.

Strategy
- ``Worker`` is a long-lived process of the ``spawn`` context that runs commands sent over a
  pipe (``serve``). It holds its own ``SegmentLog``, so a test interleaves processes step by
  step and knows exactly which process did what. Every wait on a worker is bounded
  (``TIMEOUT``): a worker that hangs fails the test instead of hanging it, and ``stop`` kills
  whatever does not exit. Errors come back as ``RemoteError`` with the exception's type name
  and message (exceptions do not always pickle).
- ``GateFS`` is the real ``FileSystem`` (``segmentlog._fs``) with faults at the Nth
  ``fdatasync`` or ``pwrite`` of the process: fail with EIO, hold until the test opens a gate
  and then go on or fail, or tear the write and hang until killed. Gates are files in a
  directory every process sees: the writer creates ``reached-<call>-<n>`` and waits for
  ``go-<call>-<n>``, so a test learns "the writer is inside its fsync now" without timing.
  Only segment frames are written with ``pwrite`` and only segments (and quarantine copies)
  are flushed with ``fdatasync``, so the counts are counts of appends' writes and syncs.
- ``lock_waiting(pid)`` tells, from ``/proc``, whether a process is blocked waiting for a
  file lock, so a test can assert an ordering ("B waited for A") instead of sleeping.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import signal
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import segmentlog
from segmentlog import Envelope, NotFoundError, TextDelta
from segmentlog._fs import FileSystem

__all__ = [
    "SPAWN",
    "TIMEOUT",
    "GateFS",
    "GateSpec",
    "RemoteError",
    "Worker",
    "delta",
    "lock_waiting",
    "open_gate",
    "read_all",
    "serve",
    "wait_for_file",
    "wait_reached",
    "workers",
]

SPAWN = multiprocessing.get_context("spawn")
#: The longest any single wait on another process may take before the test fails.
TIMEOUT = 60.0


# --- reading ---------------------------------------------------------------------------------


def read_all(log: Any, run_id: uuid.UUID, page: int = 97) -> list[Envelope[Any]]:
    """Every envelope of a run (empty for a run with no events), read in pages."""
    out: list[Envelope[Any]] = []
    while True:
        try:
            got = log.list_after(run_id, out[-1].seq if out else None, page)
        except NotFoundError:
            return out
        if not got:
            return out
        out.extend(got)


def delta(run_id: uuid.UUID, token: str, size: int = 0) -> TextDelta:
    """A ``TextDelta`` whose text starts with ``token`` (which names it), padded to ``size``."""
    return TextDelta(run_id=run_id, delta=token + "x" * max(0, size - len(token)))


# --- gates -----------------------------------------------------------------------------------


def wait_for_file(
    path: str, timeout: float = TIMEOUT, alive: Callable[[], bool] | None = None
) -> None:
    """Wait until ``path`` exists; ``TimeoutError`` after ``timeout`` or once ``alive()``
    turns False (the process that should create it died)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if alive is not None and not alive():
            if os.path.exists(path):
                return
            raise TimeoutError(f"{path} never appeared: the process that makes it died")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout} s")
        time.sleep(0.002)


def wait_reached(gate_dir: str, call: str, n: int, worker: Worker | None = None) -> None:
    """Wait until a ``GateFS`` process is inside its ``n``-th ``call`` (held there)."""
    alive = None if worker is None else worker.proc.is_alive
    wait_for_file(os.path.join(gate_dir, f"reached-{call}-{n}"), alive=alive)


def open_gate(gate_dir: str, call: str, n: int) -> None:
    """Let a ``GateFS`` process held in its ``n``-th ``call`` go on."""
    with open(os.path.join(gate_dir, f"go-{call}-{n}"), "w"):
        pass


@dataclass
class GateSpec:
    """What a ``GateFS`` does at which call. Picklable, so a test can send it to a worker.

    ``fdatasync`` and ``pwrite`` map a call number (1-based, counted per process; writes
    that create a run's ``STATE`` file are not counted) to an action: ``"eio"`` fails the
    call; ``"hold"`` waits at the gate, then does the call; ``"hold-eio"`` waits at the gate,
    then fails; ``"hang"`` does the call, then waits until the process is killed; ``"tear"``
    (``pwrite`` only) writes the first half of the data, then waits until killed.
    """

    gate_dir: str
    fdatasync: dict[int, str] = field(default_factory=dict)
    pwrite: dict[int, str] = field(default_factory=dict)


class GateFS(FileSystem):
    """The real file system with the faults of a ``GateSpec``. See the module docstring."""

    def __init__(self, spec: GateSpec) -> None:
        super().__init__()
        self.spec = spec
        self.calls = {"fdatasync": 0, "pwrite": 0}
        #: Descriptors of runs' ``STATE`` files: their creating write is not a frame write,
        #: so it is neither counted nor faulted.
        self._state_fds: set[int] = set()

    def open_append(self, path: str, *, create: bool = False) -> int:
        fd = super().open_append(path, create=create)
        if path.endswith("/STATE"):
            self._state_fds.add(fd)
        return fd

    def close(self, fd: int) -> None:
        self._state_fds.discard(fd)
        super().close(fd)

    def _signal(self, call: str, n: int) -> None:
        with open(os.path.join(self.spec.gate_dir, f"reached-{call}-{n}"), "w"):
            pass

    def _hold(self, call: str, n: int) -> None:
        self._signal(call, n)
        wait_for_file(os.path.join(self.spec.gate_dir, f"go-{call}-{n}"), timeout=4 * TIMEOUT)

    def _hang(self, call: str, n: int) -> None:
        self._signal(call, n)
        time.sleep(4 * TIMEOUT)  # the test kills the process long before
        raise TimeoutError("GateFS: nobody killed this process")

    def _action(self, call: str) -> tuple[int, str | None]:
        self.calls[call] += 1
        n = self.calls[call]
        return n, getattr(self.spec, call).get(n)

    def fdatasync(self, fd: int) -> None:
        n, action = self._action("fdatasync")
        if action in ("hold", "hold-eio"):
            self._hold("fdatasync", n)
        if action in ("eio", "hold-eio"):
            raise OSError(errno.EIO, f"injected EIO at fdatasync {n}")
        super().fdatasync(fd)
        if action == "hang":
            self._hang("fdatasync", n)

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> int:
        if fd in self._state_fds:
            return super().pwrite(fd, data, offset)
        n, action = self._action("pwrite")
        if action in ("hold", "hold-eio"):
            self._hold("pwrite", n)
        if action in ("eio", "hold-eio"):
            raise OSError(errno.EIO, f"injected EIO at pwrite {n}")
        if action == "tear":
            half = len(data) // 2
            written = super().pwrite(fd, bytes(data)[:half], offset)
            assert written == half
            self._hang("pwrite", n)
        written = super().pwrite(fd, data, offset)
        if action == "hang":
            self._hang("pwrite", n)
        return written


def lock_waiting(pid: int) -> bool | None:
    """True when the process's main thread is blocked waiting for a file lock; None when
    ``/proc`` cannot tell (then the caller falls back to giving the process time)."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            wchan = f.read()
    except OSError:
        return None
    # fcntl_setlk, locks_lock_inode_wait, flock_lock_inode_wait ("0" while running)
    return any(name in wchan for name in ("setlk", "lock_inode", "locks_"))


# --- workers ---------------------------------------------------------------------------------


class RemoteError(Exception):
    """An exception raised in a worker: its type name and message."""

    def __init__(self, kind: str, message: str, trace: str = "") -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.trace = trace


def _open(state: dict[str, Any], path: str, fs: GateSpec | None = None, **options: Any) -> None:
    if state.get("log") is not None:
        state["log"].close()
        state["log"] = None
    state["log"] = segmentlog.open(path, fs=GateFS(fs) if fs else None, **options)


def _close(state: dict[str, Any]) -> None:
    log = state.pop("log", None)
    if log is not None:
        log.close()


def _method(name: str) -> Callable[..., Any]:
    def call(state: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        log = state.get("log")
        if log is None:
            raise RuntimeError("the worker has no open log")
        return getattr(log, name)(*args, **kwargs)

    return call


def _read_all(state: dict[str, Any], run_id: uuid.UUID) -> list[Envelope[Any]]:
    return read_all(state["log"], run_id)


def _run(state: dict[str, Any], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(state, *args, **kwargs)


_OPS: dict[str, Callable[..., Any]] = {
    "open": _open,
    "close": _close,
    "read_all": _read_all,
    "run": _run,
    **{
        name: _method(name)
        for name in (
            "append",
            "append_batch",
            "list_after",
            "last_seq",
            "delete_run",
            "runs",
            "retain",
            "run_info",
            "sync",
            "wait_for",
        )
    },
}


def serve(conn: Connection) -> None:
    """A worker's main loop: run ``(op, args, kwargs)`` commands until ``exit`` or EOF."""
    state: dict[str, Any] = {}
    conn.send(("ok", os.getpid()))
    while True:
        try:
            op, args, kwargs = conn.recv()
        except EOFError:
            break
        if op == "exit":
            try:
                _close(state)
            finally:
                conn.send(("ok", None))
            break
        try:
            result = _OPS[op](state, *args, **kwargs)
        except BaseException as exc:
            conn.send(("err", (type(exc).__name__, str(exc), traceback.format_exc())))
        else:
            conn.send(("ok", result))


class Worker:
    """A spawned process that runs log commands for the test. See the module docstring."""

    def __init__(self, name: str = "worker") -> None:
        self.name = name
        self.conn, child = SPAWN.Pipe()
        self.proc = SPAWN.Process(target=serve, args=(child,), name=name, daemon=True)
        self.proc.start()
        child.close()
        self._started = False
        #: Commands sent and not yet answered.
        self.pending = 0

    def _ready(self) -> None:
        if not self._started:
            self._started = True
            assert self._recv(TIMEOUT) == self.proc.pid

    @property
    def pid(self) -> int:
        """The process id."""
        assert self.proc.pid is not None
        return self.proc.pid

    def send(self, op: str, *args: Any, **kwargs: Any) -> None:
        """Start a command without waiting for it (``recv`` takes its answer)."""
        self._ready()
        self.conn.send((op, args, kwargs))
        self.pending += 1

    def _recv(self, timeout: float) -> Any:
        if not self.conn.poll(timeout):
            raise TimeoutError(f"{self.name} did not answer within {timeout} s")
        try:
            status, value = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"{self.name} died (exit code {self.proc.exitcode})") from None
        if status == "err":
            self.pending -= 1
            raise RemoteError(*value)
        return value

    def recv(self, timeout: float = TIMEOUT) -> Any:
        """The answer to the oldest command sent; raises ``RemoteError`` for its error."""
        value = self._recv(timeout)
        self.pending -= 1
        return value

    def answered(self, timeout: float = 0.0) -> bool:
        """True when an answer is waiting (or the worker died)."""
        return bool(self.conn.poll(timeout)) or not self.proc.is_alive()

    def call(self, op: str, *args: Any, timeout: float = TIMEOUT, **kwargs: Any) -> Any:
        """Run a command and return its result."""
        self.send(op, *args, **kwargs)
        return self.recv(timeout)

    def kill(self) -> None:
        """SIGKILL the process and reap it."""
        if self.proc.is_alive():
            os.kill(self.pid, signal.SIGKILL)
        self.proc.join(TIMEOUT)

    def stop(self) -> None:
        """Close its log and end it; kill it if it does not end in time, or at once if it
        is still busy with a command (a test that failed while it was held at a gate)."""
        if self.pending:
            self.kill()
        if self.proc.is_alive():
            try:
                self._ready()
                self.conn.send(("exit", (), {}))
                self.conn.poll(TIMEOUT / 2)
            except (OSError, TimeoutError, AssertionError, RuntimeError, RemoteError):
                pass
            self.proc.join(TIMEOUT / 2)
        if self.proc.is_alive():
            self.kill()
        self.conn.close()


@contextmanager
def workers(count: int, name: str = "worker") -> Iterator[list[Worker]]:
    """``count`` workers, started together and stopped (or killed) at the end."""
    started: list[Worker] = []
    try:
        for i in range(count):
            started.append(Worker(f"{name}-{i}"))
        for w in started:
            w._ready()
        yield started
    finally:
        for w in started:
            w.stop()
