"""A plain torn tail does not fill quarantine; a damaged frame with intact frames after it does.

Quarantine is for bytes that still hold a record that verifies. A crash in the middle of
writing the last single-append frame leaves bytes in which nothing verifies: recovery cuts them
in place, in every mode, and quarantine stays empty.

- ``FaultFS``: the last append's write is torn after ``keep`` bytes and the process dies right
  there (``tear_write(crash=True)``, so the engine cannot cut the torn bytes itself), under
  every fsync policy, for tears inside a segment and tears of a new segment's first write. The
  reopened log holds every acknowledged append, reports only in-place cuts of bytes in which no
  frame verifies, and has nothing in quarantine.
- A real ``kill -9``: a child process appends single events in a loop and is killed at random
  moments (``children.kill_and_read`` keeps every promised line). A kill cannot tear a
  ``pwrite``, so on every other cycle the parent then tears the newest frame itself (cuts or
  zeroes its end, as a write torn by a crash would leave it) before reopening; that record's
  promise is dropped, since the format cannot tell its damage from a torn write (FORMAT.md
  section 10). Every other promise holds, and quarantine stays empty.
- The contrast: a damaged frame *followed by intact frames* at the end of a run does go to
  quarantine, whether ``tolerate_tail`` cuts it (durable marks that do not vouch for it) or
  only ``salvage`` does (marks that show it had been synced), and the intact frames come back
  through ``salvage_records``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import random
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

import segmentlog
from segmentlog import CorruptionError, maintenance
from segmentlog.format import DEFAULT_MAX_RECORD_BYTES, FRAME_HEADER_SIZE, SEGMENT_SUFFIX
from segmentlog.scan import find_frames_after

from .children import kill_and_read
from .faultfs import FaultFS, SimulatedCrash
from .model import (
    LOG_DIR,
    LogModel,
    event,
    frames_of,
    fresh_fs,
    open_log,
    read_run,
    segment_files,
)

SOAK = os.environ.get("SEGMENTLOG_SOAK") == "1"
A = uuid.UUID("0190a8c4-1e00-7000-8000-0000000007a1")
B = uuid.UUID("0190a8c4-1e00-7000-8000-0000000007b2")
MODES = ["strict", "tolerate_tail", "salvage"]
#: Bytes of the torn frame that land: inside the magic, the header, the payload.
KEEPS = [1, 3, 13, 27, 28, 29, 64, -1]
CHILD = Path(__file__).with_name("kill9_child.py")
ENCODE = msgspec.msgpack.Encoder(uuid_format="bytes").encode


@pytest.fixture(autouse=True)
def _quiet_recovery_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="segmentlog")


def _nothing_verifies(data: bytes, offset: int, dropped: int) -> bool:
    chunk = data[offset : offset + dropped]
    return not find_frames_after(chunk, 0, -1, 1, DEFAULT_MAX_RECORD_BYTES)


def _check_cuts_only(reports: list[Any], before: dict[str, bytes]) -> list[Any]:
    """Every report is an in-place act on bytes in which no frame verifies; returns the cuts."""
    acts = {r.action for r in reports}
    assert acts <= {"truncated", "removed", "index_rebuilt"}, f"quarantined a torn tail: {reports}"
    cuts = [r for r in reports if r.action in ("truncated", "removed")]
    for r in cuts:
        assert _nothing_verifies(before[r.path], r.offset, r.bytes_dropped), (
            f"{r.action} {r.path} at {r.offset} dropped a frame that verifies"
        )
    return cuts


# --- FaultFS: a write torn by a crash -------------------------------------------------------


def _tear_last_append(policy: str, appends: int, keep: int) -> tuple[FaultFS, LogModel, Any]:
    """Append to A and B, then die ``keep`` bytes into the next single append to A."""
    fs = fresh_fs()
    log = open_log(fs, fsync=policy)
    model = LogModel(durable_ack=True)
    for n in range(appends):
        run = A if n % 3 else B
        if n % 7 == 3:
            model.append_batch(log, [event(run, 1000 * n + i, 70) for i in range(3)])
        else:
            model.append(log, event(run, n, 90))
    last = event(A, 99_999, 300)
    frame = FRAME_HEADER_SIZE + len(ENCODE(last)) + 60  # an upper bound on its frame
    landed = keep if keep > 0 else frame + keep
    fs.tear_write(1, keep=landed, path_contains=SEGMENT_SUFFIX, crash=True)
    with pytest.raises(SimulatedCrash):
        model.append(log, last)
    survivor = fs.reboot()  # a process crash: the torn bytes stay in the page cache
    with contextlib.suppress(Exception, SimulatedCrash):
        log.close()
    return survivor, model, last


@pytest.mark.parametrize("policy", ["always", "batch", "never"])
def test_a_torn_last_frame_is_cut_in_place_in_every_mode_and_never_quarantined(
    policy: str,
) -> None:
    torn = new_segment = 0
    for appends in range(24, 36):
        for keep in KEEPS:
            base, model, _ = _tear_last_append(policy, appends, keep)
            segs = segment_files(base, A)
            last = base.read_bytes(segs[-1])
            new_segment += len(frames_of(last)) == 0
            for mode in MODES:
                fs = base.clone()
                before = {p: fs.read_bytes(p) for p in fs.walk_files()}
                log = open_log(fs, recovery=mode)
                what = f"{policy}, {appends} appends, {keep} bytes landed, {mode}"
                try:
                    copy.deepcopy(model).check(log, power_lost=False)
                    cuts = _check_cuts_only(log.recovery_reports, before)
                    torn += bool(cuts)
                    assert log.quarantined() == [], what
                    assert not fs.exists(f"{LOG_DIR}/quarantine"), what
                    nxt = log.append(event(A, 5))
                    assert nxt.seq == len(read_run(log, A)), what
                finally:
                    log.close()
    assert torn > 3 * len(KEEPS), "few tears left torn bytes; the test proves little"
    assert new_segment > 0, "no tear hit a new segment's first write"


# --- the contrast: damage followed by intact frames -----------------------------------------


@pytest.mark.parametrize(
    ("policy", "mode", "outcome"),
    [
        ("never", "tolerate_tail", "quarantined"),
        ("never", "salvage", "quarantined"),
        ("always", "tolerate_tail", "raises"),
        ("always", "salvage", "quarantined"),
    ],
)
def test_a_damaged_frame_followed_by_intact_frames_goes_to_quarantine(
    policy: str, mode: str, outcome: str
) -> None:
    fs = fresh_fs()
    log = open_log(fs, fsync=policy, segment_bytes=1 << 20)
    envs = [log.append(event(A, n, 80)) for n in range(12)]
    log.close()
    (path,) = segment_files(fs, A)
    data = bytearray(fs.read_bytes(path))
    frames = frames_of(bytes(data))
    bad = frames[-3]
    data[bad.offset + FRAME_HEADER_SIZE + 7] ^= 0x08
    fs.set_bytes(path, bytes(data))
    log = open_log(fs, recovery=mode, fsync=policy)
    try:
        if outcome == "raises":  # at the first touch, or at the page that reaches it
            with pytest.raises(CorruptionError) as info:
                read_run(log, A)
            assert (info.value.path, info.value.offset, info.value.first_seq) == (
                path,
                bad.offset,
                bad.seq,
            )
            assert log.quarantined() == []
            return
        live = read_run(log, A)
        assert [e.seq for e in live] == list(range(1, bad.seq))
        (entry,) = log.quarantined()
        assert entry.path.endswith(SEGMENT_SUFFIX + ".tail")
        assert (entry.first_seq, entry.last_seq) == (bad.seq + 1, len(envs))
        (report,) = [r for r in log.recovery_reports if r.path == path]
        assert (report.action, report.offset, report.first_seq) == (
            "quarantined",
            bad.offset,
            bad.seq,
        )
    finally:
        log.close()
    back = [p for p, q in maintenance.salvage_records(LOG_DIR, A, fs=fs) if q]
    assert back == [ENCODE(e) for e in envs[bad.seq :]], "the intact frames must come back"


# --- a real kill -9 -------------------------------------------------------------------------


def _promises(out: bytes) -> dict[str, int]:
    promised: dict[str, int] = {}
    for line in out.split(b"\n")[:-1]:  # the last piece is an unfinished line (or empty)
        run_id, seq, event_id = line.decode().split()
        promised[f"{run_id} {event_id}"] = int(seq)
    return promised


def _tear_newest_frame(run_dir: Path, rng: random.Random) -> tuple[Path, int, int] | None:
    """Tear the newest frame of the run as a crash mid-write would; returns (segment, offset of
    the torn frame, its seq), or None when the newest segment holds no frame (the kill came
    between its creation and its first write)."""
    segment = sorted(run_dir.glob(f"*{SEGMENT_SUFFIX}"))[-1]
    data = segment.read_bytes()
    frames = frames_of(data)
    if not frames:
        return None
    newest = frames[-1]
    cut = rng.randrange(newest.offset + 1, newest.end)
    if data[newest.end :] and not data[newest.end :].strip(b"\0"):
        torn = data[:cut] + bytes(len(data) - cut)  # inside a preallocated tail: zeros follow
    else:
        torn = data[:cut]
    segment.write_bytes(torn)
    return segment, newest.offset, newest.seq


@pytest.mark.parametrize("policy", ["always", "never"])
def test_kill9_and_torn_newest_frames_leave_quarantine_empty(tmp_path: Path, policy: str) -> None:
    rng = random.Random(f"torn-kill9-{policy}")
    path = tmp_path / "log"
    promised: dict[str, int] = {}
    cycles = 80 if SOAK else 12
    cuts = 0
    for cycle in range(cycles):
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(path), policy, "1", str(rng.randrange(1 << 30)), "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        promised.update(_promises(kill_and_read(proc, rng.uniform(0.02, 0.15))))
        run_dirs = list((path / "runs").iterdir()) if (path / "runs").is_dir() else []
        if not run_dirs:
            continue  # killed before its first append
        (run_dir,) = run_dirs
        torn = _tear_newest_frame(run_dir, rng) if cycle % 2 else None
        if torn is not None:
            promised = {k: v for k, v in promised.items() if v != torn[2]}
        before = {str(p): p.read_bytes() for p in run_dir.iterdir()}
        with segmentlog.open(path) as log:  # type: ignore[attr-defined]
            envs = read_run(log, uuid.UUID(run_dir.name), page=1000)
            reports = log.recovery_reports
            assert log.quarantined() == [], f"cycle {cycle}: a torn tail went to quarantine"
        assert [e.seq for e in envs] == list(range(1, len(envs) + 1)), f"cycle {cycle}: gap"
        stored = {f"{e.run_id} {e.event_id}": e.seq for e in envs}
        missing = {k: v for k, v in promised.items() if stored.get(k) != v}
        assert not missing, f"cycle {cycle}: promised appends lost: {sorted(missing.values())[:5]}"
        found = _check_cuts_only(reports, before)
        if torn is not None:
            assert [(r.path, r.offset) for r in found if r.action == "truncated"] == [
                (str(torn[0]), torn[1])
            ], f"cycle {cycle}: the torn frame was not cut where it starts: {reports}"
            cuts += 1
        assert not (path / "quarantine").exists() or not any((path / "quarantine").iterdir())
    assert cuts >= cycles // 3, f"only {cuts} of {cycles} cycles tore a frame"
    assert len(promised) > cycles, "the child acknowledged almost nothing"
