"""Build the optional compiled core, ``segmentlog._native``. The metadata is in pyproject.toml.

The extension is optional. When there is no C compiler, no ``xxhash.h`` (Debian:
``apt-get install libxxhash-dev``), or the build fails for any other reason, the install still
succeeds: a warning is printed (pip shows it with ``-v``) and segmentlog runs the pure-Python
twins of the same functions. ``python -c "import segmentlog.format as f; print(f.NATIVE)"``
tells which path an install has.

Environment:
- ``SEGMENTLOG_REQUIRE_NATIVE=1``: a failed build fails the install (the test install sets it,
  so the suite never tests the pure path by accident).
- ``SEGMENTLOG_NO_NATIVE=1``: do not try to build it.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCE = "segmentlog/_native.c"
# Compiled in as _native.source_sha256: tests/native/test_build.py tells a stale build by it.
DIGEST = hashlib.sha256((Path(__file__).parent / SOURCE).read_bytes()).hexdigest()
NATIVE = Extension(
    "segmentlog._native",
    sources=[SOURCE],
    define_macros=[("SEGMENTLOG_NATIVE_SOURCE_SHA256", f'"{DIGEST}"')],
)

HINT = (
    "segmentlog: the compiled core (segmentlog._native) was not built; the pure-Python path "
    "will be used. It needs a C compiler, Python's headers and xxhash.h (Debian: "
    "apt-get install gcc python3-dev libxxhash-dev)."
)


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


class OptionalBuildExt(build_ext):
    """``build_ext`` that warns, instead of failing the install, when the extension won't build."""

    def run(self) -> None:
        if _flag("SEGMENTLOG_NO_NATIVE"):
            self._warn("SEGMENTLOG_NO_NATIVE is set")
            return
        try:
            super().run()
        except Exception as exc:  # no compiler at all, or none set up for this platform
            self._failed(exc)

    def build_extension(self, ext: Extension) -> None:
        if self.compiler.compiler_type == "msvc":
            ext.extra_compile_args = ["/O2"]
        else:
            ext.extra_compile_args = ["-O3", "-Wall", "-Wextra"]
        try:
            super().build_extension(ext)
        except Exception as exc:  # the compiler failed: most often, xxhash.h is missing
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        if _flag("SEGMENTLOG_REQUIRE_NATIVE"):
            raise exc
        self._warn(f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _warn(reason: str) -> None:
        bar = "*" * 78
        print(f"\n{bar}\nWARNING: {HINT}\nReason: {reason}\n{bar}\n", file=sys.stderr)


cmdclass: dict[str, Any] = {"build_ext": OptionalBuildExt}
setup(ext_modules=[NATIVE], cmdclass=cmdclass)
