"""The package is clean under ``mypy --strict`` and ``ruff`` (configured in pyproject.toml).

These run the real tools (installed by the ``dev`` extra, which ``scripts/test.sh`` installs),
so a type error or lint finding fails the suite like any other regression.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_package_is_clean_under_mypy_strict() -> None:
    result = _run("mypy", "--strict", "segmentlog")
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_and_tests_are_clean_under_ruff() -> None:
    result = _run("ruff", "check", "segmentlog", "tests", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_ships_a_py_typed_marker() -> None:
    assert (ROOT / "segmentlog" / "py.typed").is_file()
