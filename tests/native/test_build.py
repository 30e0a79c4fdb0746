"""The install built the compiled core and segmentlog uses it; SEGMENTLOG_PURE=1 turns it off;
and a build without a working compiler still installs, with a warning."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import segmentlog
import segmentlog.format as fmt

from .twins import native

ROOT = Path(__file__).resolve().parents[2]


def _native_in_use(**env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "SEGMENTLOG_PURE"}
    code = "import segmentlog.format as f; print(f.NATIVE, f.xxh3_64.__module__)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.strip()


def test_the_test_install_uses_the_compiled_core() -> None:
    # A missing extension here is a failed build, not something to skip.
    assert _native_in_use() == "True segmentlog._native"
    assert Path(native.__file__).parent == Path(segmentlog.__file__).parent


def test_the_extension_was_built_from_the_source_beside_it() -> None:
    source = hashlib.sha256((ROOT / "segmentlog" / "_native.c").read_bytes()).hexdigest()
    assert native.source_sha256 == source, (
        "segmentlog._native is stale: rebuild it (pip install -e . or sh scripts/test.sh)"
    )


def test_segmentlog_pure_forces_the_pure_path() -> None:
    assert _native_in_use(SEGMENTLOG_PURE="1").startswith("False xxhash")
    assert _native_in_use(SEGMENTLOG_PURE="0") == "True segmentlog._native"


def test_this_process_dispatches_as_its_environment_says() -> None:
    pure = os.environ.get("SEGMENTLOG_PURE", "") not in ("", "0")
    assert fmt.NATIVE is not pure


def test_a_failed_build_still_installs_with_a_warning(tmp_path: Path) -> None:
    # A compiler that always fails stands for a missing gcc or xxhash.h.
    shutil.copy(ROOT / "setup.py", tmp_path)
    shutil.copytree(
        ROOT / "segmentlog",
        tmp_path / "segmentlog",
        ignore=shutil.ignore_patterns("*.so", "__pycache__"),
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copy(ROOT / "README.md", tmp_path)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTLOG_")}
    result = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=tmp_path,
        env={**environ, "CC": "false", "LDSHARED": "false"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING: segmentlog: the compiled core" in result.stderr
    assert not list((tmp_path / "segmentlog").glob("_native*.so"))
    # What was built there runs, on the pure path. (The editable install of this checkout
    # adds a finder that would find the checkout's extension: leave it out.)
    code = (
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]"
        "\nimport segmentlog.format as f; print(f.NATIVE, f.__file__)"
    )
    check = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert check.stdout.split() == ["False", str(tmp_path / "segmentlog" / "format.py")]
    required = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=tmp_path,
        env={**environ, "CC": "false", "LDSHARED": "false", "SEGMENTLOG_REQUIRE_NATIVE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert required.returncode != 0
