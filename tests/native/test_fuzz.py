"""A bounded fuzz run of the compiled walker against the pure one (fuzz_walker.py, atheris).

SEGMENTLOG_FUZZ_SECONDS sets how long it fuzzes (default 20). A finding (a difference between
the paths, or a crash) fails the test and leaves the input under the test's tmp_path.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.native_slow
def test_fuzzing_the_compiled_walker_finds_nothing(tmp_path: Path) -> None:
    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip("atheris is installed (from wheels) on Linux x86-64 only")
    # Required, not skipped when missing: the test extra installs it on this platform.
    import atheris  # noqa: F401

    seconds = int(os.environ.get("SEGMENTLOG_FUZZ_SECONDS", "20"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.native.fuzz_walker",
            f"-max_total_time={seconds}",
            f"-artifact_prefix={tmp_path}/",
            "-timeout=30",
            "-rss_limit_mb=4096",
            "-print_final_stats=1",
            str(corpus),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=seconds + 180,
    )
    findings = sorted(p.name for p in tmp_path.iterdir() if p.name != "corpus")
    assert result.returncode == 0 and not findings, (findings, result.stderr[-6000:])
    assert "Done " in result.stderr, result.stderr[-3000:]
