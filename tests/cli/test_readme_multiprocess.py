"""The README's "Many processes, one log" example runs as written, as a script.

Its ``multiprocessing.Pool`` uses the ``spawn`` start method, whose workers import the
script's ``__main__`` module: so the block is written to a file and run with this
interpreter (``python -c`` has no module the workers could import), in a fresh directory.
The log it leaves behind is then checked from here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import segmentlog
from segmentlog import RunCompleted, RunStarted, TextDelta

from .test_readme_examples import ROOT, code_blocks, section

HEADING = "Many processes, one log"


def test_readme_multiprocess_example_runs(tmp_path: Path) -> None:
    text = section((ROOT / "README.md").read_text(), HEADING)
    blocks = [body for lang, body in code_blocks(text) if lang == "python"]
    assert len(blocks) == 1, f"expected one python example under '{HEADING}'"
    assert "multiprocess=True" in blocks[0] and "Pool(" in blocks[0]
    script = tmp_path / "example.py"
    script.write_text(blocks[0])
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"

    with segmentlog.open(tmp_path / "agent-log-mp", read_only=True) as log:
        (run_id,) = log.runs()
        events = log.list_after(run_id, 0, 1000)
    assert [e.seq for e in events] == list(range(1, 103))
    assert isinstance(events[0].event, RunStarted) and isinstance(events[-1].event, RunCompleted)
    chunks = sorted(int(e.event.delta.split()[1]) for e in events[1:-1])
    assert chunks == list(range(100))
    assert all(isinstance(e.event, TextDelta) for e in events[1:-1])
