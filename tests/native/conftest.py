"""Shared set-up of the native tests: name the compiled module under test in the report header.

These tests need ``segmentlog._native``: a test install that did not build it fails them
(twins.py imports it whatever ``SEGMENTLOG_PURE`` says) rather than skipping them.
"""

from __future__ import annotations

import importlib

import pytest


def pytest_report_header(config: pytest.Config) -> str:
    try:
        module = importlib.import_module("segmentlog._native")
    except ImportError as exc:
        return f"segmentlog._native: NOT BUILT ({exc}); the native tests will fail"
    fmt = importlib.import_module("segmentlog.format")
    return f"segmentlog._native: {module.__file__} (format.NATIVE={fmt.NATIVE})"
