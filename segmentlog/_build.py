"""What ``segmentlog --version`` and the bench header say about this build.

Two facts beside the version decide how fast a log can be: which code path runs
(``segmentlog.NATIVE``: the compiled extension, or pure Python) and how an fsync is made
durable here (``segmentlog.PLATFORM_SYNC``: ``fdatasync``, ``F_FULLFSYNC`` or ``fsync``).
"""

from __future__ import annotations

from . import __version__
from ._fs import PLATFORM_SYNC
from .format import NATIVE

__all__ = ["runtime_facts", "version_text"]


def runtime_facts() -> dict[str, str]:
    """``{"version": ..., "path": "native" | "pure-Python", "sync": PLATFORM_SYNC}``."""
    return {
        "version": __version__,
        "path": "native" if NATIVE else "pure-Python",
        "sync": PLATFORM_SYNC,
    }


def version_text() -> str:
    """One line: ``segmentlog 0.1.0 (pure-Python path; fsync by fdatasync)``."""
    facts = runtime_facts()
    return f"segmentlog {facts['version']} ({facts['path']} path; fsync by {facts['sync']})"
