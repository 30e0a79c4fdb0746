"""Fixtures for the CLI tests: the real console script, run in a subprocess, and sample logs."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import segmentlog
from segmentlog import RunCompleted, RunStarted, TextDelta

#: The console script installed next to the interpreter running the tests.
SCRIPT = Path(sys.executable).with_name("segmentlog")


@dataclass
class Result:
    code: int
    out: str
    err: str


Cli = Callable[..., Result]


def run_cli(*args: str | Path, stdin: str | None = None, cwd: Path | None = None) -> Result:
    """Run ``segmentlog ARGS`` and return its exit code, stdout and stderr."""
    assert SCRIPT.exists(), f"console script missing at {SCRIPT}; pip install -e ."
    proc = subprocess.run(
        [str(SCRIPT), *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli() -> Cli:
    return run_cli


@dataclass
class SampleLog:
    path: Path
    finished: uuid.UUID  # RunStarted, 3 TextDelta, RunCompleted (seqs 1..5)
    open_run: uuid.UUID  # RunStarted, 2 TextDelta (seqs 1..3)
    sessions: dict[uuid.UUID, uuid.UUID]


def make_sample(path: Path, **options: Any) -> SampleLog:
    finished, open_run = sorted([uuid.uuid4(), uuid.uuid4()])
    sessions = {finished: uuid.uuid4(), open_run: uuid.uuid4()}
    with segmentlog.open(path, **options) as log:
        for rid, deltas in ((finished, 3), (open_run, 2)):
            log.append(RunStarted(run_id=rid, session_id=sessions[rid], provider="p", model="m"))
            for i in range(deltas):
                log.append(TextDelta(run_id=rid, delta=f"chunk {i}"))
        log.append(RunCompleted(run_id=finished, finish_reason="stop", iterations=1))
    return SampleLog(path, finished, open_run, sessions)


@pytest.fixture
def sample(tmp_path: Path) -> SampleLog:
    return make_sample(tmp_path / "log")


def assert_one_line_error(result: Result) -> None:
    """A user mistake: one line on stderr, no traceback."""
    assert "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "error:" in lines[0]
