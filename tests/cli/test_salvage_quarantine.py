"""Repair never destroys data: `recover` quarantines, `salvage-export` gets it back,
`recover --dry-run` changes nothing, `verify` lists quarantine, `quarantine purge` deletes it."""

from __future__ import annotations

import argparse
import json
import shutil
import uuid
from pathlib import Path

import msgspec
import pytest

import segmentlog
from segmentlog import Envelope, RunStarted, TextDelta, maintenance
from segmentlog.cli._common import duration
from segmentlog.format import (
    DEFAULT_MAX_RECORD_BYTES,
    SEGMENT_HEADER_SIZE,
    FramedRecord,
)
from segmentlog.frames import read_frame

from .conftest import Cli, assert_one_line_error, make_sample

QUARANTINED = ',"quarantined":true}'


def _first_segment(path: Path, run: uuid.UUID) -> Path:
    return sorted((path / "runs" / str(run)).glob("*.seg"))[0]


def _frames(data: bytes) -> list[FramedRecord]:
    out, pos = [], SEGMENT_HEADER_SIZE
    while isinstance(rec := read_frame(data, pos, DEFAULT_MAX_RECORD_BYTES), FramedRecord):
        out.append(rec)
        pos = rec.end
    return out


def _flip_payload_bit(segment: Path, index: int) -> int:
    """Flip one bit in the payload of the index-th frame of ``segment``; return its seq."""
    data = bytearray(segment.read_bytes())
    rec = _frames(bytes(data))[index]
    data[rec.end - len(rec.payload) // 2] ^= 0x04
    segment.write_bytes(bytes(data))
    return rec.seq


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(root.rglob("*"))
    }


def _damaged_log(tmp_path: Path, events: int = 500) -> tuple[Path, uuid.UUID, list[bytes], int]:
    """One run of ``events`` events in 8 KiB segments, a bit flipped in the first segment.

    Returns the path, the run, the JSON of every appended envelope, and the flipped seq.
    """
    path = tmp_path / "log"
    run = uuid.uuid4()
    encode = msgspec.json.Encoder().encode
    appended: list[bytes] = []
    with segmentlog.open(path, segment_bytes=8192) as log:
        appended.append(
            encode(
                log.append(RunStarted(run_id=run, session_id=uuid.uuid4(), provider="p", model="m"))
            )
        )
        for i in range(events - 1):
            appended.append(encode(log.append(TextDelta(run_id=run, delta=f"token {i} " * 3))))
    assert len(list((path / "runs" / str(run)).glob("*.seg"))) > 3
    flipped = _flip_payload_bit(_first_segment(path, run), 20)
    return path, run, appended, flipped


def test_issue_case_salvage_export_returns_every_intact_event_byte_exactly(
    cli: Cli, tmp_path: Path
) -> None:
    path, run, appended, flipped = _damaged_log(tmp_path)
    assert cli("verify", path).code == 1

    recovered = cli("recover", path)
    assert recovered.code == 0, recovered.err
    assert "quarantined" in recovered.out and "kept in " in recovered.out
    assert str(path / "quarantine") in recovered.out
    with segmentlog.open(path, read_only=True) as log:
        assert log.last_seq(run) == flipped - 1
    assert cli("verify", path).code == 0

    salvaged = cli("salvage-export", path)
    assert salvaged.code == 0, salvaged.err
    lines = salvaged.out.splitlines()
    assert f"salvaged {len(lines)} record(s)" in salvaged.err
    plain = [
        line[: -len(QUARANTINED)] + "}" if line.endswith(QUARANTINED) else line for line in lines
    ]
    intact = [a.decode() for n, a in enumerate(appended, 1) if n != flipped]
    assert plain == intact  # 499 events, byte for byte, in seq order
    assert len(plain) == 499
    seqs = [json.loads(line)["seq"] for line in lines]
    assert flipped not in seqs
    live = [json.loads(line) for line in lines if not line.endswith(QUARANTINED)]
    assert all("quarantined" not in env for env in live)
    assert [env["seq"] for env in live] == list(range(1, flipped))


def test_salvaged_records_go_back_with_import_renumber_once(cli: Cli, tmp_path: Path) -> None:
    path, run, appended, flipped = _damaged_log(tmp_path, events=300)
    assert cli("recover", path).code == 0
    salvaged = cli("salvage-export", path).out

    plain = cli("import", path, stdin=salvaged)  # seqs collide with nothing but leave a gap
    assert plain.code == 2
    assert_one_line_error(plain)
    assert "--renumber" in plain.err

    back = cli("import", path, "--renumber", stdin=salvaged)
    assert back.code == 0, back.err
    assert f"imported {300 - flipped} envelope(s)" in back.err
    assert f"skipped {flipped - 1} already imported" in back.err
    again = cli("import", path, "--renumber", stdin=salvaged)
    assert again.code == 0 and "imported 0 envelope(s)" in again.err

    wanted = [json.loads(a) for n, a in enumerate(appended, 1) if n != flipped]
    with segmentlog.open(path, read_only=True) as log:
        stored = log.list_after(run, 0, 1000)
    assert [e.seq for e in stored] == list(range(1, 300))
    assert [str(e.event_id) for e in stored] == [w["event_id"] for w in wanted]
    assert [e.event for e in stored][-1] == msgspec.json.decode(
        json.dumps(wanted[-1]), type=Envelope[segmentlog.AgentEvent]
    ).event


def test_recover_dry_run_changes_no_byte_and_no_file(cli: Cli, tmp_path: Path) -> None:
    path, run, _, flipped = _damaged_log(tmp_path, events=200)
    seg = sorted((path / "runs" / str(run)).glob("*.seg"))[-1]
    with seg.open("ab") as f:
        f.write(b"\x00torn")
    before = _tree(path)
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)

    dry = cli("recover", path, "--dry-run")
    assert dry.code == 1, dry.err
    assert "would quarantine" in dry.out
    assert f"dropped seqs {flipped}.." in dry.out
    assert "nothing was changed" in dry.out
    assert _tree(path) == before == _tree(copy)

    real = cli("recover", path)
    assert real.code == 0
    would = [line.split(": ", 1)[1] for line in dry.out.splitlines() if line.startswith("would")]
    did = [line.split(": ", 1)[1].split(", kept in ")[0] for line in real.out.splitlines()[:-2]]
    assert would == did
    assert cli("recover", path, "--dry-run").out.strip() == "ok: nothing to repair"


def test_verify_lists_quarantine_and_still_exits_0(cli: Cli, tmp_path: Path) -> None:
    path, _, _, _ = _damaged_log(tmp_path, events=200)
    assert cli("recover", path).code == 0
    held = maintenance.quarantined(str(path))
    assert held

    result = cli("verify", path)
    assert result.code == 0, result.out
    quarantined = [line for line in result.out.splitlines() if line.startswith("quarantined: ")]
    assert len(quarantined) == len(held)
    for entry, line in zip(held, quarantined, strict=True):
        assert entry.path in line
    assert "no damage found" in result.out and "quarantine holds" in result.out
    listed = cli("quarantine", "list", path)
    assert listed.code == 0 and len(listed.out.splitlines()) == len(held) + 1


def test_quarantine_purge_honours_older_than_and_prints_what_it_removed(
    cli: Cli, tmp_path: Path
) -> None:
    path, _, _, _ = _damaged_log(tmp_path, events=200)
    assert cli("recover", path).code == 0
    held = maintenance.quarantined(str(path))

    young = cli("quarantine", "purge", path, "--older-than", "7d")
    assert young.code == 0, young.err
    assert "nothing to purge" in young.out
    assert len(maintenance.quarantined(str(path))) == len(held)

    purged = cli("quarantine", "purge", path)
    assert purged.code == 0, purged.err
    removed = [line for line in purged.out.splitlines() if line.startswith("removed: ")]
    assert len(removed) == len(held)
    assert f"purged {len(held)} file(s)" in purged.out
    assert maintenance.quarantined(str(path)) == []
    assert "quarantined" not in cli("verify", path).out


def test_quarantine_purge_rejects_a_bad_duration(cli: Cli, tmp_path: Path) -> None:
    sample = make_sample(tmp_path / "log")
    result = cli("quarantine", "purge", sample.path, "--older-than", "soon")
    assert result.code == 2
    assert_one_line_error(result)
    assert "duration" in result.err


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3600", 3600), ("90m", 5400), ("12h", 43200), ("7d", 604800), ("30s", 30), ("1.5h", 5400)],
)
def test_durations_take_seconds_or_a_unit(text: str, seconds: float) -> None:
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "-1h", "3w", "1 d x"])
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        duration(text)


class Note(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    run_id: uuid.UUID
    text: str


def test_salvage_export_skips_records_of_another_event_type_and_counts_them(
    cli: Cli, tmp_path: Path
) -> None:
    path = tmp_path / "log"
    run = uuid.uuid4()
    with segmentlog.open(path, event_type=Note) as log:
        for i in range(3):
            log.append(Note(run_id=run, text=str(i)))
    result = cli("salvage-export", path)
    assert result.code == 0, result.err
    assert result.out == ""
    assert "skipped 3" in result.err and "event_type" in result.err


def test_salvage_export_of_a_clean_log_equals_export(cli: Cli, tmp_path: Path) -> None:
    sample = make_sample(tmp_path / "log")
    assert cli("salvage-export", sample.path).out == cli("export", sample.path).out
    one = cli("salvage-export", sample.path, "--run", str(sample.open_run))
    assert one.out == cli("export", sample.path, "--run", str(sample.open_run)).out
    missing = cli("salvage-export", sample.path, "--run", str(uuid.uuid4()))
    assert missing.code == 2
    assert_one_line_error(missing)


def test_recover_prints_its_repairs_once_on_stdout_and_nothing_on_stderr(
    cli: Cli, tmp_path: Path
) -> None:
    path, _, _, _ = _damaged_log(tmp_path, events=200)
    for args in (("recover", path, "--dry-run"), ("recover", path)):
        result = cli(*args)
        assert result.err == "", args
        assert "quarantine" in result.out
