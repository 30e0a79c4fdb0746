"""Fixtures shared by the read groups: stamped envelopes, stores built from them, copies.

Strategy and invariants
- ``store_envelopes`` yields the envelopes of whole runs in bounded chunks, stamped once, so
  a million-event store never sits in memory; ``build_stores`` writes each chunk into every
  contender's store (segmentlog, SQLite, the raw file) in turn.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from . import baselines as bl
from . import workloads as sl
from .data import Stamper, make_run_events
from .runner import fresh

__all__ = ["build_stores", "copy_into", "spawn_and_wait", "store_envelopes"]


def store_envelopes(
    runs: list[uuid.UUID], per_run: int, seed: int, chunk: int = 10_000
) -> Iterable[list[Any]]:
    """Stamped envelopes of ``runs`` runs, run after run, in chunks (bounded memory)."""
    stamper = Stamper()
    for n, run_id in enumerate(runs):
        for start in range(0, per_run, chunk):
            events = make_run_events(
                run_id, per_run, seed * 1_000_003 + n, start=start, stop=start + chunk
            )
            yield list(stamper.stamp_all(events))


def build_stores(base: str, chunks: Iterable[list[Any]], *, raw: bool = True) -> None:
    """Write ``chunks`` into a segmentlog log, a SQLite database and (``raw``) a raw file."""
    builders: list[sl.SegmentlogBuilder | bl.SqliteBuilder | bl.RawFileBuilder] = [
        sl.SegmentlogBuilder(fresh(os.path.join(base, "segmentlog"))),
        bl.SqliteBuilder(fresh(os.path.join(base, "sqlite"))),
    ]
    if raw:
        builders.append(bl.RawFileBuilder(fresh(os.path.join(base, "raw"))))
    for envelopes in chunks:
        for b in builders:
            b.add(envelopes)
    for b in builders:
        b.close()


def copy_into(src: str, dst: str) -> None:
    """Copy the contents of directory ``src`` into the existing directory ``dst``."""
    for name in os.listdir(src):
        s, d = os.path.join(src, name), os.path.join(dst, name)
        if os.path.isdir(s):
            shutil.copytree(s, d)
        else:
            shutil.copy2(s, d)


def spawn_and_wait(target: Callable[..., None], *args: Any) -> None:
    """Run ``target(*args)`` in a spawned child that must die by SIGKILL."""
    proc = multiprocessing.get_context("spawn").Process(target=target, args=args)
    proc.start()
    proc.join()
    if proc.exitcode != -9:
        raise RuntimeError(f"writer child should die by SIGKILL, exit code {proc.exitcode}")
