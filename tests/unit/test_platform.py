"""Portable durability: how each platform flushes, simulated here on Linux by monkeypatching.

- Linux: ``fdatasync`` for files, ``fsync`` for directories.
- macOS (no ``os.fdatasync``, ``fcntl.F_FULLFSYNC`` present): every durable path calls
  ``fcntl(fd, F_FULLFSYNC)``, in the same order and number as ``fdatasync`` on Linux;
  ``full_fsync=False`` takes plain ``fsync``.
- No ``fcntl`` at all (Windows): ``import segmentlog`` works, and so do the memory store and
  the format codec; ``segmentlog.open`` raises ``UnsupportedPlatformError``.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

import segmentlog
from segmentlog import TextDelta
from segmentlog._fs import FileSystem, platform_sync

F_FULLFSYNC = 51  # its value on macOS


class Recording(FileSystem):
    """Records every durable flush the engine asks for, as (kind, path under the log)."""

    def __init__(self, root: Path, **options: Any) -> None:
        super().__init__(**options)
        self.root = str(root)
        self.flushes: list[tuple[str, str]] = []

    def _rel(self, path: str) -> str:
        return os.path.relpath(path, self.root)

    def fdatasync(self, fd: int) -> None:
        self.flushes.append(("file", self._rel(os.readlink(f"/proc/self/fd/{fd}"))))
        super().fdatasync(fd)

    def fsync_dir(self, path: str) -> None:
        self.flushes.append(("dir", self._rel(path)))
        super().fsync_dir(path)


def workload(root: Path, fs: FileSystem) -> None:
    """Durable appends with rolls, a batch, a deletion and a close: every flush path."""
    runs = [uuid.UUID(int=1), uuid.UUID(int=2)]
    with segmentlog.open(root / "log", fs=fs, fsync="always", segment_bytes=4096) as log:
        for i in range(60):
            log.append(TextDelta(run_id=runs[i % 2], delta=f"{i:03d}" + "x" * 120))
        log.append_batch([TextDelta(run_id=runs[0], delta="b") for _ in range(5)])
        log.delete_run(runs[1])


@pytest.fixture
def macos(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Pretend to be macOS: no fdatasync, an F_FULLFSYNC that fcntl accepts (and records)."""
    calls: list[tuple[str, int]] = []
    real_fcntl = fcntl.fcntl

    def fake_fcntl(fd: int, cmd: int, arg: Any = 0) -> Any:
        if cmd == F_FULLFSYNC:
            calls.append((os.readlink(f"/proc/self/fd/{fd}"), cmd))
            os.fsync(fd)
            return 0
        return real_fcntl(fd, cmd, arg)

    monkeypatch.delattr(os, "fdatasync")
    monkeypatch.setattr(fcntl, "F_FULLFSYNC", F_FULLFSYNC, raising=False)
    monkeypatch.setattr(fcntl, "fcntl", fake_fcntl)
    return calls


def test_linux_flushes_files_with_fdatasync_and_directories_with_fsync() -> None:
    assert hasattr(os, "fdatasync")
    assert platform_sync() == "fdatasync"
    assert segmentlog.PLATFORM_SYNC == "fdatasync"


def test_macos_flushes_every_durable_path_with_full_fsync_like_fdatasync_on_linux(
    tmp_path: Path, macos: list[tuple[str, int]]
) -> None:
    assert platform_sync() == "F_FULLFSYNC"
    linux_root, mac_root = tmp_path / "linux", tmp_path / "mac"
    mac = Recording(mac_root)
    assert mac.sync_method == "F_FULLFSYNC"
    workload(mac_root, mac)
    # Every flush the engine asked for went through F_FULLFSYNC, and nothing else flushed.
    full = [(os.path.relpath(path, mac.root), cmd) for path, cmd in macos]
    assert [p for p, _ in full] == [p for _, p in mac.flushes]
    assert {cmd for _, cmd in full} == {F_FULLFSYNC}
    assert len(full) >= 20
    # The same workload on Linux asks for the same flushes, in the same order and number.
    with pytest.MonkeyPatch.context() as undo:
        undo.setattr(os, "fdatasync", os.fsync, raising=False)  # Linux's call, restored
        linux = Recording(linux_root)
        linux.sync_method = "fdatasync"
        linux._sync_data, linux._sync_dir = os.fsync, os.fsync
        workload(linux_root, linux)
    assert linux.flushes == mac.flushes


def test_macos_with_full_fsync_off_takes_plain_fsync(
    tmp_path: Path, macos: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        fsyncs.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    fs = FileSystem(full_fsync=False)
    assert fs.sync_method == "fsync"
    workload(tmp_path, fs)
    assert macos == []  # F_FULLFSYNC never ran
    assert len(fsyncs) >= 20
    with segmentlog.open(tmp_path / "other", fsync="always", full_fsync=False) as log:
        assert log.stats().sync_method == "fsync"
    # (OS_FS was made at import, on Linux: a file system made now sees "macOS".)
    with segmentlog.open(tmp_path / "third", fs=FileSystem(), fsync="always") as log:
        assert log.stats().sync_method == "F_FULLFSYNC"


def test_without_posix_fallocate_the_log_writes_without_preallocating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "posix_fallocate")
    run = uuid.uuid4()
    with segmentlog.open(tmp_path / "log", fsync="batch") as log:
        for i in range(50):
            log.append(TextDelta(run_id=run, delta=str(i)))
        seg = next((tmp_path / "log" / "runs" / str(run)).glob("*.seg"))
        # No space reserved past the last frame: the file ends where its frames do.
        assert seg.stat().st_size == log.run_info(run).bytes
    with segmentlog.open(tmp_path / "log") as log:
        assert log.last_seq(run) == 50


WITHOUT_FCNTL = """
import sys, uuid
sys.modules["fcntl"] = None  # as on Windows: importing it fails
import segmentlog
from segmentlog import MemoryEventStore, TextDelta, UnsupportedPlatformError
from segmentlog.frames import FrameEncoder, read_frame
assert segmentlog.PLATFORM_SYNC == "unsupported", segmentlog.PLATFORM_SYNC
run = uuid.uuid4()
store = MemoryEventStore()
env = store.append(TextDelta(run_id=run, delta="hi"))
buf = bytearray()
FrameEncoder().encode(buf, env, 0)
assert read_frame(bytes(buf), 0, 1 << 20).seq == 1
try:
    segmentlog.open(sys.argv[1])
except UnsupportedPlatformError as exc:
    print("refused:", exc)
else:
    raise SystemExit("segmentlog.open should have refused")
"""


def test_without_fcntl_import_works_and_open_says_what_is_supported(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_FCNTL, str(tmp_path / "log")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout
    assert "Linux, macOS" in done.stdout and "MemoryEventStore" in done.stdout
    assert not (tmp_path / "log").exists()  # refused before touching anything
