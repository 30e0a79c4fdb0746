"""The issue's case: salvage keeps the valid prefix, and quarantine gives back everything else.

One run of 500 events in 8 KiB segments (16 of them), on the real file system. One bit is
flipped in the payload of one record in the middle of the *first* segment. Salvage (opening
with ``recovery="salvage"``, or ``maintenance.recover``) keeps the run's valid prefix, seqs
``1 .. bad - 1``, and moves everything after it aside: the first segment's tail from the
damaged frame on, and every later segment whole. Then:

- every one of the 499 intact records comes back through ``salvage_records`` byte for byte
  (its payload equals the envelope the append returned, encoded), the prefix as live records
  and the rest as quarantined ones, each exactly once;
- the flipped record is never returned as data;
- ``quarantined()`` (the function and the log's method) lists each quarantine file with the
  seq range of the records in it that still verify, and these ranges cover exactly the seqs
  after the damaged one;
- a dry run reports the same acts and changes nothing, and a second ``recover`` finds nothing.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

import segmentlog
from segmentlog import Envelope, maintenance
from segmentlog.format import FRAME_HEADER_SIZE, SEGMENT_SUFFIX
from segmentlog.repair import QUARANTINE_TAIL
from segmentlog.schema import EnvelopeCodec

from .model import event, frames_of, read_run, same_envelope

RUN = uuid.UUID("0190a8c4-1e00-7000-8000-00000005a1f0")
EVENTS = 500
OPTIONS: dict[str, Any] = {"segment_bytes": 8192}
ENCODE = msgspec.msgpack.Encoder(uuid_format="bytes").encode


@pytest.fixture(autouse=True)
def _quiet_recovery_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="segmentlog")


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Envelope[Any]], int]:
    """A closed log with one bit flipped in a payload of its first segment: ``(dir, appended
    envelopes, damaged seq)``."""
    path = tmp_path_factory.mktemp("salvage") / "log"
    with segmentlog.open(path, fsync="batch", **OPTIONS) as log:  # type: ignore[attr-defined]
        envs = [log.append(event(RUN, n, 120)) for n in range(EVENTS)]
    segs = _segments(path)
    assert len(segs) >= 10, "the case needs many segments after the damaged one"
    data = bytearray(segs[0].read_bytes())
    frames = frames_of(bytes(data))
    bad = frames[len(frames) // 2]
    data[bad.offset + FRAME_HEADER_SIZE + (bad.end - bad.offset) // 2] ^= 0x20
    segs[0].write_bytes(bytes(data))
    return path, envs, bad.seq


@pytest.fixture
def copy(damaged: tuple[Path, list[Envelope[Any]], int], tmp_path: Path) -> Path:
    target = tmp_path / "log"
    shutil.copytree(damaged[0], target)
    return target


def _segments(path: Path) -> list[Path]:
    return sorted((path / "runs" / str(RUN)).glob(f"*{SEGMENT_SUFFIX}"))


def _check_salvaged(path: Path, envs: list[Envelope[Any]], bad: int) -> None:
    """The live run is the prefix; every intact record comes back; the damaged one never."""
    with segmentlog.open(path, **OPTIONS) as log:  # type: ignore[attr-defined]
        live = read_run(log, RUN, page=50)
        assert [e.seq for e in live] == list(range(1, bad))
        assert all(map(same_envelope, live, envs))
        assert log.quarantined() == maintenance.quarantined(str(path))
    codec: EnvelopeCodec[Any] = EnvelopeCodec()
    seen: dict[int, bool] = {}
    for payload, quarantined in maintenance.salvage_records(str(path)):
        env = codec.decode(payload)
        assert env.seq not in seen, f"seq {env.seq} salvaged twice"
        assert env.seq != bad, "the record whose payload was flipped came back as data"
        original = envs[env.seq - 1]
        assert payload == ENCODE(original), f"seq {env.seq} is not byte-exact"
        assert same_envelope(env, original)
        seen[env.seq] = quarantined
    assert sorted(seen) == [s for s in range(1, EVENTS + 1) if s != bad]
    assert [s for s, q in seen.items() if not q] == list(range(1, bad))
    _check_listing(path, bad)


def _check_listing(path: Path, bad: int) -> None:
    entries = maintenance.quarantined(str(path))
    assert entries, "nothing was quarantined"
    root = path / "quarantine" / str(RUN)
    names = [Path(e.path).name for e in entries]
    first_name = _segments(path)[0].name
    assert names[0] == first_name + QUARANTINE_TAIL, "the first segment's tail comes first"
    for entry in entries:
        file = Path(entry.path)
        assert file.is_file() and file.parent.parent == root, entry.path
        assert entry.run_id == RUN and entry.bytes == file.stat().st_size
        assert entry.first_seq is not None and entry.last_seq is not None
        assert entry.records == entry.last_seq - entry.first_seq + 1
    tail = Path(entries[0].path)
    offset = int(Path(f"{tail}.offset").read_text())
    assert offset == _cut_offset(path, bad)
    assert entries[0].first_seq == bad + 1, "the damaged record does not verify"
    covered = [s for e in entries for s in range(e.first_seq or 0, (e.last_seq or -1) + 1)]
    assert covered == list(range(bad + 1, EVENTS + 1)), "quarantine ranges must tile the rest"


def _cut_offset(path: Path, bad: int) -> int:
    (segment,) = [p for p in _segments(path) if p.name.startswith(f"{1:020d}")]
    frames = frames_of(segment.read_bytes())
    assert frames[-1].seq == bad - 1, "the first segment must end right before the damage"
    return frames[-1].end


def test_opening_with_salvage_keeps_the_prefix_and_quarantines_every_intact_record(
    damaged: tuple[Path, list[Envelope[Any]], int], copy: Path
) -> None:
    _, envs, bad = damaged
    with segmentlog.open(copy, recovery="salvage", **OPTIONS) as log:  # type: ignore[attr-defined]
        assert log.last_seq(RUN) == bad - 1
        reports = log.recovery_reports
    first = reports[0]
    assert (first.action, first.first_seq, first.path) == (
        "quarantined",
        bad,
        str(_segments(copy)[0]),
    )
    assert first.quarantine is not None and Path(first.quarantine).is_dir()
    assert all(r.action == "quarantined" for r in reports)
    _check_salvaged(copy, envs, bad)


def test_maintenance_recover_does_the_same_and_a_dry_run_changes_nothing(
    damaged: tuple[Path, list[Envelope[Any]], int], copy: Path
) -> None:
    _, envs, bad = damaged
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    planned = maintenance.recover(str(copy), dry_run=True)
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before
    reports = maintenance.recover(str(copy))
    key = [(r.action, r.path, r.offset, r.first_seq, r.last_seq) for r in reports]
    assert [(r.action, r.path, r.offset, r.first_seq, r.last_seq) for r in planned] == key
    assert reports[0].first_seq == bad and all(r.action == "quarantined" for r in reports)
    assert maintenance.recover(str(copy)) == [], "a second recover found more to do"
    assert maintenance.verify(str(copy)) == []
    _check_salvaged(copy, envs, bad)
