"""Tests for segmentlog.bench: a tiny run of the harness and its building blocks.

No test asserts a time or a ratio's size: only that the numbers exist, are positive and are
reported where the JSON layout says.
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

import pytest

import segmentlog
import segmentlog.bench as bench
from segmentlog.bench import baselines, data, features, floors, multiproc, report, suite
from segmentlog.bench.timing import latency_sample, percentile
from segmentlog.events import RunStarted


def _positive(x: object) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def test_tiny_suite_writes_json_with_every_workload_and_positive_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.json"
    code = bench.main(["--tiny", "--quiet", "--dir", str(tmp_path / "work"), "--json", str(out)])
    assert code == 0
    doc = json.loads(out.read_text())

    assert doc["schema"] == report.SCHEMA_VERSION
    assert doc["suite"] == "tiny"
    assert doc["repeat"] == 1
    assert doc["machine"]["nproc"] >= 1
    assert doc["machine"]["disk_free_bytes"] > 0
    assert doc["python"]["version"].count(".") == 2
    for package in ("msgspec", "xxhash", "segmentlog", "sqlite"):
        assert doc["packages"][package]

    assert doc["build"]["path"] == ("native" if segmentlog.NATIVE else "pure-Python")
    assert doc["build"]["sync"] == segmentlog.PLATFORM_SYNC
    ids = {w["id"] for w in doc["workloads"]}
    assert {
        "append_never",
        "append_batch",
        "append_batch_existing",
        "append_interval",
        "new_runs_never",
        "new_runs_batch",
        "append_always",
        "replay",
        "recover_kill",
        "open_runs",
        "recovery_scan",
        "mp_single",
        "append_keyed",
        "keyed_first_after_reopen",
    } <= ids
    assert {f"append_group_t{t}" for t in data.SIZES["tiny"].thread_counts} <= ids
    assert {f"seek_{n}" for n in data.SIZES["tiny"].seek_sizes} <= ids
    for w in doc["workloads"]:
        assert w["unit"] in {"events/s", "runs/s", "GB/s", "us", "s"}
        if not w["available"]:
            assert w["unavailable"] and w["segmentlog"] is None
            continue
        assert len(w["segmentlog"]["samples"]) == 1
        assert all(_positive(v) for v in w["segmentlog"]["samples"])
        assert _positive(w["segmentlog"]["median"])
        assert w["baselines"]
        for b in w["baselines"]:
            assert all(_positive(v) for v in b["samples"]), (w["id"], b["id"])
            assert _positive(b["ratio"]), (w["id"], b["id"])
            assert b["met"] in (True, False, None)
            assert (b["met"] is None) == (b["target"] is None)

    replay = next(w for w in doc["workloads"] if w["id"] == "replay")
    tiny = data.SIZES["tiny"]
    assert replay["segmentlog"]["extra"]["events"] == tiny.replay_events
    for b in replay["baselines"]:
        assert b["extra"]["events"] == tiny.replay_events

    assert isinstance(doc["engine_log_records"], dict)

    probes = {p["id"]: p for p in doc["memory"]}
    assert {"replay_segmentlog", "replay_sqlite", "replay_raw", "open_runs_segmentlog"} <= set(
        probes
    )
    for p in probes.values():
        assert p["peak_rss_mib"] >= p["rss_before_mib"] > 0
    assert probes["open_runs_segmentlog"]["runs"] == tiny.open_runs

    for t in (1, 4):
        group = next(w for w in doc["workloads"] if w["id"] == f"append_group_t{t}")
        assert group["segmentlog"]["extra"]["appends_per_fsync"] >= 1
    assert "decode_floor" in {b["id"] for b in replay["baselines"]}

    table = capsys.readouterr().out
    assert "higher is better" in table
    assert ("native" if segmentlog.NATIVE else "pure-Python") + " path" in table
    assert f"fsync by {segmentlog.PLATFORM_SYNC}" in table
    assert "appends/fsync" in table
    assert "replay" in table and "sqlite3" in table and "raw floor" in table
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())


def test_only_selects_groups_and_workloads_by_id_or_prefix(tmp_path: Path) -> None:
    groups = suite.build_suite(data.SIZES["tiny"], str(tmp_path))
    picked = suite.selected(groups, ["seek", "append_never"])
    assert [g.id for g in picked] == ["append", "seek"]
    assert [w.id for w in picked[0].workloads] == ["append_never"]
    assert len(picked[1].workloads) == len(data.SIZES["tiny"].seek_sizes)


def test_unknown_only_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        bench.main(["--tiny", "--quiet", "--dir", str(tmp_path), "--only", "no_such_workload"])
    assert exc.value.code == 2


def test_plot_without_matplotlib_fails_before_running_with_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench, "plot_available", lambda: False)
    code = bench.main(["--tiny", "--dir", str(tmp_path), "--plot", str(tmp_path / "c.png")])
    assert code == 2
    assert "segmentlog[plot]" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()


def test_stamper_numbers_each_run_from_one_and_carries_the_session() -> None:
    runs = data.make_runs(3, 4, seed=9)
    stamped = list(data.Stamper().stamp_all(data.interleave(runs)))
    for run_id, events in runs.items():
        mine = [e for e in stamped if e.run_id == run_id]
        assert [e.seq for e in mine] == [1, 2, 3, 4]
        assert isinstance(events[0], RunStarted)
        assert {e.session_id for e in mine} == {events[0].session_id}
    assert len({e.event_id for e in stamped}) == len(stamped)


def test_long_run_generated_in_slices_has_one_start_and_one_end() -> None:
    run_id = uuid.uuid4()
    events = [
        e
        for start in range(0, 25, 10)
        for e in data.make_run_events(run_id, 25, 1, start=start, stop=start + 10)
    ]
    assert len(events) == 25
    assert type(events[0]).__name__ == "RunStarted"
    assert type(events[-1]).__name__ == "RunCompleted"
    assert sum(type(e).__name__ in {"RunStarted", "RunCompleted"} for e in events) == 2


def test_batches_hold_events_of_one_run_each() -> None:
    runs = data.make_runs(3, 25, seed=2)
    batches = data.batches_of(runs, 10)
    assert sum(len(b) for b in batches) == 75
    assert all(len({e.run_id for e in b}) == 1 for b in batches)
    assert max(len(b) for b in batches) == 10


def test_sqlite_and_raw_fixtures_read_back_every_envelope(tmp_path: Path) -> None:
    runs = data.run_ids(3, seed=1)
    sql_dir, raw_dir = tmp_path / "sql", tmp_path / "raw"
    sql_dir.mkdir()
    raw_dir.mkdir()
    sql = baselines.SqliteBuilder(str(sql_dir))
    raw = baselines.RawFileBuilder(str(raw_dir))
    for envelopes in suite.store_envelopes(runs, 120, seed=1, chunk=50):
        sql.add(envelopes)
        raw.add(envelopes)
    sql.close()
    raw.close()
    assert baselines.sqlite_replay(str(sql_dir), runs, 50).extra["events"] == 360
    assert baselines.raw_replay(str(raw_dir), 50).extra["events"] == 360
    seek = baselines.sqlite_seek(str(sql_dir), runs[0], 120, probes=5, limit=10, seed=0)
    assert _positive(seek.value)
    assert seek.extra["p99_us"] >= seek.value


def test_baseline_appenders_report_positive_throughput(tmp_path: Path) -> None:
    runs = data.make_runs(2, 10, seed=3)
    flat = data.interleave(runs)
    for n, measure in enumerate(
        [
            lambda d: baselines.sqlite_append(d, flat, "OFF"),
            lambda d: baselines.sqlite_append_batches(d, data.batches_of(runs, 5), "OFF"),
            lambda d: baselines.sqlite_append_threads(d, list(runs.values()), "NORMAL"),
            lambda d: baselines.raw_append(d, flat),
            lambda d: baselines.raw_append_durable(d, flat[:3]),
        ]
    ):
        d = tmp_path / str(n)
        d.mkdir()
        assert _positive(measure(str(d)).value)


def test_percentile_uses_nearest_rank() -> None:
    values = [float(x) for x in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 50) == 7.0
    sample = latency_sample([1000, 2000, 3000])
    assert sample.value == 2.0
    assert sample.extra["p99_us"] == 3.0


def test_format_value_picks_a_readable_unit() -> None:
    assert report.format_value(123_456, "events/s") == "123.5k ev/s"
    assert report.format_value(2_500_000, "events/s") == "2.50M ev/s"
    assert report.format_value(45.25, "us") == "45.2 us"
    assert report.format_value(0.25, "s") == "250 ms"
    assert report.format_value(None, "s") == "n/a"


def test_rows_needing_a_missing_engine_feature_say_so_instead_of_failing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(features, "has_multiprocess", lambda: False)
    monkeypatch.setattr(features, "has_keyed_append", lambda: False)
    groups = suite.selected(
        suite.build_suite(data.SIZES["tiny"], str(tmp_path / "fixtures")), ["multiprocess", "keyed"]
    )
    assert groups and all(w.unavailable for g in groups for w in g.workloads)
    assert suite.steps(groups, 3) == 0  # nothing is prepared or run
    (tmp_path / "fixtures").mkdir()
    results = suite.run_suite(groups, 1, str(tmp_path), str(tmp_path / "fixtures"), lambda s: None)
    rows = results["workloads"]
    assert {w["id"] for w in rows} >= {"mp_single", "mp_distinct_p2", "mp_shared_p2"}
    assert {w["id"] for w in rows} >= {"append_keyed", "keyed_first_after_reopen"}
    assert all(w["available"] is False for w in rows)
    doc = report.document(
        {**results, "engine_log_records": {}},
        suite="tiny",
        sizes={},
        repeat=1,
        workdir=str(tmp_path),
        elapsed=0.0,
    )
    table = report.format_table(doc)
    assert table.count("not available in this build") == len(rows) + 1
    assert "LogOptions has no multiprocess option" in table
    assert "SegmentLog.append takes no key" in table


def test_feature_detection_reads_the_public_api() -> None:
    import dataclasses
    import inspect

    fields = {f.name for f in dataclasses.fields(segmentlog.LogOptions)}
    assert features.has_multiprocess() == ("multiprocess" in fields)
    params = inspect.signature(segmentlog.SegmentLog.append).parameters
    assert features.has_keyed_append() == ("key" in params)
    assert (features.missing("multiprocess") is None) == features.has_multiprocess()
    assert (features.missing("key") is None) == features.has_keyed_append()


def test_plot_writes_a_png_chart(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the test extra installs matplotlib")
    chart = tmp_path / "chart.png"
    code = bench.main(
        ["--tiny", "--quiet", "--dir", str(tmp_path / "w"), "--only", "append_never", "seek",
         "--plot", str(chart)]
    )  # fmt: skip
    assert code == 0
    data_ = chart.read_bytes()
    assert data_.startswith(b"\x89PNG\r\n\x1a\n") and len(data_) > 1000
    assert data_[12:16] == b"IHDR"


def test_decode_floor_and_scan_count_every_record(tmp_path: Path) -> None:
    runs = data.run_ids(2, seed=5)
    raw = baselines.RawFileBuilder(str(tmp_path))
    for envelopes in suite.store_envelopes(runs, 130, seed=5, chunk=40):
        raw.add(envelopes)
    raw.close()
    assert floors.decode_floor(str(tmp_path), 50).extra["events"] == 260
    assert floors.decode_floor(str(tmp_path), 7).extra["events"] == 260  # fixarray pages too
    segment = floors.build_full_segment(str(tmp_path / "seg"), 64 * 1024)
    got = floors.scan_segment(segment)
    assert _positive(got.value) and got.extra["frames"] > 10
    assert got.extra["bytes"] <= 64 * 1024


def test_writer_processes_report_their_total_throughput(tmp_path: Path) -> None:
    per_process = [e for e in data.make_runs(2, 5, seed=6).values()]
    (tmp_path / "a").mkdir()
    sql = multiproc.sqlite_processes(str(tmp_path / "a"), per_process)
    assert _positive(sql.value) and sql.extra["processes"] == 2
    (tmp_path / "b").mkdir()
    one = multiproc.seg_processes(str(tmp_path / "b"), per_process[:1], "batch")
    assert _positive(one.value) and one.extra["appends_per_fsync"] >= 1
    with segmentlog.open(tmp_path / "b" / "log", read_only=True) as log:
        assert log.last_seq(per_process[0][0].run_id) == 5


def test_keyed_rows_run_once_append_takes_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the rows will do when the engine lands keys, with a stand-in that ignores them."""
    plain = segmentlog.SegmentLog.append
    seen: list[str] = []

    def append(
        self: segmentlog.SegmentLog[object], event: object, key: str | None = None
    ) -> object:
        if key is not None:
            seen.append(key)
        return plain(self, event)

    monkeypatch.setattr(segmentlog.SegmentLog, "append", append)
    assert features.missing("key") is None
    (tmp_path / "fixtures").mkdir()
    groups = suite.selected(
        suite.build_suite(data.SIZES["tiny"], str(tmp_path / "fixtures")), ["keyed"]
    )
    results = suite.run_suite(groups, 1, str(tmp_path), str(tmp_path / "fixtures"), lambda s: None)
    rows = {w["id"]: w for w in results["workloads"]}
    assert rows["append_keyed"]["available"] and _positive(
        rows["append_keyed"]["baselines"][0]["ratio"]
    )
    after = rows["keyed_first_after_reopen"]
    assert after["available"] and after["unit"] == "s"
    assert after["segmentlog"]["extra"]["seq"] == data.SIZES["tiny"].keyed_run_events + 1
    tiny = data.SIZES["tiny"]
    flat = tiny.append_runs * tiny.append_per_run
    assert len(seen) == tiny.keyed_run_events + flat + 1  # fixture, keyed row, after reopen
