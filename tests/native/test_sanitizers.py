"""The compiled core under AddressSanitizer and UndefinedBehaviorSanitizer.

One test builds ``_native.c`` with gcc's ``-fsanitize=address,undefined`` (warnings as errors)
into a temporary directory, then runs the native differential tests and the codec tests in a
subprocess that imports that build as ``segmentlog._native`` (libasan preloaded into the
interpreter, ``PYTHONMALLOC=malloc`` so Python's own buffers, ``out`` among them, are ASan's
allocations). Any report, or a failed test, fails this one. It takes about a minute;
SEGMENTLOG_NATIVE_EXAMPLES (default 150 here) sets the Hypothesis examples per test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Loads the sanitized build as segmentlog._native before anything imports segmentlog, checks
#: that the sanitizers are really mapped in, then runs pytest with the remaining arguments.
LAUNCHER = """
import importlib.util, sys
path = sys.argv[1]
spec = importlib.util.spec_from_file_location("segmentlog._native", path)
module = importlib.util.module_from_spec(spec)
sys.modules["segmentlog._native"] = module
spec.loader.exec_module(module)
import segmentlog.format as fmt
assert fmt._native is module and fmt.NATIVE, "the sanitized build is not the one in use"
maps = open("/proc/self/maps").read()
assert "libasan" in maps and "libubsan" in maps, "the sanitizer runtimes are not loaded"
import pytest
sys.exit(pytest.main(sys.argv[2:]))
"""


def _gcc_runtime(gcc: str, name: str) -> Path:
    out = subprocess.run(
        [gcc, f"-print-file-name={name}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return Path(out).resolve()


@pytest.mark.native_slow
def test_native_tests_pass_under_asan_and_ubsan(tmp_path: Path) -> None:
    gcc = shutil.which("gcc")
    assert gcc is not None, "gcc is needed for the sanitizer build (scripts/test.sh installs it)"
    libasan = _gcc_runtime(gcc, "libasan.so")
    assert libasan.is_file(), f"no libasan next to {gcc}"

    so = tmp_path / f"_native{sysconfig.get_config_var('EXT_SUFFIX')}"
    build = subprocess.run(
        [
            gcc, "-shared", "-fPIC", "-g", "-O1", "-Wall", "-Wextra", "-Werror",
            "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
            "-fno-sanitize-recover=undefined",
            f"-I{sysconfig.get_paths()['include']}",
            str(ROOT / "segmentlog" / "_native.c"), "-o", str(so),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr

    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTLOG_")}
    env.update(
        LD_PRELOAD=str(libasan),
        PYTHONMALLOC="malloc",
        ASAN_OPTIONS="detect_leaks=0:strict_string_checks=1",
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
        SEGMENTLOG_NATIVE_EXAMPLES=os.environ.get("SEGMENTLOG_NATIVE_EXAMPLES", "150"),
    )
    run = subprocess.run(
        [
            sys.executable, "-c", LAUNCHER, str(so),
            # -s: a report that ends the process mid-test must reach stderr, not pytest's
            # capture of fd 2, which would die with it unread.
            "-q", "-s", "-x", "-p", "no:cacheprovider", "-m", "not native_slow",
            "--ignore=tests/native/test_build.py",
            "tests/native", "tests/unit/test_format.py", "tests/property/test_format_props.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    output = run.stdout + run.stderr
    for report in ("AddressSanitizer", "runtime error:", "LeakSanitizer"):
        at = output.find(report)
        assert at == -1, output[max(0, at - 200) : at + 6000]
    assert run.returncode == 0, output[-8000:]
    assert " passed" in run.stdout, output[-3000:]
