"""`segmentlog verify` (read-only check) and `segmentlog recover` (repair)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import segmentlog
from segmentlog import TextDelta

from .conftest import Cli, SampleLog, assert_one_line_error, make_sample


def _segments(path: Path, run_id: uuid.UUID) -> list[Path]:
    return sorted((path / "runs" / str(run_id)).glob("*.seg"))


def test_verify_of_a_clean_log_exits_0(cli: Cli, sample: SampleLog) -> None:
    result = cli("verify", sample.path)
    assert result.code == 0, result.out + result.err
    assert "no damage" in result.out


def test_verify_reports_a_flipped_byte_with_file_offset_and_seqs(cli: Cli, tmp_path: Path) -> None:
    sample = make_sample(tmp_path / "log", segment_bytes=4096)
    with segmentlog.open(sample.path, segment_bytes=4096) as log:
        for i in range(80):
            log.append(TextDelta(run_id=sample.open_run, delta="y" * 100 + str(i)))
    first = _segments(sample.path, sample.open_run)[0]
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.write_bytes(bytes(data))

    result = cli("verify", sample.path)
    assert result.code == 1
    assert str(first) in result.out
    assert "offset" in result.out and "seqs" in result.out
    assert "damage found" in result.out

    only_other = cli("verify", sample.path, "--run", str(sample.finished))
    assert only_other.code == 0, only_other.out


def test_verify_progress_always_draws_a_bar_on_stderr(cli: Cli, sample: SampleLog) -> None:
    result = cli("verify", sample.path, "--progress", "always")
    assert result.code == 0
    assert "verify:" in result.err and "2/2" in result.err and "100%" in result.err
    assert result.out.strip() == "ok: 2 run(s) checked, no damage found"  # stdout stays clean
    quiet = cli("verify", sample.path)
    assert quiet.err == ""


def test_verify_of_an_unknown_run_is_a_usage_error(cli: Cli, sample: SampleLog) -> None:
    result = cli("verify", sample.path, "--run", str(uuid.uuid4()))
    assert result.code == 2
    assert_one_line_error(result)


def test_recover_truncates_a_torn_tail_and_reports_it(cli: Cli, sample: SampleLog) -> None:
    seg = _segments(sample.path, sample.open_run)[-1]
    with seg.open("ab") as f:
        f.write(b"\x00garbage from a crashed writer")
    result = cli("recover", sample.path)
    assert result.code == 0, result.err
    assert str(seg) in result.out
    assert "repair" in result.out
    assert cli("verify", sample.path).code == 0
    assert cli("recover", sample.path).out.strip() == "ok: nothing to repair"


def test_recover_reports_the_dropped_seq_range(cli: Cli, tmp_path: Path) -> None:
    sample = make_sample(tmp_path / "log")
    seg = _segments(sample.path, sample.finished)[-1]
    data = seg.read_bytes()
    seg.write_bytes(data[:-20])  # tear the last record (seq 5)
    result = cli("recover", sample.path)
    assert result.code == 0, result.err
    assert "seq 5" in result.out
    with segmentlog.open(sample.path, read_only=True) as log:
        assert log.last_seq(sample.finished) == 4


def test_recover_refuses_while_a_writer_holds_the_lock(cli: Cli, sample: SampleLog) -> None:
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import segmentlog, sys\n"
            f"log = segmentlog.open({str(sample.path)!r})\n"
            "print('ready', flush=True)\n"
            "sys.stdin.read()\n"
            "log.close()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        result = cli("recover", sample.path)
        assert result.code == 3
        assert_one_line_error(result)
        assert "another process" in result.err
        # Reading beside the writer is fine.
        assert cli("verify", sample.path).code == 0
    finally:
        writer.communicate("", timeout=30)
