"""Tests of the fault-injecting file system itself: what is synced survives, nothing else does."""

from __future__ import annotations

import errno
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segmentlog._fs import OS_FS, FileSystem

from .faultfs import FaultFS, SimulatedCrash


@pytest.fixture
def fs() -> FaultFS:
    fs = FaultFS()
    fs.makedirs("/d")
    fs.sync_all()
    return fs


def _write_file(fs: FileSystem, path: str, data: bytes) -> int:
    fd = fs.create_new(path)
    assert fs.write(fd, data) == len(data)
    return fd


# --- durability of file data ---------------------------------------------------------------


def test_unsynced_write_is_lost_on_power_loss(fs: FaultFS) -> None:
    fd = _write_file(fs, "/d/f", b"hello")
    fs.fsync(fd)
    fs.fsync_dir("/d")
    fs.write(fd, b" world")
    assert fs.read_file("/d/f") == b"hello world"
    fs.power_loss()
    assert fs.read_file("/d/f") == b"hello"


def test_fsync_makes_data_durable(fs: FaultFS) -> None:
    fd = _write_file(fs, "/d/f", b"abc")
    fs.fsync_dir("/d")
    fs.write(fd, b"def")
    fs.fsync(fd)
    fs.power_loss()
    assert fs.read_file("/d/f") == b"abcdef"


def test_fdatasync_makes_data_and_size_durable(fs: FaultFS) -> None:
    fd = _write_file(fs, "/d/f", b"abc")
    fs.fsync_dir("/d")
    fs.fdatasync(fd)
    fs.truncate(fd, 1)
    appender = fs.open_append("/d/f")
    fs.write(appender, b"ZZ")
    fs.fdatasync(appender)
    fs.power_loss()
    assert fs.read_file("/d/f") == b"aZZ"


def test_unsynced_truncate_is_undone_by_power_loss(fs: FaultFS) -> None:
    fd = _write_file(fs, "/d/f", b"abcdef")
    fs.fsync(fd)
    fs.fsync_dir("/d")
    fs.truncate(fd, 2)
    fs.power_loss()
    assert fs.read_file("/d/f") == b"abcdef"


def test_crash_keeps_page_cache_but_closes_descriptors(fs: FaultFS) -> None:
    fd = _write_file(fs, "/d/f", b"unsynced")
    fs.crash()
    assert fs.read_file("/d/f") == b"unsynced"
    assert fs.open_fds == 0
    with pytest.raises(OSError) as info:
        fs.write(fd, b"x")
    assert info.value.errno == errno.EBADF


# --- durability of directory entries ---------------------------------------------------------


def test_create_without_directory_fsync_is_lost_even_if_file_synced(fs: FaultFS) -> None:
    fd = _write_file(fs, "/d/f", b"data")
    fs.fsync(fd)
    assert not fs.durably_exists("/d/f")
    fs.power_loss()
    assert not fs.exists("/d/f")


def test_create_with_directory_fsync_but_no_file_fsync_leaves_empty_file(fs: FaultFS) -> None:
    _write_file(fs, "/d/f", b"data")
    fs.fsync_dir("/d")
    fs.power_loss()
    assert fs.read_file("/d/f") == b""


def test_rename_is_durable_only_after_directory_fsync(fs: FaultFS) -> None:
    fd = _write_file(fs, "/d/f.tmp", b"new")
    fs.fsync(fd)
    fs.fsync_dir("/d")
    fs.rename("/d/f.tmp", "/d/f")
    clone = fs.clone()
    fs.power_loss()
    assert sorted(fs.listdir("/d")) == ["f.tmp"]
    clone.fsync_dir("/d")
    clone.power_loss()
    assert sorted(clone.listdir("/d")) == ["f"]
    assert clone.read_file("/d/f") == b"new"


def test_rename_replacing_a_file_keeps_old_contents_until_synced(fs: FaultFS) -> None:
    fs.write_durable("/d/f", b"old")
    fd = _write_file(fs, "/d/f.tmp", b"new")
    fs.fsync(fd)
    fs.rename("/d/f.tmp", "/d/f")
    assert fs.read_file("/d/f") == b"new"
    fs.power_loss()
    assert fs.read_file("/d/f") == b"old"


def test_cross_directory_rename_needs_both_directories_synced(fs: FaultFS) -> None:
    fs.makedirs("/d/a")
    fs.makedirs("/d/b")
    fs.write_durable("/d/a/f", b"x")
    fs.rename("/d/a/f", "/d/b/f")
    fs.fsync_dir("/d/b")
    fs.power_loss()
    # The destination entry is durable, the removal from the source is not: two names.
    assert fs.read_file("/d/a/f") == b"x"
    assert fs.read_file("/d/b/f") == b"x"


def test_unlink_is_undone_by_power_loss_unless_directory_synced(fs: FaultFS) -> None:
    fs.write_durable("/d/f", b"x")
    fs.write_durable("/d/g", b"y")
    fs.unlink("/d/f")
    fs.power_loss()
    assert fs.exists("/d/f")
    fs.unlink("/d/g")
    fs.fsync_dir("/d")
    fs.power_loss()
    assert not fs.exists("/d/g")


def test_new_directory_needs_parent_fsync(fs: FaultFS) -> None:
    fs.mkdir("/d/sub")
    fd = _write_file(fs, "/d/sub/f", b"x")
    fs.fsync(fd)
    fs.fsync_dir("/d/sub")
    fs.power_loss()
    assert not fs.exists("/d/sub")


def test_rmtree_is_undone_by_power_loss_unless_parent_synced(fs: FaultFS) -> None:
    fs.write_durable("/d/t/x/f", b"1")
    fs.rmtree("/d/t")
    assert not fs.exists("/d/t")
    clone = fs.clone()
    fs.power_loss()
    assert fs.read_file("/d/t/x/f") == b"1"
    clone.fsync_dir("/d")
    clone.power_loss()
    assert not clone.exists("/d/t")


def test_unlinked_open_file_stays_readable_and_writable(fs: FaultFS) -> None:
    fd = _write_file(fs, "/d/f", b"abc")
    fs.unlink("/d/f")
    fs.write(fd, b"d")
    assert fs.pread(fd, 10, 0) == b"abcd"
    assert not fs.exists("/d/f")


# --- random-subset power loss ------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    synced=st.binary(max_size=300),
    unsynced=st.binary(min_size=1, max_size=300),
    overwrite=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_random_subset_power_loss_never_loses_synced_bytes(
    synced: bytes, unsynced: bytes, overwrite: bool, seed: int
) -> None:
    fs = FaultFS(sector=16)
    fs.makedirs("/d")
    fs.sync_all()
    fd = fs.create_new("/d/f")
    fs.write(fd, synced)
    fs.fsync(fd)
    fs.fsync_dir("/d")
    if overwrite:
        fs.truncate(fd, len(synced) // 2)
    fs.write(fd, unsynced)
    live = fs.read_bytes("/d/f")
    fs.power_loss("random_subset", random.Random(seed))
    after = fs.read_file("/d/f")
    if not overwrite:
        assert after[: len(synced)] == synced
    low, high = sorted((len(synced), len(live)))
    assert low <= len(after) <= high
    for start in range(0, len(after), 16):
        got = after[start : start + 16]
        old = synced[start : start + 16].ljust(len(got), b"\0")[: len(got)]
        new = live[start : start + 16].ljust(len(got), b"\0")[: len(got)]
        assert got in (old, new), f"sector at {start} is neither the synced nor the live bytes"


def test_random_subset_power_loss_produces_varied_outcomes() -> None:
    outcomes = set()
    for seed in range(40):
        fs = FaultFS(sector=8)
        fs.write_durable("/d/f", b"A" * 16)
        fd = fs.open_append("/d/f")
        fs.write(fd, b"B" * 32)
        fs.power_loss("random_subset", random.Random(seed))
        outcomes.add(fs.read_file("/d/f"))
    assert len(outcomes) > 4
    assert b"A" * 16 in outcomes


def test_power_loss_rejects_unknown_mode(fs: FaultFS) -> None:
    with pytest.raises(ValueError):
        fs.power_loss("everything")  # type: ignore[arg-type]


# --- fault knobs ---------------------------------------------------------------------------------


def test_nth_write_fails_and_writes_nothing(fs: FaultFS) -> None:
    fd = _write_file(fs, "/d/f", b"a")
    fs.fail_write(2, errno.ENOSPC)
    fs.write(fd, b"b")
    with pytest.raises(OSError) as info:
        fs.write(fd, b"c")
    assert info.value.errno == errno.ENOSPC
    fs.write(fd, b"d")
    assert fs.read_file("/d/f") == b"abd"


def test_sticky_write_fault_keeps_failing(fs: FaultFS) -> None:
    fd = _write_file(fs, "/d/f", b"a")
    fs.fail_write(1, errno.EIO, sticky=True)
    for _ in range(3):
        with pytest.raises(OSError):
            fs.write(fd, b"x")
    fs.clear_faults()
    fs.write(fd, b"b")
    assert fs.read_file("/d/f") == b"ab"


def test_write_fault_can_target_a_path(fs: FaultFS) -> None:
    fd_a = _write_file(fs, "/d/a.seg", b"")
    fd_b = _write_file(fs, "/d/b.idx", b"")
    fs.fail_write(1, errno.EIO, path_contains=".idx")
    fs.write(fd_a, b"ok")
    with pytest.raises(OSError):
        fs.write(fd_b, b"no")


def test_torn_write_lands_a_prefix_then_raises(fs: FaultFS) -> None:
    fd = _write_file(fs, "/d/f", b"")
    fs.tear_write(1, keep=3, err=errno.EIO)
    with pytest.raises(OSError):
        fs.write(fd, b"abcdef")
    assert fs.read_file("/d/f") == b"abc"


def test_torn_write_can_kill_the_process_after_the_prefix_landed(fs: FaultFS) -> None:
    fd = _write_file(fs, "/d/f", b"")
    fs.tear_write(1, keep=4, crash=True)
    with pytest.raises(SimulatedCrash):
        fs.write(fd, b"abcdefgh")
    with pytest.raises(SimulatedCrash):
        fs.truncate(fd, 0)  # the dead process cannot cut its torn bytes off
    fs.crash()
    assert fs.read_file("/d/f") == b"abcd"


def test_torn_write_can_return_a_short_count(fs: FaultFS) -> None:
    fd = _write_file(fs, "/d/f", b"")
    fs.tear_write(1, keep=2, err=None)
    assert fs.write(fd, b"abcdef") == 2
    assert fs.write(fd, b"cdef") == 4
    assert fs.read_file("/d/f") == b"abcdef"


def test_failed_fsync_syncs_nothing(fs: FaultFS) -> None:
    fd = _write_file(fs, "/d/f", b"abc")
    fs.fsync_dir("/d")
    fs.fail_fsync(1, errno.EIO)
    with pytest.raises(OSError):
        fs.fsync(fd)
    assert fs.durable_bytes("/d/f") == b""
    fs.fdatasync(fd)
    assert fs.durable_bytes("/d/f") == b"abc"


def test_fsync_fault_counts_fsync_and_fdatasync_but_not_directories(fs: FaultFS) -> None:
    fd = _write_file(fs, "/d/f", b"abc")
    fs.fail_fsync(2, errno.EIO)
    fs.fsync_dir("/d")
    fs.fdatasync(fd)
    with pytest.raises(OSError):
        fs.fsync(fd)


def test_failed_rename_renames_nothing(fs: FaultFS) -> None:
    fs.write_durable("/d/a", b"x")
    fs.fail_rename(1, errno.ENOSPC)
    with pytest.raises(OSError) as info:
        fs.rename("/d/a", "/d/b")
    assert info.value.errno == errno.ENOSPC
    assert fs.listdir("/d") == ["a"]


def test_halt_after_freezes_the_file_system(fs: FaultFS) -> None:
    fs.halt_after(2)
    fd = fs.create_new("/d/f")  # 1
    fs.write(fd, b"a")  # 2
    with pytest.raises(SimulatedCrash):
        fs.write(fd, b"b")
    with pytest.raises(SimulatedCrash):
        fs.read_file("/d/f")  # a dead process reads nothing either
    assert fs.halted
    fs.crash()
    assert fs.read_file("/d/f") == b"a"


def test_halt_does_not_count_reads(fs: FaultFS) -> None:
    fs.write_durable("/d/f", b"abc")
    fs.halt_after(0)
    assert fs.exists("/d/f")
    fd = fs.open_read("/d/f")
    assert fs.pread(fd, 3, 0) == b"abc"
    with pytest.raises(SimulatedCrash):
        fs.fsync_dir("/d")


def test_counters_and_journal(fs: FaultFS) -> None:
    fs.reset_counters()
    fd = _write_file(fs, "/d/f", b"abcdef")
    fs.fsync(fd)
    assert fs.pread(fd, 4, 2) == b"cdef"
    assert fs.bytes_read == 4
    assert fs.bytes_written == 6
    assert fs.counts["fsync"] == 1
    assert fs.journal == [("create_new", "/d/f"), ("write", "/d/f"), ("fsync", "/d/f")]


# --- locks -----------------------------------------------------------------------------------


def test_lock_is_per_open_file_description(fs: FaultFS) -> None:
    fs.write_durable("/d/LOCK", b"")
    first = fs.open_append("/d/LOCK")
    second = fs.open_append("/d/LOCK")
    assert not fs.is_locked("/d/LOCK")
    assert fs.lock(first)
    assert fs.lock(first)  # re-locking through the same description is fine
    assert not fs.lock(second)
    assert fs.is_locked("/d/LOCK")
    fs.close(first)
    assert not fs.is_locked("/d/LOCK")
    assert fs.lock(second)


def test_crash_releases_locks(fs: FaultFS) -> None:
    fs.write_durable("/d/LOCK", b"")
    assert fs.lock(fs.open_append("/d/LOCK"))
    fs.crash()
    assert not fs.is_locked("/d/LOCK")
    assert not fs.is_locked("/d/missing")


# --- clone -----------------------------------------------------------------------------------


def test_clone_is_independent_and_keeps_durability_state(fs: FaultFS) -> None:
    fs.write_durable("/d/f", b"synced")
    fd = fs.open_append("/d/f")
    fs.write(fd, b"+live")
    copy = fs.clone()
    fs.write(fd, b"+more")
    assert copy.read_file("/d/f") == b"synced+live"
    copy.power_loss()
    assert copy.read_file("/d/f") == b"synced"
    assert fs.read_file("/d/f") == b"synced+live+more"


# --- behaves like the real file system ------------------------------------------------------


def _script(fs: FileSystem, root: str) -> dict[str, bytes]:
    """One sequence of calls; returns the resulting files, to compare FaultFS with OS_FS."""
    fs.makedirs(f"{root}/a/b")
    fs.makedirs(f"{root}/a/b")
    fs.mkdir(f"{root}/c")
    with pytest.raises(FileExistsError):
        fs.mkdir(f"{root}/c")
    fd = fs.create_new(f"{root}/a/x")
    fs.write(fd, b"0123456789")
    assert fs.pread(fd, 4, 3) == b"3456"
    assert fs.pread(fd, 4, 20) == b""
    fs.truncate(fd, 4)
    fs.write(fd, b"zz")  # position-based, not append: position was 10, so there is a hole
    assert fs.size(fd) == 12
    fs.fsync(fd)
    fs.close(fd)
    fd = fs.open_append(f"{root}/a/x")
    fs.truncate(fd, 2)
    fs.write(fd, b"AB")
    fs.fdatasync(fd)
    fs.close(fd)
    fd = fs.open_append(f"{root}/c/y", create=True)
    fs.write(fd, b"y")
    fs.close(fd)
    fd = fs.create_new(f"{root}/c/y")
    fs.close(fd)
    with pytest.raises(FileNotFoundError):
        fs.open_append(f"{root}/nope")
    with pytest.raises(FileNotFoundError):
        fs.open_read(f"{root}/nope")
    with pytest.raises(IsADirectoryError):
        fs.read_file(f"{root}/a")
    with pytest.raises(NotADirectoryError):
        fs.listdir(f"{root}/a/x")
    with pytest.raises(OSError) as info:
        fs.rmdir(f"{root}/a")
    assert info.value.errno == errno.ENOTEMPTY
    fs.rename(f"{root}/a/x", f"{root}/c/x")
    fs.fsync_dir(f"{root}/c")
    fs.remove_quietly(f"{root}/c/nope")
    fs.remove_quietly(f"{root}/nodir/nope")
    fs.unlink(f"{root}/c/y")
    with pytest.raises(FileNotFoundError):
        fs.unlink(f"{root}/c/y")
    fs.rmdir(f"{root}/a/b")
    fs.makedirs(f"{root}/t/u")
    fs.rmtree(f"{root}/t")
    assert fs.exists(f"{root}/c") and fs.is_dir(f"{root}/c")
    assert not fs.is_dir(f"{root}/c/x") and not fs.exists(f"{root}/t")
    assert fs.file_size(f"{root}/c/x") == 4
    assert isinstance(fs.mtime(f"{root}/c/x"), float)
    out: dict[str, bytes] = {}
    for top in sorted(fs.listdir(root)):
        if fs.is_dir(f"{root}/{top}"):
            for name in sorted(fs.listdir(f"{root}/{top}")):
                out[f"{top}/{name}"] = (
                    b"<dir>"
                    if fs.is_dir(f"{root}/{top}/{name}")
                    else fs.read_file(f"{root}/{top}/{name}")
                )
        else:
            out[top] = fs.read_file(f"{root}/{top}")
    return out


def test_faultfs_agrees_with_the_real_file_system(tmp_path: Path) -> None:
    real = _script(OS_FS, str(tmp_path))
    fake = _script(FaultFS(), "/root")
    assert fake == real
    assert real == {"c/x": b"01AB"}


def test_reboot_kills_the_old_process_and_keeps_only_synced_state(fs: FaultFS) -> None:
    fs.write_durable("/d/f", b"synced")
    fd = fs.open_append("/d/f")
    fs.write(fd, b"+unsynced")
    after_crash = fs.clone().reboot()
    assert after_crash.read_file("/d/f") == b"synced+unsynced"
    after_power = fs.reboot("drop_unsynced")
    assert after_power.read_file("/d/f") == b"synced"
    with pytest.raises(SimulatedCrash):
        fs.write(fd, b"late write from a dead thread")
    assert after_power.open_fds == 0
