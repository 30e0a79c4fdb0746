"""A real full disk: a 2 MiB tmpfs filled by appends, under every fsync policy.

Every test mounts its own small tmpfs (skipped, with the reason, where ``mount`` is refused)
and puts a *reserve* file on it first, whose deletion frees space later. The log runs on the
real file system layer wrapped in ``SpyFS``, which only records every ``OSError`` the OS
raised to the engine, so a test can tell where the disk ran out.

- Appends to several runs (single events and batches) fill the disk. The append that meets
  ``ENOSPC`` raises ``LogFailedError`` (an ``AppendError``, ``cause.errno == ENOSPC``); every
  later append and batch, to an old or a new run, raises ``LogFailedError``; no ``OSError``
  ever reaches the caller, and reads still work.
- Reopened while the disk is still full (topped up to the last page, with the index files
  deleted so that recovery wants to rewrite them), every run reads back exactly what the
  appends returned through ``last_seq``, ``run_info`` and every page of ``list_after``; the
  index writes recovery attempts hit ``ENOSPC`` and are swallowed (regression: a read after
  reopen once raised a raw ``OSError(ENOSPC)`` from an index rewrite).
- Once the reserve is deleted, appends continue each run without a gap, and a reopen shows
  everything.
- The disk also runs out (of blocks, or of inodes) exactly while a new run is created, and
  exactly while a segment rolls.
- Salvage that must copy intact records into quarantine raises ``RepairError`` on a full disk
  and changes nothing; once space is freed it succeeds and loses only the damaged record.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import segmentlog
from segmentlog import (
    AppendError,
    Envelope,
    LogFailedError,
    NotFoundError,
    RepairError,
    TextDelta,
    maintenance,
)
from segmentlog._fs import FileSystem

from .model import read_run, same_envelope

POLICIES = ["always", "batch", "interval", "never"]
RUNS = [uuid.UUID(int=0x0190A8C4_1E00_7000_8000_0000_00D1_5C00 + i) for i in range(4)]
NEW_RUN = uuid.UUID("0190a8c4-1e00-7000-8000-0000000d15cf")
#: An upper bound on appends before a 2 MiB disk is full (bounds every fill loop).
MAX_APPENDS = 20_000


@pytest.fixture(autouse=True)
def _quiet_engine_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="segmentlog")


MountTmpfs = Callable[..., Path]


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[MountTmpfs]:
    """``mount_tmpfs(**options)`` mounts a fresh tmpfs (``size`` 2m by default) and returns
    it; every mount is unmounted at teardown."""
    mounted: list[Path] = []

    def mount(**options: str) -> Path:
        point = tmp_path / f"tmpfs{len(mounted)}"
        point.mkdir()
        opts = ",".join(f"{k}={v}" for k, v in {"size": "2m", **options}.items())
        try:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except FileNotFoundError:
            pytest.skip("no mount command here: a real full disk needs a small tmpfs")
        if done.returncode != 0:
            pytest.skip(f"mount -t tmpfs refused here ({done.stderr.strip()}); needs root")
        mounted.append(point)
        return point

    try:
        yield mount
    finally:
        for point in reversed(mounted):
            done = subprocess.run(["umount", str(point)], capture_output=True, timeout=30)
            if done.returncode != 0:  # a descriptor a failed test left open
                subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30)


class SpyFS(FileSystem):
    """The real file system; records every ``OSError`` it raised as ``(op, path, errno)``."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[tuple[str, str, int | None]] = []
        self._paths: dict[int, str] = {}

    def _call(self, op: str, path: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except OSError as exc:
            self.errors.append((op, path, exc.errno))
            raise

    def _opened(self, op: str, path: str, fn: Callable[..., int], *args: Any) -> int:
        fd: int = self._call(op, path, fn, path, *args)
        self._paths[fd] = path
        return fd

    def enospc(self, op: str | None = None, suffix: str = "") -> list[str]:
        """Paths of the ENOSPC errors (of one operation, on paths ending in ``suffix``)."""
        return [
            p
            for o, p, e in self.errors
            if e == errno.ENOSPC and op in (None, o) and p.endswith(suffix)
        ]

    def create_new(self, path: str) -> int:
        return self._opened("create_new", path, super().create_new)

    def create_exclusive(self, path: str) -> int:
        return self._opened("create_exclusive", path, super().create_exclusive)

    def open_write(self, path: str) -> int:
        return self._opened("open_write", path, super().open_write)

    def open_append(self, path: str, *, create: bool = False) -> int:
        def open_append(p: str) -> int:
            return super(SpyFS, self).open_append(p, create=create)

        return self._opened("open_append", path, open_append)

    def write(self, fd: int, data: Any) -> int:
        n: int = self._call("write", self._paths.get(fd, "?"), super().write, fd, data)
        return n

    def pwrite(self, fd: int, data: Any, offset: int) -> int:
        n: int = self._call("pwrite", self._paths.get(fd, "?"), super().pwrite, fd, data, offset)
        return n

    def preallocate(self, fd: int, offset: int, length: int) -> bool:
        path = self._paths.get(fd, "?")
        done: bool = self._call("preallocate", path, super().preallocate, fd, offset, length)
        return done

    def mkdir(self, path: str) -> None:
        self._call("mkdir", path, super().mkdir, path)

    def fdatasync(self, fd: int) -> None:
        self._call("fdatasync", self._paths.get(fd, "?"), super().fdatasync, fd)


def _fill(path: Path) -> Path:
    """Write ``path`` until the file system has not a single free page left; returns it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for chunk in (65536, 4096, 1):
            for _ in range(MAX_APPENDS):
                try:
                    os.write(fd, b"\xa5" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    assert os.statvfs(path.parent).f_bavail == 0
    return path


def _fill_inodes(directory: Path) -> list[Path]:
    """Create empty files until the file system has no inode left; returns them."""
    made = []
    for i in range(100_000):
        path = directory / f"inode-{i}"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
            return made
        made.append(path)
    raise AssertionError("the tmpfs never ran out of inodes")


def _reserve(point: Path, size: int = 256 * 1024) -> Path:
    path = point / "reserve"
    path.write_bytes(os.urandom(size))
    return path


def _open(path: Path, fs: FileSystem, policy: str, **options: Any) -> Any:
    opts: dict[str, Any] = {
        "segment_bytes": 65536,
        "index_interval_bytes": 1024,
        "fsync_interval_ms": 20,
        **options,
    }
    return segmentlog.open(path, fs=fs, fsync=policy, **opts)  # type: ignore[attr-defined]


def _event(run: uuid.UUID, n: int, size: int) -> TextDelta:
    return TextDelta(run_id=run, delta=f"#{n}:" + "z" * size)


def _fail_stopped(log: Any, runs: list[uuid.UUID]) -> None:
    """Every later append and batch, to any run, raises LogFailedError."""
    for run in [*runs, NEW_RUN]:
        with pytest.raises(LogFailedError):
            log.append(_event(run, -1, 10))
        with pytest.raises(LogFailedError):
            log.append_batch([_event(run, -2, 10), _event(run, -3, 10)])
    with contextlib.suppress(LogFailedError):
        log.sync()  # nothing may be left to sync; if something is, it refuses


def _check_runs(log: Any, acked: dict[uuid.UUID, list[Envelope[Any]]], what: str) -> None:
    """Every run holds exactly what its appends returned, by every read."""
    for run, envs in acked.items():
        if not envs:
            assert log.last_seq(run) is None, what
            continue
        got = read_run(log, run, page=50)
        assert len(got) == len(envs) and all(map(same_envelope, got, envs)), (
            f"{what}: run {run} holds seqs {got[0].seq if got else None}..{len(got)}, "
            f"expected exactly the {len(envs)} acknowledged"
        )
        assert log.last_seq(run) == len(envs), what
        info = log.run_info(run)
        assert (info.events, info.first_seq, info.last_seq) == (len(envs), 1, len(envs)), what


@pytest.mark.parametrize("policy", POLICIES)
def test_full_disk_fails_stop_reads_need_no_space_and_appends_resume(
    mount_tmpfs: MountTmpfs, policy: str
) -> None:
    point = mount_tmpfs()
    reserve = _reserve(point)
    path = point / "log"
    spy = SpyFS()
    log = _open(path, spy, policy)
    acked: dict[uuid.UUID, list[Envelope[Any]]] = {run: [] for run in RUNS}
    failure: BaseException | None = None
    for n in range(MAX_APPENDS):
        run = RUNS[n % len(RUNS)]
        try:
            if n % 5 == 4:
                envs = log.append_batch([_event(run, 100 * n + i, 90 + 40 * i) for i in range(4)])
            else:
                envs = [log.append(_event(run, n, 200 + n % 300))]
        except Exception as exc:  # anything but LogFailedError is a defect
            failure = exc
            break
        acked[run].extend(envs)
    assert failure is not None, "the disk never filled up"
    assert isinstance(failure, LogFailedError) and isinstance(failure, AppendError), failure
    assert isinstance(failure.cause, OSError) and failure.cause.errno == errno.ENOSPC
    assert spy.enospc(), "the engine reported a full disk the OS never reported"
    assert sum(map(len, acked.values())) > 1000
    _fail_stopped(log, RUNS)
    _check_runs(log, acked, "the failed log, still open")
    log.close()

    # Reopen on a disk that is still full, with every index gone: recovery wants to write.
    for idx in path.glob("runs/*/*.idx"):
        idx.unlink()
    _fill(point / "topup")
    spy = SpyFS()
    log = _open(path, spy, policy)
    try:
        _check_runs(log, acked, "reopened on a full disk")
        assert os.statvfs(point).f_bavail == 0, "the disk was not full while we read"
    finally:
        log.close()  # (a clean close trims preallocated zeros: that frees space)
    assert spy.enospc(suffix=".idx"), "recovery never tried to rewrite an index"

    # Free space: every run goes on where it stopped.
    reserve.unlink()
    (point / "topup").unlink()
    log = _open(path, SpyFS(), policy)
    try:
        for run in RUNS:
            more = [log.append(_event(run, -10, 50))]
            more += log.append_batch([_event(run, -11, 50), _event(run, -12, 50)])
            first = len(acked[run]) + 1
            assert [e.seq for e in more] == [first, first + 1, first + 2], "a gap after ENOSPC"
            acked[run].extend(more)
        new = log.append(_event(NEW_RUN, 0, 10))
        assert new.seq == 1
        acked[NEW_RUN] = [new]
    finally:
        log.close()
    log = _open(path, SpyFS(), policy)
    try:
        _check_runs(log, acked, "reopened after space was freed")
    finally:
        log.close()


def _prefill(path: Path, policy: str, run: uuid.UUID, count: int, **options: Any) -> Any:
    log = _open(path, SpyFS(), policy, **options)
    envs = [log.append(_event(run, n, 150)) for n in range(count)]
    log.close()
    return envs


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("exhausted", ["blocks", "inodes"])
def test_full_disk_while_creating_a_new_run(
    mount_tmpfs: MountTmpfs, policy: str, exhausted: str
) -> None:
    point = mount_tmpfs(**({"nr_inodes": "64"} if exhausted == "inodes" else {}))
    reserve = _reserve(point, 64 * 1024)
    path = point / "log"
    old = RUNS[0]
    acked = {old: _prefill(path, policy, old, 20)}
    spy = SpyFS()
    log = _open(path, spy, policy)
    assert log.last_seq(old) == 20
    fillers = _fill_inodes(point) if exhausted == "inodes" else [_fill(point / "topup")]
    with pytest.raises(LogFailedError) as info:
        log.append(_event(NEW_RUN, 0, 100))
    assert info.value.cause.errno == errno.ENOSPC
    if exhausted == "inodes":
        assert spy.enospc("mkdir"), spy.errors  # the run's directory could not be made
    else:
        # Its first write: the run's state record (where the log keeps one) or its first
        # segment's first frames.
        assert spy.enospc("pwrite", "STATE") or spy.enospc("pwrite", ".seg"), spy.errors
    _fail_stopped(log, [old])
    log.close()

    log = _open(path, SpyFS(), policy)
    try:
        _check_runs(log, {**acked, NEW_RUN: []}, "reopened, still full")
        with pytest.raises(NotFoundError):
            log.list_after(NEW_RUN)
        with pytest.raises(NotFoundError):
            log.run_info(NEW_RUN)
    finally:
        log.close()

    reserve.unlink()
    for filler in fillers:
        filler.unlink()
    log = _open(path, SpyFS(), policy)
    try:
        acked[NEW_RUN] = [log.append(_event(NEW_RUN, 1, 100))]
        acked[old].append(log.append(_event(old, 21, 100)))
        assert (acked[NEW_RUN][0].seq, acked[old][-1].seq) == (1, 21)
    finally:
        log.close()
    log = _open(path, SpyFS(), policy)
    try:
        _check_runs(log, acked, "reopened after space was freed")
    finally:
        log.close()


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("exhausted", ["blocks", "inodes"])
def test_full_disk_while_rolling_a_segment(
    mount_tmpfs: MountTmpfs, policy: str, exhausted: str
) -> None:
    """4 KiB segments: a segment never needs a second page, so only a roll (a new file and
    its first page) can meet the full disk."""
    small = {"segment_bytes": 4096, "index_interval_bytes": 256}
    point = mount_tmpfs(**({"nr_inodes": "64"} if exhausted == "inodes" else {}))
    reserve = _reserve(point, 64 * 1024)
    path = point / "log"
    run = RUNS[1]
    acked = {run: _prefill(path, policy, run, 30, **small)}
    spy = SpyFS()
    log = _open(path, spy, policy, **small)
    assert log.run_info(run).segments >= 2
    fillers = _fill_inodes(point) if exhausted == "inodes" else [_fill(point / "topup")]
    failure: BaseException | None = None
    for n in range(200):
        try:
            envs = [log.append(_event(run, 100 + n, 150))]
        except Exception as exc:
            failure = exc
            break
        acked[run].extend(envs)
    assert isinstance(failure, LogFailedError), failure
    assert failure.cause.errno == errno.ENOSPC
    new_segment = f"{len(acked[run]) + 1:020d}.seg"
    if exhausted == "inodes":
        failed = spy.enospc("create_exclusive", ".seg")
    else:
        failed = spy.enospc("pwrite", ".seg")
    assert failed and all(p.endswith(new_segment) for p in failed), (
        f"the full disk was not met by the roll to {new_segment}: {spy.errors}"
    )
    _fail_stopped(log, [run])
    log.close()

    log = _open(path, SpyFS(), policy, **small)
    try:
        _check_runs(log, acked, "reopened, still full")
    finally:
        log.close()

    reserve.unlink()
    for filler in fillers:
        filler.unlink()
    log = _open(path, SpyFS(), policy, **small)
    try:
        for n in range(40):  # several rolls
            env = log.append(_event(run, 1000 + n, 150))
            assert env.seq == len(acked[run]) + 1, "a gap after the failed roll"
            acked[run].append(env)
    finally:
        log.close()
    log = _open(path, SpyFS(), policy, **small)
    try:
        _check_runs(log, acked, "reopened after space was freed")
    finally:
        log.close()


def _live_files(path: Path) -> dict[Path, bytes]:
    """Every file of the log outside quarantine, with its bytes."""
    return {
        p: p.read_bytes() for p in path.rglob("*") if p.is_file() and "quarantine" not in p.parts
    }


@pytest.mark.parametrize("how", ["open", "recover"])
def test_salvage_on_a_full_disk_raises_repair_error_and_changes_nothing(
    mount_tmpfs: MountTmpfs, how: str
) -> None:
    """Salvage must copy intact records into quarantine before it cuts them out of the run;
    on a full disk that copy fails: ``RepairError``, the run untouched, and once space is
    freed the same salvage succeeds and loses nothing."""
    point = mount_tmpfs()
    reserve = _reserve(point, 64 * 1024)
    path = point / "log"
    run = RUNS[3]
    small = {"segment_bytes": 4096, "index_interval_bytes": 256}
    envs = _prefill(path, "batch", run, 60, **small)
    first = sorted(path.glob(f"runs/{run}/*.seg"))[0]
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0x40  # inside a frame in the middle of the sealed first segment
    first.write_bytes(bytes(data))
    topup = _fill(point / "topup")
    before = _live_files(path)

    def salvage() -> Any:
        if how == "recover":
            return maintenance.recover(str(path))
        with _open(path, SpyFS(), "batch", recovery="salvage", **small) as log:
            return log.last_seq(run)

    with pytest.raises(RepairError) as info:
        salvage()
    assert isinstance(info.value.cause, OSError) and info.value.cause.errno == errno.ENOSPC
    assert _live_files(path) == before, "a failed salvage changed the run"
    assert maintenance.quarantined(str(path)) == []

    reserve.unlink()
    topup.unlink()
    salvage()
    with _open(path, SpyFS(), "batch", **small) as log:
        live = read_run(log, run)
    assert live and all(map(same_envelope, live, envs))
    salvaged = {p for p, _ in maintenance.salvage_records(str(path))}
    encode = msgspec.msgpack.Encoder(uuid_format="bytes").encode
    lost = [e.seq for e in envs if encode(e) not in salvaged]
    assert len(lost) == 1, f"salvage lost more than the damaged record: seqs {lost}"


@pytest.mark.parametrize("policy", ["always", "batch"])
def test_a_run_whose_creation_met_a_full_disk_is_not_listed(
    mount_tmpfs: MountTmpfs, policy: str
) -> None:
    """The first append of a new run fails
    with ENOSPC, so nothing of it was stored, yet the run's directory stays behind holding
    only its ``STATE`` file after recovery removed the empty segment, so ``runs()`` lists a
    run that never had an event, for good. Before the state file, recovery removed the empty
    directory."""
    point = mount_tmpfs()
    path = point / "log"
    _prefill(path, policy, RUNS[0], 5)
    log = _open(path, SpyFS(), policy)
    topup = _fill(point / "topup")
    with pytest.raises(LogFailedError):
        log.append(_event(NEW_RUN, 0, 100))
    log.close()
    topup.unlink()
    log = _open(path, SpyFS(), policy)
    try:
        assert log.last_seq(NEW_RUN) is None  # the first touch recovers it
        leftovers = sorted(p.name for p in (path / "runs" / str(NEW_RUN)).glob("*"))
        assert NEW_RUN not in log.runs(), f"a run with no event is listed (holding {leftovers})"
    finally:
        log.close()
