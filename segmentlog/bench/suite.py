"""The suite: which groups of workloads exist, in the order they run.

Strategy and invariants
- Each group is defined where its kind of work lives: ``groups_append`` (non-durable and
  durable appends, new runs, keyed appends), ``groups_read`` (replay, seek, recovery),
  ``groups_process`` (several processes, asyncio, PostgreSQL). ``model`` holds the shapes,
  ``runner`` runs them interleaved.
- Rows that need an engine feature this build lacks (``features``) are defined all the same
  and reported as "not available in this build".
"""

from __future__ import annotations

import os

from .data import Sizes
from .groups_append import append_group, durable_group, keyed_group, new_runs_group
from .groups_process import aio_group, multiprocess_group, postgres_group
from .groups_read import recovery_group, replay_group, seek_group
from .model import Contender, Group, MemoryProbe, Workload
from .runner import run_suite, selected, steps
from .stores import store_envelopes

__all__ = [
    "Contender",
    "Group",
    "MemoryProbe",
    "Workload",
    "build_suite",
    "run_suite",
    "selected",
    "steps",
    "store_envelopes",
]


def build_suite(sizes: Sizes, fixtures: str, postgres_dsn: str | None = None) -> list[Group]:
    """Define every group for ``sizes``, with fixtures under the directory ``fixtures``.

    With ``postgres_dsn`` the PostgreSQL backend joins as a baseline of its own group.
    """
    groups = [
        append_group(sizes),
        new_runs_group(sizes),
        durable_group(sizes),
        multiprocess_group(sizes),
        keyed_group(sizes, os.path.join(fixtures, "keyed")),
        replay_group(sizes, os.path.join(fixtures, "replay")),
        seek_group(sizes, os.path.join(fixtures, "seek")),
        recovery_group(sizes, os.path.join(fixtures, "recovery")),
        aio_group(sizes),
    ]
    if postgres_dsn is not None:
        groups.append(postgres_group(sizes, os.path.join(fixtures, "postgres"), postgres_dsn))
    return groups
