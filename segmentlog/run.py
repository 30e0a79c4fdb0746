"""One run: prepare -> commit -> roll -> sync -> release. The only code that writes a run's files.

Strategy and invariants
- A ``Run`` holds the run's segments, writer descriptors, next seq, session, tail state and
  sync state. Every append of the run is prepared (seqs assigned, frames encoded and
  validated, no I/O) and committed (written, made durable per policy, published) under its
  ``commit_lock``, so frames never interleave and seqs are never reused.
- Under ``always`` and ``batch`` appends go through the run's ``GroupCommit``: the leader
  commits everything queued with one write and one fdatasync. Under ``never`` and
  ``interval`` the caller commits its own append directly.
- ``view_lock`` guards what readers see (segments, ``visible_seq``); a commit takes it only to
  publish, so a reader never waits for an fsync. ``visible_seq`` only ever covers
  acknowledged appends: a failed append is never read or delivered.
- A write or fsync error makes the log fail stop (``LogState``): the unacknowledged frames are
  cut off, every request of that commit gets ``LogFailedError``, and so does every later one.
- New runs and segments cost only the system calls the policy needs: no fsync at creation;
  the first durable commit fsyncs the segment, then the run directory and ``runs/`` once.
- Read-only logs never write; ``reader.follow`` updates their runs from the files.
"""

from __future__ import annotations

import threading
import uuid
from bisect import bisect_right
from collections.abc import Callable
from typing import Generic, ParamSpec, TypeVar

from .context import RunContext
from .durability import GroupCommit, Request
from .errors import AppendError
from .events import Envelope
from .keys import KeyIndex, decide
from .prepare import Prepared, Work, check_import, index_points, make_envelopes, prepare
from .runfiles import RunFiles
from .segment import Segment
from .shared import SharedRun
from .statefile import StateFile

__all__ = ["Run"]

E = TypeVar("E")
P = ParamSpec("P")
R = TypeVar("R")


class Run(RunFiles, SharedRun, Generic[E]):
    """In-memory state and the write path of one run. See the module docstring."""

    def __init__(self, ctx: RunContext[E], run_id: uuid.UUID) -> None:
        self.ctx = ctx
        self.id = run_id
        self.dir = ctx.layout.run_dir(run_id)
        self.view_lock = threading.Lock()
        self.commit_lock = threading.Lock()
        self.committer: GroupCommit[list[Envelope[E]]] | None = (
            GroupCommit() if ctx.durable_ack else None
        )
        self.segments: list[Segment] = []
        self.bases: list[int] = []
        #: Last seq written; last seq acknowledged (what readers see).
        self.last_seq = 0
        self.visible_seq = 0
        self.session_id: uuid.UUID | None = None
        self.terminal = False
        #: The last record's payload, decoded lazily for session id and terminal state (so
        #: recovery never needs the event type).
        self.tail_payload: bytes | None = None
        self.loaded = False
        #: Directory entries created without an fsync: the run's segments, and the run
        #: directory itself in ``runs/``.
        self.run_dir_pending = False
        self.runs_dir_pending = False
        #: Read-only: identifies the run's incarnation (the first frame's checksum).
        self.fingerprint: bytes | None = None
        #: The shared state record, and the incarnation this view belongs to.
        #: The run's idempotency keys, built on first use (``keys.py``).
        self.keys: KeyIndex | None = None
        self.state_file = StateFile(
            ctx.fs, self.dir, writable=ctx.writable, boot=ctx.boot, on_map=self._mapped
        )
        self.epoch = 0
        #: Bumped whenever the view is replaced wholesale (recovered again, or deleted), so
        #: a reader can tell that the files its snapshot named may now be another
        #: incarnation's.
        self.generation = 0
        if ctx.locks is not None:
            self.run_lock = ctx.locks.for_run(run_id)
        self.appends = 0
        self.bytes_written = 0

    def _mapped(self) -> None:
        """The state record was mapped: it holds a descriptor, so the LRU counts this run."""
        self.ctx.touch(self)

    # --- loading ---------------------------------------------------------------------------

    def adopt(
        self,
        segments: list[Segment],
        last_seq: int,
        last_payload: bytes | None,
        writable: bool,
        cap: int | None = None,
    ) -> None:
        """Take the state recovery established (visible up to ``cap``, when given). Holds
        ``commit_lock``."""
        self.keys = None  # built again from the recovered frames when next needed
        with self.view_lock:
            self.segments = segments
            self.bases = [s.base_seq for s in segments]
            self.last_seq = last_seq
            self.visible_seq = last_seq if cap is None else min(cap, last_seq)
            self.tail_payload = last_payload
            self.session_id = None
            self.terminal = False
            self.generation += 1
        # Which policy the last writer had is not recorded, so directory entries it made may
        # not be durable: the first sync covers them too.
        self.run_dir_pending = self.runs_dir_pending = writable and bool(self.segments)
        self.loaded = True

    def reset(self) -> None:
        """Forget everything: the run was deleted. Holds ``commit_lock``."""
        self.keys = None
        with self.view_lock:
            self.segments = []
            self.bases = []
            self.last_seq = self.visible_seq = 0
            self.session_id = None
            self.terminal = False
            self.tail_payload = None
            self.generation += 1
        self.run_dir_pending = self.runs_dir_pending = self.state_pending = False

    def load_tail(self) -> None:
        """Decode the recovered last record (once) for the run's session id and state.

        Holds ``view_lock``.
        """
        payload = self.tail_payload
        if payload is not None:
            env = self.ctx.codec.decode(payload)
            self.session_id = env.session_id
            self.terminal = env.is_terminal
            self.tail_payload = None

    # --- appending -------------------------------------------------------------------------

    def append(
        self,
        events: list[E],
        imported: list[Envelope[E]] | None = None,
        keys: list[str | None] | None = None,
        expected_seq: int | None = None,
    ) -> list[Envelope[E]]:
        """Append events (or import envelopes) atomically; returns their envelopes (or the
        ones the run holds for their keys)."""
        work = Work(events, imported, keys, expected_seq)
        if self.committer is not None:
            return self.committer.submit(work, self._commit_group)
        req: Request[list[Envelope[E]]] = Request(work)
        with self.commit_lock:
            self._commit_requests([req])
        return req.outcome()

    def append_one(self, event: E, key: str | None = None) -> Envelope[E]:
        """``append([event], keys=[key])``: with no group commit (the most common call), the
        same steps as a group of one without the group's bookkeeping."""
        if self.committer is not None:
            return self.append([event], None, None if key is None else [key])[0]
        with self.commit_lock:
            return self._holding(self._commit_one, event, key)

    def _commit_one(self, event: E, key: str | None) -> Envelope[E]:
        """Commit one event as ``_commit_all`` commits a group of one. Holds ``commit_lock``
        (and, between processes, the run's lock)."""
        if key is not None and key in self.key_index().seqs:  # a retry: the group path decides
            req: Request[list[Envelope[E]]] = Request(Work([event], None, [key], None))
            self._commit_all([req])
            return req.outcome()[0]
        ctx = self.ctx
        req = Request(None)
        buf = bytearray()
        seg = self.active_segment() if self.segments else None
        if self.tail_payload is not None:
            with self.view_lock:
                self.load_tail()
        keys: list[str | None] | None = None if key is None else [key]
        envs = make_envelopes(ctx.codec, self.id, self.session_id, [event], self.last_seq + 1, keys)
        prepared = prepare(ctx.encoder, ctx.validator, req, envs, seg.synced if seg else 0, buf)
        if seg is None:
            seg = self._create()
        elif not seg.room_for(len(buf), self.ctx.segment_bytes):
            seg = self._roll()
            buf = bytearray()
            prepared = prepare(ctx.encoder, ctx.validator, req, envs, seg.synced, buf)
        self._commit_prepared(seg, buf, [prepared])
        return envs[0]

    def commit_locked(self, req: Request[list[Envelope[E]]]) -> None:
        """Commit one request while the caller holds ``commit_lock`` (multi-run batches)."""
        self._commit_requests([req])

    def _commit_group(self, group: list[Request[list[Envelope[E]]]]) -> None:
        with self.commit_lock:
            self._commit_requests(group)

    def _commit_requests(self, requests: list[Request[list[Envelope[E]]]]) -> None:
        """Prepare and commit requests in order. Holds ``commit_lock``.

        A run's first segment is created only once a request proved valid, so a refused
        first event leaves no run behind.
        """
        self._holding(self._commit_all, requests)

    def _holding(self, commit: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """``commit(*args)`` once the log is known to take appends, holding the run against
        other processes meanwhile (``multiprocess=True``). Holds ``commit_lock``."""
        self.ctx.state.check_writable()
        if self.ctx.locks is None:
            return commit(*args, **kwargs)
        self.enter()
        try:
            return commit(*args, **kwargs)
        finally:
            self.leave()

    def _commit_all(self, requests: list[Request[list[Envelope[E]]]]) -> None:
        seg = self.active_segment() if self.segments else None
        pending: list[Prepared[E]] = []
        keyed: dict[str, tuple[Prepared[E], Envelope[E]]] = {}  # keys this group appends
        buf = bytearray()
        seq = self.last_seq
        for req in requests:
            start = len(buf)
            try:
                work: Work[E] = req.work
                if work.keys is not None or work.expected_seq is not None:
                    held = self._decide(work, seq, keyed)
                    if held is not None:
                        self._hold(req, held, keyed)
                        continue
                prepared = self.prepare(req, seq + 1, seg.synced if seg else 0, buf)
            except (AppendError, ValueError, TypeError) as exc:
                req.error = exc
                continue
            if work.keys is not None:
                for env in prepared.envelopes:
                    if env.key is not None:
                        keyed[env.key] = (prepared, env)
            if seg is None:
                seg = self._create()
            elif not seg.room_for(len(buf), self.ctx.segment_bytes):
                if pending:
                    self._commit_prepared(seg, bytes(buf[:start]), pending)
                    pending = []
                seg = self._roll()
                buf = bytearray()
                prepared = self.prepare(req, seq + 1, seg.synced, buf)
            pending.append(prepared)
            seq = prepared.envelopes[-1].seq
        if pending:
            assert seg is not None
            self._commit_prepared(seg, buf, pending)

    def _decide(
        self, work: Work[E], last_seq: int, keyed: dict[str, tuple[Prepared[E], Envelope[E]]]
    ) -> list[Envelope[E]] | None:
        """The stored envelopes a conditional append returns, or None to append it."""

        keys = work.keys
        if keys is not None and work.expected_seq is None:
            held = self.key_index().seqs
            if not any(k in held or k in keyed for k in keys if k is not None):
                return None  # every key is new: the common case, decided at once

        def stored(key: str) -> Envelope[E] | None:
            queued = keyed.get(key)
            return queued[1] if queued is not None else self.stored(key)

        return decide(self.id, work.events, keys, work.expected_seq, last_seq, stored)

    @staticmethod
    def _hold(
        req: Request[list[Envelope[E]]],
        held: list[Envelope[E]],
        keyed: dict[str, tuple[Prepared[E], Envelope[E]]],
    ) -> None:
        """Answer a retry with what is held: at once, or when the group's commit lands."""
        for env in held:
            queued = keyed.get(env.key) if env.key is not None else None
            if queued is not None and queued[1] is env:
                queued[0].aliases.append((req, held))
                return
        req.result = held

    def key_index(self) -> KeyIndex:
        """The run's key index, built from its frames on first use. Holds ``commit_lock``."""
        if self.keys is None:
            with self.view_lock:
                plan = [(s, s.size, s.last_seq) for s in self.segments]
            self.keys = KeyIndex.build(self.ctx.fs, plan, self.ctx.options.max_record_bytes)
        return self.keys

    def stored(self, key: str) -> Envelope[E] | None:
        """The envelope this run holds under ``key``, if any (builds the key index once)."""
        seq = self.key_index().seqs.get(key)
        if seq is None or seq > self.visible_seq:
            return None
        found: list[Envelope[E]] = self.ctx.read(self, seq - 1, 1)
        return found[0] if found and found[0].key == key else None

    def prepare(
        self, req: Request[list[Envelope[E]]], first_seq: int, mark: int, buf: bytearray
    ) -> Prepared[E]:
        """Assign seqs from ``first_seq`` and encode frames into ``buf`` (no I/O).

        Raises ``InvalidEventError``/``RecordTooLargeError``/``ValueError`` for bad input,
        leaving ``buf`` as it was.
        """
        work: Work[E] = req.work
        ctx = self.ctx
        if work.imported is not None:
            envelopes = check_import(self.id, work.imported, first_seq)
        else:
            if self.tail_payload is not None:
                with self.view_lock:
                    self.load_tail()
            session = self.session_id
            envelopes = make_envelopes(
                ctx.codec, self.id, session, work.events, first_seq, work.keys
            )
        return prepare(ctx.encoder, ctx.validator, req, envelopes, mark, buf)

    def _commit_prepared(
        self, seg: Segment, buf: bytes | bytearray, prepared: list[Prepared[E]]
    ) -> None:
        """Write prepared frames to ``seg``, sync per policy, publish. Holds ``commit_lock``."""
        ctx = self.ctx
        fs = ctx.fs
        start = seg.size
        last = prepared[-1].envelopes[-1].seq
        try:
            seg.append(fs, buf, last, ctx.prealloc_limit)
        except OSError as exc:
            raise ctx.state.fail(exc) from exc
        if start + len(buf) - seg.index.last_offset >= seg.index.interval:
            seg.write_index(fs, seg.index.extend(index_points(prepared, start)))
        previous = self.last_seq
        self.last_seq = last
        if ctx.durable_ack:
            try:
                seg.sync(fs, ctx.timer)
                self._sync_dirs()
            except OSError as exc:
                self._rollback(seg, start, previous)
                raise ctx.state.fail(exc) from exc
        tail = prepared[-1].envelopes[-1]
        with self.view_lock:
            self.visible_seq = last
            self.session_id = tail.session_id
            self.terminal = bool(getattr(type(tail.event), "terminal", False))
            self.tail_payload = None
        if ctx.keep_state:
            self.publish_state()
        count = 0
        held = self.keys.seqs if self.keys is not None else None
        for p in prepared:
            p.request.result = p.envelopes
            for alias, envs in p.aliases:
                alias.result = envs
            count += len(p.envelopes)
            if held is not None:
                for env in p.envelopes:
                    if env.key is not None:
                        held[env.key] = env.seq
        self.appends += count
        self.bytes_written += len(buf)
        ctx.notify()

    # --- reading ---------------------------------------------------------------------------

    def snapshot(self, first: int, last: int) -> tuple[int, int, list[tuple[Segment, int, int]]]:
        """``(generation, visible_seq, [(segment, size, last_seq)])`` covering seqs
        ``first..last``."""
        with self.view_lock:
            generation = self.generation
            visible = self.visible_seq
            last = min(last, visible)
            plan: list[tuple[Segment, int, int]] = []
            if first <= last:
                i = max(0, bisect_right(self.bases, first) - 1)
                for seg in self.segments[i:]:
                    plan.append((seg, seg.size, min(seg.last_seq, visible)))
                    if seg.last_seq >= last:
                        break
        return generation, visible, plan
