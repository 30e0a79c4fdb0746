"""Pages before damage still serve: a flipped byte in a sealed segment costs only the pages that
reach it, under ``strict`` and ``tolerate_tail``.

A closed ``fsync="always"`` log holds one run of 150 events over several 8 KiB segments with
an index file each. Each case flips one byte in one frame of a middle (sealed) segment, every
frame in turn, so the damage lies before the segment's last index point (only reads meet it)
for most cases and past it (where recovery's check of a sealed segment's tail meets it on the
run's first touch) for the last ones; both must behave the same. Then every page
``list_after(after, limit)`` is read, for every ``after`` and a few limits:

- a page that ends before the damaged seq is served, exactly as appended;
- a page that reaches the damaged seq raises ``CorruptionError`` naming the segment, the
  damaged frame's offset and its seq;
- a page that starts after the damaged seq is served too (its walk skips the damaged frame by
  its header, which the payload flip left intact).

A damaged frame *header* cannot be skipped that way; there the pages before the damage must
still serve, and every page that cannot be served raises ``CorruptionError`` naming the segment.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest

from segmentlog import CorruptionError, Envelope
from segmentlog.format import FRAME_HEADER_SIZE, FRAME_SEQ_AT, FramedRecord

from .faultfs import FaultFS
from .model import event, frames_of, fresh_fs, open_log, same_envelope, segment_files

RUN = uuid.UUID("0190a8c4-1e00-7000-8000-0000000da9e5")
OPTIONS: dict[str, Any] = {"segment_bytes": 8192, "index_interval_bytes": 256}
LIMITS = [1, 7, 40]


@pytest.fixture(autouse=True)
def _quiet_recovery_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="segmentlog")


@pytest.fixture(scope="module")
def closed_log() -> tuple[FaultFS, list[Envelope[Any]], str]:
    fs = fresh_fs()
    log = open_log(fs, fsync="always", **OPTIONS)
    envs = [log.append(event(RUN, n, 90)) for n in range(150)]
    log.close()
    segs = segment_files(fs, RUN)
    assert len(segs) >= 4, "the run needs sealed segments on both sides of the damaged one"
    middle = segs[len(segs) // 2]
    points = fs.read_bytes(middle[: -len(".seg")] + ".idx")
    last_point = int.from_bytes(points[-8:], "little")
    assert frames_of(fs.read_bytes(middle))[-1].offset >= last_point, (
        "some damage must lie at or past the segment's last index point"
    )
    return fs, envs, middle


def _damaged(base: FaultFS, path: str, at: int) -> FaultFS:
    fs = base.clone()
    data = bytearray(fs.read_bytes(path))
    data[at] ^= 0x10
    fs.set_bytes(path, bytes(data))
    return fs


def _page_problem(
    log: Any, envs: list[Envelope[Any]], after: int, limit: int, bad: FramedRecord, path: str
) -> str | None:
    """Read one page; describe what is wrong with the outcome, or return None."""
    want = envs[after : after + limit]
    reaches = after < bad.seq <= after + limit
    try:
        got = log.list_after(RUN, after_seq=after, limit=limit)
    except CorruptionError as exc:
        if not reaches:
            return f"raised {exc} though the page does not reach seq {bad.seq}"
        where = (exc.path, exc.offset, exc.first_seq)
        if where != (path, bad.offset, bad.seq):
            return f"CorruptionError names {where}, expected {(path, bad.offset, bad.seq)}"
        return None
    if reaches:
        return f"served seqs {[e.seq for e in got]} across the damaged seq {bad.seq}"
    if len(got) != len(want) or not all(map(same_envelope, got, want)):
        return f"served seqs {[e.seq for e in got]}, expected {[e.seq for e in want]}"
    return None


@pytest.mark.parametrize("mode", ["strict", "tolerate_tail"])
def test_every_page_that_does_not_reach_a_damaged_payload_is_served(
    closed_log: tuple[FaultFS, list[Envelope[Any]], str], mode: str
) -> None:
    base, envs, path = closed_log
    frames = frames_of(base.read_bytes(path))
    problems: list[str] = []
    pages = 0
    for bad in frames:
        fs = _damaged(base, path, bad.offset + FRAME_HEADER_SIZE + (bad.end - bad.offset) // 3)
        log = open_log(fs, recovery=mode, **OPTIONS)
        try:
            assert log.last_seq(RUN) == len(envs), "recovery must not shorten the run"
            assert log.run_info(RUN).events == len(envs)
            for limit in LIMITS:
                for after in range(len(envs)):
                    pages += 1
                    problem = _page_problem(log, envs, after, limit, bad, path)
                    if problem:
                        page = f"page ({after}, {limit})"
                        problems.append(f"seq {bad.seq} damaged, {page}: {problem}")
        except CorruptionError as exc:
            problems.append(f"seq {bad.seq} damaged: the run is unreadable as a whole: {exc}")
        finally:
            log.close()
        assert fs.read_bytes(path) != base.read_bytes(path), "the damage must still be there"
    assert pages > 10_000
    assert not problems, f"{len(problems)} pages wrong:\n" + "\n".join(problems[:12])


@pytest.mark.parametrize("mode", ["strict", "tolerate_tail"])
def test_a_damaged_frame_header_costs_no_page_before_it(
    closed_log: tuple[FaultFS, list[Envelope[Any]], str], mode: str
) -> None:
    base, envs, path = closed_log
    frames = frames_of(base.read_bytes(path))
    problems: list[str] = []
    for bad in frames:
        fs = _damaged(base, path, bad.offset + FRAME_SEQ_AT)
        log = open_log(fs, recovery=mode, **OPTIONS)
        try:
            for limit in LIMITS:
                for after in range(len(envs)):
                    want = envs[after : after + limit]
                    try:
                        got = log.list_after(RUN, after_seq=after, limit=limit)
                    except CorruptionError as exc:
                        if after + limit < bad.seq:
                            problems.append(f"seq {bad.seq}: page ({after}, {limit}) raised {exc}")
                        elif exc.path != path:
                            problems.append(f"seq {bad.seq}: error names {exc.path}")
                        continue
                    if not all(map(same_envelope, got, want)) or len(got) != len(want):
                        problems.append(f"seq {bad.seq}: page ({after}, {limit}) served wrong data")
        finally:
            log.close()
    assert not problems, f"{len(problems)} pages wrong:\n" + "\n".join(problems[:12])


@pytest.mark.parametrize("mode", ["strict", "tolerate_tail"])
def test_a_damaged_segment_that_would_take_new_appends_fails_the_first_touch(
    closed_log: tuple[FaultFS, list[Envelope[Any]], str], mode: str
) -> None:
    """When the segments after the damaged one turn out empty (an interrupted creation), the
    damaged segment would become the one appends go to: that is refused at once."""
    base, _, _ = closed_log
    segs = segment_files(base, RUN)
    last_frame = frames_of(base.read_bytes(segs[-2]))[-1]
    fs = _damaged(base, segs[-2], last_frame.offset + FRAME_HEADER_SIZE + 2)
    fs.set_bytes(segs[-1], b"")  # the last segment's creation never reached the disk
    log = open_log(fs, recovery=mode, **OPTIONS)
    try:
        with pytest.raises(CorruptionError) as info:
            log.last_seq(RUN)
        assert (info.value.path, info.value.offset) == (segs[-2], last_frame.offset)
        assert info.value.first_seq == last_frame.seq
    finally:
        log.close()
