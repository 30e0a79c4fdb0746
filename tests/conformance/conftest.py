"""The conformance suite runs every test against every backend.

A backend is a module ``tests/conformance/backend_<name>.py`` with a context manager
``make_backend(tmp_path)`` that yields a ``Backend``. Adding a backend means adding its module
and its name to ``BACKENDS``; the tests themselves never change.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

BACKENDS = ["memory", "segmentlog", pytest.param("postgres", marks=pytest.mark.postgres)]


class Backend(Protocol):
    """One store under test, over storage that outlives ``reopen``."""

    name: str
    #: True when ``reopen`` really closes and reopens (data must survive it).
    reopens: bool

    def open(self) -> Any:
        """Return the store (opening it the first time)."""
        ...

    def reopen(self) -> Any:
        """Close the current store and open a new one over the same storage."""
        ...

    def close(self) -> None:
        """Close the store and release its storage."""
        ...


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    module = importlib.import_module(f"tests.conformance.backend_{request.param}")
    with module.make_backend(tmp_path) as made:
        yield made


@pytest.fixture
def store(backend: Backend) -> Any:
    return backend.open()
