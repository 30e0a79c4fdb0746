"""`segmentlog runs`: one row per run, --json, and read-only behaviour."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import Cli, SampleLog, assert_one_line_error


def test_runs_table_has_one_row_per_run_with_state(cli: Cli, sample: SampleLog) -> None:
    result = cli("runs", sample.path)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split() == [
        "RUN_ID",
        "EVENTS",
        "FIRST",
        "LAST",
        "BYTES",
        "SEGS",
        "SESSION",
        "STATE",
        "AGE",
    ]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {str(sample.finished), str(sample.open_run)}
    fin = rows[str(sample.finished)]
    assert fin[1:4] == ["5", "1", "5"]
    assert fin[6] == str(sample.sessions[sample.finished])
    assert fin[7] == "finished"
    assert fin[8].endswith("s") or fin[8].endswith("m")
    assert rows[str(sample.open_run)][1:4] == ["3", "1", "3"]
    assert rows[str(sample.open_run)][7] == "open"


def test_runs_json_is_an_array_with_the_documented_keys(cli: Cli, sample: SampleLog) -> None:
    result = cli("runs", sample.path, "--json")
    assert result.code == 0, result.err
    runs = json.loads(result.out)
    assert [r["run_id"] for r in runs] == sorted([str(sample.finished), str(sample.open_run)])
    for r in runs:
        assert set(r) == {
            "run_id",
            "events",
            "first_seq",
            "last_seq",
            "bytes",
            "segments",
            "session_id",
            "terminal",
        }
        assert r["bytes"] > 0 and r["segments"] == 1 and r["first_seq"] == 1
    by_id = {r["run_id"]: r for r in runs}
    assert by_id[str(sample.finished)]["terminal"] is True
    assert by_id[str(sample.finished)]["events"] == 5
    assert by_id[str(sample.open_run)]["terminal"] is False
    assert by_id[str(sample.open_run)]["session_id"] == str(sample.sessions[sample.open_run])


def test_runs_of_an_empty_log_prints_only_the_header(cli: Cli, tmp_path: Path) -> None:
    import segmentlog

    segmentlog.open(tmp_path / "log").close()
    result = cli("runs", tmp_path / "log", "--json")
    assert result.code == 0 and json.loads(result.out) == []


def test_runs_on_a_missing_directory_is_a_usage_error_and_creates_nothing(
    cli: Cli, tmp_path: Path
) -> None:
    result = cli("runs", tmp_path / "nope")
    assert result.code == 2
    assert_one_line_error(result)
    assert "does not exist" in result.err
    assert not (tmp_path / "nope").exists()


def test_runs_on_a_foreign_directory_is_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    result = cli("runs", tmp_path)
    assert result.code == 2
    assert_one_line_error(result)
    assert "not a segmentlog directory" in result.err
