"""The ``engine_bug`` marker: failing tests of engine bugs in files the fault suite does not own.

A test marked ``@pytest.mark.engine_bug`` reproduces a bug reported to the engine's owner
(each says which, in its docstring). It fails until the bug is fixed, so it is left out of
the default run, never silently: the run's header names how many were deselected and how to
run them, ``-m engine_bug`` (or ``SEGMENTLOG_ENGINE_BUGS=1``). Once the bug is fixed, drop the
marker and the test joins the default run.
"""

from __future__ import annotations

import os

import pytest

MARKER = "engine_bug"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}: reproduces a reported engine bug; deselected unless -m {MARKER} or "
        "SEGMENTLOG_ENGINE_BUGS=1",
    )


def _wanted(config: pytest.Config) -> bool:
    return MARKER in (config.getoption("markexpr") or "") or (
        os.environ.get("SEGMENTLOG_ENGINE_BUGS") == "1"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _wanted(config):
        return
    bugs = [item for item in items if item.get_closest_marker(MARKER)]
    if bugs:
        config.hook.pytest_deselected(items=bugs)
        items[:] = [item for item in items if not item.get_closest_marker(MARKER)]
        config.stash[_DESELECTED] = len(bugs)


_DESELECTED = pytest.StashKey[int]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    count = terminalreporter.config.stash.get(_DESELECTED, 0)
    if count:
        terminalreporter.write_line(
            f"{count} engine_bug test(s) deselected: known engine bugs, reported; "
            f"run them with -m {MARKER}",
            yellow=True,
        )
