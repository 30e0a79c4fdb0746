"""Damage x region x recovery mode: single-bit flips, zeroed 512-byte sectors, random garbage.

A closed ``fsync="always"`` log holds one run over several segments, so every frame's durable
mark says the frames before it were synced. Each case damages a clone of it in one region (the
segment header, a middle frame's header, its payload, the last frame) of one segment (the
first, a middle one, the last) and reopens it in each recovery mode. The expected outcome is
derived from the damage itself: ``B`` is the frame holding the first changed byte, and "later
intact frames" are frames after the last changed byte (they verify, and their durable marks lie
past ``B``).

- Whatever is returned is a gapless prefix of what was appended: a record that fails its
  checksum is never returned as data, and nothing is renumbered.
- ``strict`` and ``tolerate_tail`` raise ``CorruptionError`` naming the file, ``B`` and the
  first lost seq, and leave the file untouched; except that damage with no later intact frame in
  the last segment is a torn tail, which ``tolerate_tail`` truncates and reports (``strict``
  only when the frame is merely short).
- ``salvage`` never raises: it keeps exactly the frames before ``B``, reports the loss from
  ``B``'s seq on, and the next append gets the next seq.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from segmentlog import CorruptionError, Envelope, NotFoundError
from segmentlog.format import (
    FRAME_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    FramedRecord,
)

from .faultfs import FaultFS
from .model import event, frames_of, fresh_fs, open_log, same_envelope, segment_files

RUN = uuid.UUID("0190a8c4-1e00-7000-8000-0000000c0aa1")
MODES = ["strict", "tolerate_tail", "salvage"]
SECTOR = 512


@pytest.fixture(autouse=True)
def _quiet_recovery_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="segmentlog")


@pytest.fixture(scope="module")
def closed_log() -> tuple[FaultFS, list[Envelope[Any]]]:
    fs = fresh_fs()
    log = open_log(fs, fsync="always")
    envs = [log.append(event(RUN, n, 90)) for n in range(50)]
    log.close()
    segs = segment_files(fs, RUN)
    assert len(segs) >= 3
    assert len(frames_of(fs.read_bytes(segs[-1]))) >= 4, "last segment needs a middle frame"
    return fs, envs


@dataclass
class Case:
    """One damaged copy of one segment."""

    name: str
    path: str
    data: bytes
    first_changed: int
    last_changed: int


def _damage(path: str, old: bytes, new: bytes, name: str) -> Case | None:
    changed = [i for i in range(len(old)) if old[i] != new[i]]
    if not changed:
        return None
    return Case(name, path, new, changed[0], changed[-1])


def _regions(frames: list[FramedRecord]) -> dict[str, tuple[int, int]]:
    mid = frames[len(frames) // 2]
    last = frames[-1]
    return {
        "segment header": (0, SEGMENT_HEADER_SIZE),
        "frame header": (mid.offset, mid.offset + FRAME_HEADER_SIZE),
        "payload": (mid.offset + FRAME_HEADER_SIZE, mid.end),
        "last frame": (last.offset, last.end),
    }


def _cases(path: str, old: bytes) -> Iterator[Case]:
    frames = frames_of(old)
    rng = random.Random(path)
    for region, (lo, hi) in _regions(frames).items():
        step = 1 if hi - lo <= 48 else 5
        for pos in range(lo, hi, step):
            new = bytearray(old)
            new[pos] ^= 1 << (pos % 8)
            case = _damage(path, old, bytes(new), f"{region}: bit {pos % 8} of byte {pos} flipped")
            if case:
                yield case
        start = lo - lo % SECTOR
        new = bytearray(old)
        new[start : start + SECTOR] = bytes(len(new[start : start + SECTOR]))
        case = _damage(path, old, bytes(new), f"{region}: sector at {start} zeroed")
        if case:
            yield case
        for trial in range(2):
            new = bytearray(old)
            new[lo:hi] = rng.randbytes(hi - lo)
            case = _damage(path, old, bytes(new), f"{region}: garbage over [{lo}, {hi}) #{trial}")
            if case:
                yield case


def _read_all(log: Any) -> tuple[list[Envelope[Any]], CorruptionError | None]:
    """Read the run in pages; stop at a CorruptionError and return what came before it."""
    out: list[Envelope[Any]] = []
    try:
        after = None
        while True:
            page = log.list_after(RUN, after_seq=after, limit=16)
            if not page:
                return out, None
            out.extend(page)
            after = page[-1].seq
    except CorruptionError as exc:
        return out, exc
    except NotFoundError:
        assert not out, "the run vanished between pages"
        return out, None


def _check_case(
    base: FaultFS, envs: list[Envelope[Any]], case: Case, mode: str, is_last: bool
) -> str | None:
    """Run one case; return a description of what went wrong, or None."""
    old = base.read_bytes(case.path)
    frames = frames_of(old)
    seg_first = frames[0].seq
    if case.first_changed < SEGMENT_HEADER_SIZE:
        bad_offset, bad_seq = 0, seg_first
        header = True
    else:
        bad = next(f for f in frames if f.offset <= case.first_changed < f.end)
        bad_offset, bad_seq, header = bad.offset, bad.seq, False
    later_intact = any(f.offset > case.last_changed for f in frames)
    fs = base.clone()
    fs.set_bytes(case.path, case.data)
    log = open_log(fs, recovery=mode)
    try:
        got, error = _read_all(log)
    except Exception as exc:  # anything but CorruptionError is a defect
        return f"raised {type(exc).__name__}: {exc}"
    for i, env in enumerate(got):
        if not same_envelope(env, envs[i]):
            return f"returned seq {env.seq} that differs from what was appended (position {i})"
    keep = bad_seq - 1
    # What the design says should happen.
    if mode == "salvage":
        expect = "cut"
    elif not is_last:
        expect = "raise"
    elif header:
        expect = "raise" if later_intact else "cut"
    elif later_intact:
        expect = "raise"
    else:
        expect = "cut" if mode == "tolerate_tail" else "raise-or-cut"
    if error is not None:
        if expect == "cut":
            return f"raised CorruptionError ({error}) but the design cuts here"
        if error.path != case.path:
            return f"CorruptionError names {error.path}, expected {case.path}"
        if error.offset != bad_offset:
            return f"CorruptionError offset {error.offset}, expected {bad_offset} ({error})"
        if error.first_seq != bad_seq:
            return f"CorruptionError first_seq {error.first_seq}, expected {bad_seq} ({error})"
        if error.last_seq is not None and error.last_seq < bad_seq:
            return f"CorruptionError seq range {error.first_seq}..{error.last_seq} is inverted"
        if len(got) > keep:
            return f"returned {len(got)} events before raising; only {keep} precede the damage"
        if fs.read_bytes(case.path) != case.data:
            return "raised CorruptionError but modified the damaged file anyway"
        return None
    if expect == "raise":
        return f"returned {len(got)} events without raising CorruptionError"
    if len(got) != keep:
        return f"kept {len(got)} events, expected exactly the {keep} before the damage"
    reports = [r for r in log.recovery_reports if r.path == case.path]
    if not reports:
        return f"dropped seqs {bad_seq}.. without a recovery report: {log.recovery_reports}"
    lost = [r for r in reports if r.first_seq == bad_seq]
    if not header and not lost:
        return f"no report names the first lost seq {bad_seq}: {reports}"
    new = log.append(event(RUN, 99_999))
    if new.seq != keep + 1:
        return f"next append got seq {new.seq}, expected {keep + 1}"
    log.close()
    again = open_log(fs, recovery="strict")
    got, error = _read_all(again)
    again.close()
    if error is not None or len(got) != keep + 1 or not same_envelope(got[-1], new):
        return f"after repair and one append, a strict reopen read {len(got)} events ({error})"
    return None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("segment", ["first", "middle", "last"])
def test_damage_is_never_returned_and_is_handled_per_recovery_mode(
    closed_log: tuple[FaultFS, list[Envelope[Any]]], segment: str, mode: str
) -> None:
    base, envs = closed_log
    segs = segment_files(base, RUN)
    path = {"first": segs[0], "middle": segs[len(segs) // 2], "last": segs[-1]}[segment]
    failures = []
    count = 0
    for case in _cases(path, base.read_bytes(path)):
        count += 1
        try:
            problem = _check_case(base, envs, case, mode, is_last=path == segs[-1])
        except Exception as exc:  # report every case, not just the first that blows up
            problem = f"raised {type(exc).__name__}: {exc}"
        if problem:
            failures.append(f"{case.name}: {problem}")
    assert count > 50
    assert not failures, f"{len(failures)}/{count} cases failed:\n" + "\n".join(failures[:15])


# --- a missing segment ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_missing_middle_segment_is_a_lost_seq_range_never_renumbered(
    closed_log: tuple[FaultFS, list[Envelope[Any]]], mode: str
) -> None:
    base, envs = closed_log
    fs = base.clone()
    segs = segment_files(fs, RUN)
    gone = segs[1]
    lost_first = frames_of(fs.read_bytes(gone))[0].seq
    lost_last = frames_of(fs.read_bytes(segs[2]))[0].seq - 1
    fs.unlink(gone)
    fs.remove_quietly(gone[: -len(".seg")] + ".idx")
    log = open_log(fs, recovery=mode)
    got, error = _read_all(log)
    for i, env in enumerate(got):
        assert same_envelope(env, envs[i]), f"seq {env.seq} was renumbered or altered"
    assert len(got) <= lost_first - 1
    if mode == "salvage":
        assert error is None
        assert len(got) == lost_first - 1
        assert any(r.first_seq == lost_first for r in log.recovery_reports), (
            f"the lost range from seq {lost_first} was not reported: {log.recovery_reports}"
        )
        assert log.append(event(RUN, 1)).seq == lost_first
    else:
        assert error is not None, "a missing segment must raise CorruptionError"
        assert error.first_seq == lost_first
        span = f"{error.first_seq}..{error.last_seq}"
        assert error.last_seq in (None, lost_last), f"lost range {span}"
        assert str(lost_first) in str(error)
    log.close()


# --- the durable mark decides between torn tail and corruption ------------------------------


@pytest.mark.parametrize(
    ("policy", "mode", "outcome"),
    [
        ("always", "strict", "raise"),
        ("always", "tolerate_tail", "raise"),
        ("always", "salvage", "cut"),
        ("never", "strict", "raise"),
        ("never", "tolerate_tail", "cut"),
        ("never", "salvage", "cut"),
    ],
)
def test_middle_damage_is_corruption_only_when_a_later_frame_marks_it_durable(
    policy: str, mode: str, outcome: str
) -> None:
    fs = fresh_fs()
    log = open_log(fs, fsync=policy, segment_bytes=1 << 20)
    envs = [log.append(event(RUN, n, 90)) for n in range(12)]
    log.close()
    (path,) = segment_files(fs, RUN)
    data = bytearray(fs.read_bytes(path))
    bad = frames_of(bytes(data))[5]
    data[bad.offset + FRAME_HEADER_SIZE + 3] ^= 0x10
    fs.set_bytes(path, bytes(data))
    fs.sync_all()
    log = open_log(fs, recovery=mode, fsync=policy)
    got, error = _read_all(log)
    assert all(same_envelope(a, b) for a, b in zip(got, envs, strict=False))
    if outcome == "raise":
        assert isinstance(error, CorruptionError)
        assert (error.path, error.offset, error.first_seq) == (path, bad.offset, bad.seq)
    else:
        assert error is None
        assert [e.seq for e in got] == list(range(1, bad.seq))
        (report,) = [r for r in log.recovery_reports if r.path == path]
        assert (report.offset, report.first_seq) == (bad.offset, bad.seq)
        assert report.bytes_dropped == len(data) - bad.offset
    log.close()
