"""`segmentlog tail`, `export` and `import`: JSON lines that round-trip losslessly."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import segmentlog

from .conftest import Cli, SampleLog, assert_one_line_error, make_sample

ENVELOPE_KEYS = {"event_id", "seq", "run_id", "session_id", "event", "emitted_at"}


def _lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_tail_prints_each_envelope_as_one_json_line(cli: Cli, sample: SampleLog) -> None:
    result = cli("tail", sample.path, str(sample.finished))
    assert result.code == 0, result.err
    envs = _lines(result.out)
    assert [e["seq"] for e in envs] == [1, 2, 3, 4, 5]
    for env in envs:
        assert set(env) == ENVELOPE_KEYS
        assert env["run_id"] == str(sample.finished)
        assert env["session_id"] == str(sample.sessions[sample.finished])
    types = [e["event"]["type"] for e in envs]  # type: ignore[index]
    assert types == ["RunStarted", "TextDelta", "TextDelta", "TextDelta", "RunCompleted"]
    with segmentlog.open(sample.path, read_only=True) as log:
        stored = log.list_after(sample.finished)
    assert [e["event_id"] for e in envs] == [str(e.event_id) for e in stored]


def test_tail_after_and_limit_select_a_window(cli: Cli, sample: SampleLog) -> None:
    result = cli("tail", sample.path, str(sample.finished), "--after", "1", "--limit", "2")
    assert result.code == 0, result.err
    assert [e["seq"] for e in _lines(result.out)] == [2, 3]


def test_tail_follow_of_a_finished_run_exits_after_the_terminal_event(
    cli: Cli, sample: SampleLog
) -> None:
    result = cli("tail", sample.path, str(sample.finished), "--after", "3", "--follow")
    assert result.code == 0, result.err
    envs = _lines(result.out)
    assert [e["seq"] for e in envs] == [4, 5]
    assert envs[-1]["event"]["type"] == "RunCompleted"  # type: ignore[index]


def test_tail_with_a_malformed_run_id_is_a_usage_error(cli: Cli, sample: SampleLog) -> None:
    result = cli("tail", sample.path, "not-a-uuid")
    assert result.code == 2
    assert_one_line_error(result)
    assert "not-a-uuid" in result.err and "run id" in result.err


def test_tail_of_an_unknown_run_is_a_usage_error(cli: Cli, sample: SampleLog) -> None:
    result = cli("tail", sample.path, str(uuid.uuid4()))
    assert result.code == 2
    assert_one_line_error(result)
    assert "segmentlog runs" in result.err


def test_tail_rejects_a_negative_after_and_a_zero_limit(cli: Cli, sample: SampleLog) -> None:
    for args in (("--after", "-1"), ("--limit", "0"), ("--after", "x")):
        result = cli("tail", sample.path, str(sample.finished), *args)
        assert result.code == 2, args
        assert_one_line_error(result)


def test_export_then_import_rebuilds_an_identical_log(cli: Cli, tmp_path: Path) -> None:
    sample = make_sample(tmp_path / "log", segment_bytes=4096)
    with segmentlog.open(sample.path) as log:  # enough to roll segments
        for i in range(60):
            log.append(segmentlog.TextDelta(run_id=sample.open_run, delta="x" * 100 + str(i)))
    exported = cli("export", sample.path)
    assert exported.code == 0, exported.err
    assert len(exported.out.splitlines()) == 5 + 3 + 60

    imported = cli("import", tmp_path / "copy", stdin=exported.out)
    assert imported.code == 0, imported.err
    assert "imported 68" in imported.err
    again = cli("export", tmp_path / "copy")
    assert again.out == exported.out
    with (
        segmentlog.open(sample.path, read_only=True) as a,
        segmentlog.open(tmp_path / "copy", read_only=True) as b,
    ):
        for rid in (sample.finished, sample.open_run):
            assert a.list_after(rid) == b.list_after(rid)
            assert a.run_info(rid).terminal == b.run_info(rid).terminal


def test_export_of_one_run(cli: Cli, sample: SampleLog) -> None:
    result = cli("export", sample.path, "--run", str(sample.open_run))
    assert result.code == 0
    assert {e["run_id"] for e in _lines(result.out)} == {str(sample.open_run)}
    assert len(result.out.splitlines()) == 3


def test_import_twice_adds_nothing_the_second_time(cli: Cli, sample: SampleLog) -> None:
    exported = cli("export", sample.path).out
    result = cli("import", sample.path, stdin=exported)
    assert result.code == 0, result.err
    assert "imported 0 envelope(s)" in result.err and "skipped 8 already imported" in result.err
    assert cli("export", sample.path).out == exported


def test_import_of_a_partly_imported_file_adds_only_the_rest(
    cli: Cli, sample: SampleLog, tmp_path: Path
) -> None:
    lines = cli("export", sample.path, "--run", str(sample.finished)).out.splitlines(True)
    first = cli("import", tmp_path / "copy", stdin="".join(lines[:2]))
    assert first.code == 0 and "imported 2 envelope(s)" in first.err
    rest = cli("import", tmp_path / "copy", stdin="".join(lines))
    assert rest.code == 0, rest.err
    assert "imported 3 envelope(s)" in rest.err and "skipped 2 already imported" in rest.err
    assert cli("export", tmp_path / "copy").out == "".join(lines)


def test_import_refuses_a_seq_taken_by_another_event_and_writes_nothing_of_the_group(
    cli: Cli, sample: SampleLog, tmp_path: Path
) -> None:
    lines = cli("export", sample.path, "--run", str(sample.finished)).out.splitlines(True)
    assert cli("import", tmp_path / "copy", stdin="".join(lines[:3])).code == 0
    other = json.loads(lines[1])
    other["event_id"] = str(uuid.uuid4())  # seq 2, a different event
    mixed = [*lines[:1], json.dumps(other) + "\n", *lines[2:]]
    result = cli("import", tmp_path / "copy", stdin="".join(mixed))
    assert result.code == 2
    assert_one_line_error(result)
    assert "line 2: seq 2" in result.err and "already taken" in result.err
    with segmentlog.open(tmp_path / "copy", read_only=True) as log:
        assert log.last_seq(sample.finished) == 3  # seqs 4 and 5 were not written


def test_export_carries_the_key_and_import_reads_it_back(cli: Cli, tmp_path: Path) -> None:
    run = uuid.uuid4()
    envs = [
        segmentlog.Envelope(
            segmentlog.new_event_id(),
            n,
            run,
            None,
            segmentlog.TextDelta(run_id=run, delta=str(n)),
            datetime.now(UTC),
            key=None if n == 2 else f"k{n}",
        )
        for n in (1, 2, 3)
    ]
    with segmentlog.open(tmp_path / "log") as log:
        log.import_envelopes(envs)
    exported = cli("export", tmp_path / "log")
    rows = _lines(exported.out)
    assert [r.get("key") for r in rows] == ["k1", None, "k3"]
    assert "key" not in rows[1]  # omitted, not null, when the event had none
    assert cli("import", tmp_path / "copy", stdin=exported.out).code == 0
    with segmentlog.open(tmp_path / "copy", read_only=True) as log:
        assert [e.key for e in log.list_after(run)] == ["k1", None, "k3"]
    assert cli("export", tmp_path / "copy").out == exported.out


def test_import_refuses_a_gap(cli: Cli, sample: SampleLog, tmp_path: Path) -> None:
    lines = cli("export", sample.path, "--run", str(sample.finished)).out.splitlines()
    gapped = "\n".join(lines[:2] + lines[3:]) + "\n"  # seq 3 missing
    result = cli("import", tmp_path / "copy", stdin=gapped)
    assert result.code == 2
    assert_one_line_error(result)
    assert "jump from 2 to 4" in result.err


def test_import_of_a_malformed_line_names_the_line(
    cli: Cli, sample: SampleLog, tmp_path: Path
) -> None:
    lines = cli("export", sample.path, "--run", str(sample.finished)).out.splitlines()
    broken = "\n".join([*lines[:2], '{"seq": "nope"}']) + "\n"
    result = cli("import", tmp_path / "copy", stdin=broken)
    assert result.code == 2
    assert_one_line_error(result)
    assert "line 3" in result.err


def test_read_commands_never_create_a_directory(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    rid = str(uuid.uuid4())
    for args in (
        ("runs", missing),
        ("tail", missing, rid),
        ("tail", missing, rid, "--follow"),
        ("verify", missing),
        ("export", missing),
        ("recover", missing),
    ):
        result = cli(*args)
        assert result.code == 2, args
        assert_one_line_error(result)
        assert not missing.exists(), args
