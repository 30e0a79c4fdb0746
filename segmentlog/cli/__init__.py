"""The ``segmentlog`` command line (also ``python -m segmentlog``).

Strategy and invariants
- One subcommand per job, one module per group of them: ``_read`` (``runs``, ``tail``),
  ``_repair`` (``verify``, ``recover``, ``quarantine list|purge``), ``_copy`` (``export``,
  ``import``, ``salvage-export``), ``_serve`` (``serve``); ``_main`` holds the parser and
  ``main``; ``_common`` the exit codes, argument types and output; ``bench`` hands every
  remaining argument to ``segmentlog.bench.main``. Tables go through ``segmentlog._table``,
  the one column formatter (shared with the bench report).
- Exit codes: 0 success, 1 damage found, 2 usage error (bad arguments, missing or foreign
  directory, malformed or unknown run id, input that does not fit the log), 3 any other
  failure (another writer holds the lock, I/O errors, a newer on-disk format).
- Every error is one line on stderr naming the command and what to do next; a user mistake
  never prints a traceback. ``SEGMENTLOG_DEBUG=1`` re-raises unexpected errors.
- Read commands (``runs``, ``tail``, ``verify``, ``export``, ``salvage-export``,
  ``quarantine list``, ``recover --dry-run``) open the log ``read_only`` or read its files
  directly, so they take no lock, write nothing and never create a directory; ``recover``
  and ``quarantine purge`` refuse a missing directory instead of creating one. Only
  ``import`` may create a log.
"""

from __future__ import annotations

from ._common import EXIT_DAMAGE, EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from ._main import main

__all__ = ["EXIT_DAMAGE", "EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "main"]
