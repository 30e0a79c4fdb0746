"""The run table of an open log: one ``Run`` per id, recovered on first touch, kept fresh.

Strategy and invariants
- A ``Run`` object is created on the first mention of its id and recovered from its files
  (``recovery``) on its first touch, under its commit lock; opening a log touches no run.
- Before a read, a run is brought up to date with what other processes did: a read-only
  log follows the files (``reader.follow``); a ``multiprocess=True`` writer compares the run's
  shared state record (``Run.refresh``). An exclusive writer is the only writer: its runs are
  always current.
- A batch over several runs takes their commit locks in run-id order, so two such batches
  never deadlock, and validates every event (and decides every key) before any run is
  written. It is atomic per run, not across runs.
- A batch's keys are looked up before anything is written; between processes, under each
  run's lock in turn (never nested), so the decision is made on current views.
- Reads go through ``reader.read_page`` on a snapshot taken under the run's view lock. A
  read that overlapped the run's deletion (its ``generation`` moved) is read again, so the
  page is one incarnation's and a vanished file is never reported as damage.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from .context import RunContext
from .durability import Request
from .errors import CorruptionError, NotFoundError
from .events import Envelope
from .layout import Layout
from .options import FsyncPolicy, LogOptions
from .prepare import Work
from .reader import fingerprint, follow, read_page
from .recovery import RecoveredRun, recover_run
from .repair import RecoveryReport
from .run import Run
from .segment import Segment
from .store import held_envelopes

__all__ = ["RunTable"]

E = TypeVar("E")

#: Reads of one page before giving up on a run deleted and re-created faster than that.
_READ_ATTEMPTS = 16


class RunTable(Generic[E]):
    """The runs of one open log. ``ctx`` is set once the log has built it."""

    def __init__(self, layout: Layout, options: LogOptions) -> None:
        self.layout = layout
        self.options = options
        self.ctx: RunContext[E]
        self.runs: dict[uuid.UUID, Run[E]] = {}
        self._lock = threading.Lock()
        #: Every repair recovery made (or, read-only, would make), and how many runs it saw.
        self.reports: list[RecoveryReport] = []
        self.recovered = 0

    def get(self, run_id: uuid.UUID) -> Run[E]:
        """The run's state object, recovered on first touch."""
        run = self.runs.get(run_id)
        if run is None:
            with self._lock:
                run = self.runs.get(run_id)
                if run is None:
                    run = self.runs[run_id] = Run(self.ctx, run_id)
        if not run.loaded:
            with run.commit_lock:
                if not run.loaded:
                    run.load()
                    if self.options.read_only:
                        run.fingerprint = (
                            fingerprint(self.ctx.fs, run.dir) if run.segments else None
                        )
        return run

    def fresh(self, run_id: uuid.UUID) -> Run[E]:
        """The run, with what other processes appended taken in."""
        run = self.get(run_id)
        if self.options.read_only:
            follow(self.ctx.fs, run, self.ctx.boot, self.options.max_record_bytes)
        elif self.ctx.locks is not None:
            run.refresh()
        return run

    def recover(self, run: Run[E]) -> RecoveredRun | None:
        """Recover the run's files; None when it has no directory (a new run)."""
        fs = self.ctx.fs
        if not fs.is_dir(run.dir):
            return None
        recovered = recover_run(
            fs,
            self.layout,
            run.id,
            mode=self.options.recovery,
            max_record_bytes=self.options.max_record_bytes,
            index_interval=self.options.index_interval_bytes,
            writable=not self.options.read_only,
            durable=self.options.fsync is not FsyncPolicy.NEVER,
        )
        self.recovered += 1
        self.reports.extend(recovered.reports)
        return recovered

    def read(self, run: Run[E], after: int, limit: int) -> list[Envelope[E]]:
        """The run's envelopes after ``after``, at most ``limit`` (``NotFoundError`` if none).

        A snapshot names segment files by path. If the run is deleted (and perhaps created
        again) while the page is read, those paths may be gone or name the new incarnation's
        files: the run's ``generation`` changes, and the page is read again from a fresh
        snapshot rather than reported as damage or mixed across incarnations.
        """
        for _ in range(_READ_ATTEMPTS):
            generation, visible, plan = run.snapshot(after + 1, after + limit)
            try:
                page = self._read_plan(run, after, limit, visible, plan)
            except (CorruptionError, NotFoundError):
                if not visible or not self._replaced(run, generation):
                    raise
                continue
            if not self._replaced(run, generation, failed=False):
                return page
        raise NotFoundError(run.id)  # deleted and created again faster than it can be read

    def read_locked(self, run: Run[E], after: int, limit: int) -> list[Envelope[E]]:
        """``read`` while the caller holds the run's commit lock (and, between processes,
        its run lock): nothing can delete the run meanwhile."""
        _, visible, plan = run.snapshot(after + 1, after + limit)
        return self._read_plan(run, after, limit, visible, plan)

    def _read_plan(
        self,
        run: Run[E],
        after: int,
        limit: int,
        visible: int,
        plan: list[tuple[Segment, int, int]],
    ) -> list[Envelope[E]]:
        if not visible:
            raise NotFoundError(run.id)
        if not plan:
            return []
        last = min(visible, after + limit)
        max_record, codec, fs = self.options.max_record_bytes, self.ctx.codec, self.ctx.fs
        return read_page(fs, codec, run.id, plan, after + 1, last, max_record, run.view_lock)

    def _replaced(self, run: Run[E], generation: int, failed: bool = True) -> bool:
        """Whether the run's view was replaced since ``generation`` was read. After a failed
        read, other processes' changes are taken in first (a deletion there shows here)."""
        if run.generation != generation:
            return True
        if self.options.read_only:
            if failed:
                follow(self.ctx.fs, run, self.ctx.boot, self.options.max_record_bytes)
        elif self.ctx.locks is not None:
            run.refresh()
        return run.generation != generation

    def import_envelopes(self, envelopes: Iterable[Envelope[E]]) -> int:
        """Append envelopes as they are, in groups of one run (at most 1000 at a time)."""
        count = 0
        pending: list[Envelope[E]] = []
        for env in envelopes:
            if not isinstance(env, Envelope):
                raise TypeError(f"import_envelopes takes Envelopes, got {type(env).__name__}")
            if self.ctx.codec.run_id_of(env.event) != env.run_id:
                raise ValueError(f"envelope seq {env.seq}: event.run_id differs from run_id")
            if pending and (pending[-1].run_id != env.run_id or len(pending) >= 1000):
                count += self._import_group(pending)
                pending = []
            pending.append(env)
        if pending:
            count += self._import_group(pending)
        return count

    def _import_group(self, envelopes: list[Envelope[E]]) -> int:
        self.get(envelopes[0].run_id).append([e.event for e in envelopes], envelopes)
        return len(envelopes)

    def append_across(
        self,
        events: list[E],
        groups: dict[uuid.UUID, list[int]],
        keys: list[str | None] | None,
    ) -> list[Envelope[E]]:
        """A batch over several runs (``groups``: run id -> positions in ``events``)."""
        runs = {rid: self.get(rid) for rid in groups}
        run_of = self.ctx.codec.run_id_of
        with contextlib.ExitStack() as stack:
            for rid in sorted(runs):
                stack.enter_context(runs[rid].commit_lock)
            if keys is not None:
                stored = [
                    None if k is None else self._stored(runs[run_of(e)], k)
                    for e, k in zip(events, keys, strict=True)
                ]
                held = held_envelopes(events, keys, stored)
                if held is not None:
                    return held
            requests: dict[uuid.UUID, Request[list[Envelope[E]]]] = {}
            for rid, positions in groups.items():
                run = runs[rid]
                part = None if keys is None else [keys[i] for i in positions]
                req: Request[list[Envelope[E]]] = Request(
                    Work([events[i] for i in positions], None, part)
                )
                run.prepare(req, run.last_seq + 1, 0, bytearray())  # validate; writes nothing
                requests[rid] = req
            for rid in sorted(runs):
                runs[rid].commit_locked(requests[rid])
        out: list[Any] = [None] * len(events)
        for rid, positions in groups.items():
            for i, env in zip(positions, requests[rid].outcome(), strict=True):
                out[i] = env
        return out

    def _stored(self, run: Run[E], key: str) -> Envelope[E] | None:
        """What ``run`` holds under ``key``; between processes, looked up under the run's
        lock, against a view brought up to date (one run at a time: never nested)."""
        if self.ctx.locks is None:
            return run.stored(key)
        with run.hold():
            return run.stored(key)
