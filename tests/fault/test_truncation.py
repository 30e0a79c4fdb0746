"""A file cut short at every byte: the last three frames of a run, a segment header, an index.

Every cut point is a separate reopen of a clone of one closed log. A cut inside a frame leaves a
short frame at end of file, which every recovery mode treats as a clean end: reopen must yield
exactly the frames that are still whole, report the dropped bytes (and the torn seq), and give
the next append the next seq, which a second reopen must read back right after the prefix.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest

from segmentlog import Envelope
from segmentlog.format import (
    SEGMENT_HEADER_SIZE,
)

from .faultfs import FaultFS
from .model import event, frames_of, fresh_fs, open_log, read_run, same_envelope, segment_files

RUN = uuid.UUID("0190a8c4-1e00-7000-8000-00000000a11d")
YOUNG = uuid.UUID("0190a8c4-1e00-7000-8000-0000000000b0")
MODES = ["strict", "tolerate_tail", "salvage"]


@pytest.fixture(autouse=True)
def _quiet_recovery_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="segmentlog")


@pytest.fixture(scope="module")
def closed_log() -> tuple[FaultFS, list[Envelope[Any]], list[Envelope[Any]]]:
    """A closed log: RUN spans several segments (its last holds >= 3 frames); YOUNG has one."""
    fs = fresh_fs()
    log = open_log(fs, fsync="batch")
    envs = [log.append(event(RUN, n, 90)) for n in range(48)]
    young = [log.append(event(YOUNG, n, 90)) for n in range(3)]
    log.close()
    segs = segment_files(fs, RUN)
    assert len(segs) >= 3, "the fixture must span several segments"
    if len(frames_of(fs.read_bytes(segs[-1]))) < 3:
        raise AssertionError("the last segment must hold at least three frames")
    return fs, envs, young


def _reopen_cut(
    base: FaultFS, path: str, cut: int, mode: str
) -> tuple[FaultFS, Any, list[Envelope[Any]]]:
    fs = base.clone()
    fs.set_bytes(path, fs.read_bytes(path)[:cut])
    log = open_log(fs, recovery=mode)
    return fs, log, read_run(log, RUN, page=100)


def _assert_prefix(
    got: list[Envelope[Any]], envs: list[Envelope[Any]], count: int, what: str
) -> None:
    assert len(got) == count, f"{what}: expected the first {count} events, got {len(got)}"
    for a, b in zip(got, envs, strict=False):
        assert same_envelope(a, b), f"{what}: seq {a.seq} differs from what was appended"


def _assert_next_append_continues(
    fs: FaultFS, log: Any, run_id: uuid.UUID, envs: list[Envelope[Any]], count: int, what: str
) -> None:
    new = log.append(event(run_id, 10_000))
    assert new.seq == count + 1, f"{what}: next append got seq {new.seq}, expected {count + 1}"
    log.close()
    again = open_log(fs)
    got = read_run(again, run_id, page=100)
    _assert_prefix(got[:count], envs, count, f"{what} (after the next append)")
    assert len(got) == count + 1 and same_envelope(got[-1], new), (
        f"{what}: the appended event did not follow the recovered prefix"
    )
    again.close()


@pytest.mark.parametrize("mode", MODES)
def test_cut_at_every_byte_of_the_last_three_frames_keeps_longest_whole_prefix(
    closed_log: tuple[FaultFS, list[Envelope[Any]], list[Envelope[Any]]], mode: str
) -> None:
    base, envs, _ = closed_log
    last = segment_files(base, RUN)[-1]
    data = base.read_bytes(last)
    frames = frames_of(data)
    assert frames[-1].end == len(data)
    tail = frames[-3:]
    before = frames[-1].seq - len(frames)  # events in earlier segments
    for cut in range(tail[0].offset, len(data)):
        what = f"{mode}, {last} cut at {cut}"
        fs, log, got = _reopen_cut(base, last, cut, mode)
        whole = [f for f in frames if f.end <= cut]
        count = before + len(whole)
        _assert_prefix(got, envs, count, what)
        torn = next(f for f in frames if f.end > cut)
        reports = [r for r in log.recovery_reports if r.run_id == RUN and r.path == last]
        if cut == torn.offset:
            assert not [r for r in reports if r.bytes_dropped], f"{what}: a clean end was reported"
        else:
            assert len(reports) == 1, f"{what}: expected one report, got {reports}"
            rep = reports[0]
            assert rep.offset == torn.offset, f"{what}: report offset {rep.offset}"
            assert rep.bytes_dropped == cut - torn.offset, f"{what}: {rep.bytes_dropped} dropped"
            if rep.first_seq is not None:
                assert rep.first_seq == torn.seq, f"{what}: report names seq {rep.first_seq}"
        _assert_next_append_continues(fs, log, RUN, envs, count, what)


@pytest.mark.parametrize("mode", MODES)
def test_cut_inside_the_segment_header_drops_that_segment_only(
    closed_log: tuple[FaultFS, list[Envelope[Any]], list[Envelope[Any]]], mode: str
) -> None:
    base, envs, _ = closed_log
    last = segment_files(base, RUN)[-1]
    data = base.read_bytes(last)
    count = frames_of(data)[0].seq - 1
    for cut in range(SEGMENT_HEADER_SIZE):
        what = f"{mode}, {last} cut to {cut} bytes"
        fs, log, got = _reopen_cut(base, last, cut, mode)
        _assert_prefix(got, envs, count, what)
        if cut:
            assert [r for r in log.recovery_reports if r.path == last], (
                f"{what}: dropping the segment was not reported"
            )
        _assert_next_append_continues(fs, log, RUN, envs, count, what)


@pytest.mark.parametrize("mode", MODES)
def test_cut_inside_the_only_segment_header_leaves_an_empty_run(
    closed_log: tuple[FaultFS, list[Envelope[Any]], list[Envelope[Any]]], mode: str
) -> None:
    base, _, young = closed_log
    (seg,) = segment_files(base, YOUNG)
    for cut in range(SEGMENT_HEADER_SIZE):
        what = f"{mode}, {seg} cut to {cut} bytes"
        fs = base.clone()
        fs.set_bytes(seg, fs.read_bytes(seg)[:cut])
        log = open_log(fs, recovery=mode)
        assert read_run(log, YOUNG) == [], what
        assert log.last_seq(YOUNG) is None, what
        _assert_next_append_continues(fs, log, YOUNG, young, 0, what)


@pytest.mark.parametrize("which", ["last", "sealed"])
def test_cut_index_at_every_byte_changes_nothing_readable(
    closed_log: tuple[FaultFS, list[Envelope[Any]], list[Envelope[Any]]], which: str
) -> None:
    base, envs, _ = closed_log
    indexes = segment_files(base, RUN, ".idx")
    path = indexes[-1] if which == "last" else indexes[0]
    data = base.read_bytes(path)
    assert len(data) >= 32, "the index should hold several entries"
    for cut in range(len(data) + 1):
        what = f"{path} cut to {cut} bytes"
        fs = base.clone()
        fs.set_bytes(path, data[:cut])
        log = open_log(fs, recovery="strict")
        _assert_prefix(read_run(log, RUN), envs, len(envs), what)
        for after in range(0, len(envs), 5):
            page = log.list_after(RUN, after_seq=after, limit=3)
            assert [e.seq for e in page] == list(range(after + 1, min(after + 3, len(envs)) + 1))
            assert all(same_envelope(e, envs[e.seq - 1]) for e in page), what
        _assert_next_append_continues(fs, log, RUN, envs, len(envs), what)


def test_missing_index_is_rebuilt(
    closed_log: tuple[FaultFS, list[Envelope[Any]], list[Envelope[Any]]],
) -> None:
    base, envs, _ = closed_log
    fs = base.clone()
    for path in segment_files(fs, RUN, ".idx"):
        fs.unlink(path)
    log = open_log(fs, recovery="strict")
    _assert_prefix(read_run(log, RUN), envs, len(envs), "all indexes removed")
    _assert_next_append_continues(fs, log, RUN, envs, len(envs), "all indexes removed")
