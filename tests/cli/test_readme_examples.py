"""The README's examples (usage, CLI, asyncio API, subscribe) run as written.

Every ```python and ```sh block under the headings below is run, in document order, in a
fresh temporary directory per section: python blocks with this interpreter, sh blocks with
bash (``set -euo pipefail``) and the console script first on PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEADINGS = ("Using it", "Command line", "asyncio API", "Live subscribe")
DOCUMENTS = ("README.md",)

_FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```\s*$", re.M | re.S)


def section(text: str, heading: str) -> str:
    """The text under the heading (level 2 or 3) up to the next heading of that level or
    higher; empty if there is no such heading."""
    match = re.search(rf"^(#{{2,3}})\s+{re.escape(heading)}\s*$", text, re.M)
    if match is None:
        return ""
    rest = text[match.end() :]
    end = re.search(rf"^#{{1,{len(match.group(1))}}}\s", rest, re.M)
    return rest[: end.start()] if end else rest


def code_blocks(text: str) -> list[tuple[str, str]]:
    return [(lang, body) for lang, body in _FENCE.findall(text) if lang in ("python", "sh")]


def _run(lang: str, body: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if lang == "python":
        cmd = [sys.executable, "-c", body]
    else:
        cmd = ["bash", "-c", "set -euo pipefail\n" + body]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("heading", HEADINGS)
@pytest.mark.parametrize("document", DOCUMENTS)
def test_readme_examples_run(document: str, heading: str, tmp_path: Path) -> None:
    path = ROOT / document
    assert path.exists(), f"{document} is missing"
    blocks = code_blocks(section(path.read_text(), heading))
    assert any(lang == "python" for lang, _ in blocks), (
        f"{document} has no ```python example under a '{heading}' heading"
    )
    if any(lang == "sh" for lang, _ in blocks) and shutil.which("jq") is None:
        pytest.fail("the shell examples pipe into jq; install jq to run them")
    for lang, body in blocks:
        result = _run(lang, body, tmp_path)
        assert result.returncode == 0, (
            f"{document} '{heading}' {lang} block failed ({result.returncode}):\n{body}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
