"""The reference model that crash tests check a reopened log against, and how they open logs.

Strategy and invariants
- ``LogModel`` remembers, per run, every envelope the log acknowledged (in order), where each
  atomic unit (an ``append`` or an ``append_batch``) ends, and how many leading envelopes are
  known durable (acknowledged under ``always``/``batch``, or covered by a ``sync()``).
- ``check`` reads every run back through the public API and asserts the crash contract:
  each run is a gapless prefix of what was acknowledged (same seqs, same event ids, same
  events: no reordering, no foreign bytes), cut only at an atomic-unit boundary, and at least
  as long as what was durable (after a power loss) or everything acknowledged (after a process
  crash, which keeps the page cache). Afterwards the model becomes what survived.
- Runs that were deleted must stay deleted when the deletion was durable; otherwise they may
  come back only as a prefix of what they held.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import segmentlog
from segmentlog import Envelope, NotFoundError, RunCompleted, TextDelta
from segmentlog.format import (
    DEFAULT_MAX_RECORD_BYTES,
    SEGMENT_HEADER_SIZE,
    FramedRecord,
)
from segmentlog.frames import (
    read_frame,
)

from .faultfs import FaultFS

__all__ = [
    "LOG_DIR",
    "SMALL",
    "LogModel",
    "RunModel",
    "event",
    "frames_of",
    "fresh_fs",
    "open_log",
    "read_run",
    "run_dir",
    "same_envelope",
    "segment_files",
    "terminal",
]

#: Where the crash tests put the log inside a ``FaultFS``.
LOG_DIR = "/data/log"
#: Small segments and index intervals, so a few dozen appends roll segments and index often.
SMALL: dict[str, Any] = {"segment_bytes": 4096, "index_interval_bytes": 128}


def fresh_fs() -> FaultFS:
    """A FaultFS whose parent directory ``/data`` exists durably (the log's own dir does not)."""
    fs = FaultFS()
    fs.makedirs("/data")
    fs.sync_all()
    return fs


def open_log(fs: FaultFS, **options: Any) -> Any:
    """Open the log at ``LOG_DIR`` on ``fs`` with ``SMALL`` sizes unless overridden."""
    return segmentlog.open(LOG_DIR, fs=fs, **{**SMALL, **options})  # type: ignore[attr-defined]


def event(run_id: uuid.UUID, n: int, size: int = 40) -> TextDelta:
    """A ``TextDelta`` whose text says which append it was, padded to about ``size`` bytes."""
    text = f"#{n}:"
    return TextDelta(run_id=run_id, delta=(text + "x" * max(0, size - len(text))))


def terminal(run_id: uuid.UUID) -> RunCompleted:
    """A terminal event, for retention tests."""
    return RunCompleted(run_id=run_id, finish_reason="stop", iterations=1)


def read_run(log: Any, run_id: uuid.UUID, page: int = 7) -> list[Envelope[Any]]:
    """Every envelope of a run, read in small pages (so seeks through the index are used)."""
    out: list[Envelope[Any]] = []
    after: int | None = None
    while True:
        try:
            got = log.list_after(run_id, after_seq=after, limit=page)
        except NotFoundError:
            assert not out, f"run {run_id} vanished between pages"
            return out
        if not got:
            return out
        out.extend(got)
        after = got[-1].seq


def run_dir(run_id: uuid.UUID) -> str:
    """The directory of a run inside ``LOG_DIR``."""
    return f"{LOG_DIR}/runs/{run_id}"


def segment_files(fs: FaultFS, run_id: uuid.UUID, suffix: str = ".seg") -> list[str]:
    """Paths of a run's segment (or, with ``suffix=".idx"``, index) files, in seq order."""
    names = [n for n in fs.listdir(run_dir(run_id)) if n.endswith(suffix)]
    return [f"{run_dir(run_id)}/{n}" for n in sorted(names)]


def frames_of(data: bytes) -> list[FramedRecord]:
    """The frames of a segment's bytes that verify, from the header up to the first that fails."""
    out: list[FramedRecord] = []
    pos = SEGMENT_HEADER_SIZE
    while True:
        frame = read_frame(data, pos, DEFAULT_MAX_RECORD_BYTES)
        if not isinstance(frame, FramedRecord):
            return out
        out.append(frame)
        pos = frame.end


def same_envelope(a: Envelope[Any], b: Envelope[Any]) -> bool:
    """True when two envelopes are the same stored record."""
    return (
        a.seq == b.seq
        and a.event_id == b.event_id
        and a.run_id == b.run_id
        and a.event == b.event
        and a.session_id == b.session_id
    )


@dataclass
class RunModel:
    """What one run must and may contain."""

    acked: list[Envelope[Any]] = field(default_factory=list)
    #: Lengths of ``acked`` at which an atomic unit ends (0 included).
    boundaries: set[int] = field(default_factory=lambda: {0})
    #: Leading envelopes that must survive a power loss.
    durable: int = 0
    deleted: bool = False
    #: True when the deletion is known durable (the run must never come back).
    deletion_durable: bool = False
    #: A deletion is in flight: the run may be wholly absent, or else must be complete.
    may_vanish: bool = False


class LogModel:
    """Per-run expectations of a log under one fsync policy."""

    def __init__(self, durable_ack: bool) -> None:
        self.durable_ack = durable_ack
        self.runs: dict[uuid.UUID, RunModel] = {}
        #: Events of an append that was called but has not returned (per run).
        self.pending: dict[uuid.UUID, list[Any]] = {}

    def append(self, log: Any, ev: Any) -> Envelope[Any]:
        """``log.append(ev)``, recording it as in flight until it is acknowledged."""
        self.pending[ev.run_id] = [ev]
        env: Envelope[Any] = log.append(ev)
        self.acknowledged([env])
        return env

    def append_batch(self, log: Any, events: list[Any]) -> list[Envelope[Any]]:
        """``log.append_batch(events)`` (one run), recorded as in flight until acknowledged."""
        self.pending[events[0].run_id] = list(events)
        envs: list[Envelope[Any]] = log.append_batch(events)
        self.acknowledged(envs)
        return envs

    def run(self, run_id: uuid.UUID) -> RunModel:
        """The model of a run (created empty on first use)."""
        return self.runs.setdefault(run_id, RunModel())

    def acknowledged(self, envelopes: list[Envelope[Any]]) -> None:
        """One atomic unit (an append or a batch of one run) was acknowledged."""
        assert envelopes
        model = self.run(envelopes[0].run_id)
        assert not model.deleted, "the tests never append to a deleted run"
        expected = list(range(len(model.acked) + 1, len(model.acked) + len(envelopes) + 1))
        assert [e.seq for e in envelopes] == expected, "acknowledged seqs are not the next seqs"
        model.acked.extend(envelopes)
        model.boundaries.add(len(model.acked))
        self.pending.pop(envelopes[0].run_id, None)
        if self.durable_ack:
            model.durable = len(model.acked)

    def synced(self) -> None:
        """``log.sync()`` returned: everything acknowledged so far is durable."""
        for model in self.runs.values():
            model.durable = len(model.acked)

    def deleted(self, run_id: uuid.UUID, *, durable: bool) -> None:
        """``delete_run`` returned for ``run_id``."""
        model = self.run(run_id)
        model.deleted = True
        model.deletion_durable = model.deletion_durable or durable

    def deleting(self, run_id: uuid.UUID) -> None:
        """``delete_run`` (or ``retain``) was called for ``run_id`` and has not returned."""
        self.run(run_id).may_vanish = True

    def check(self, log: Any, *, power_lost: bool) -> None:
        """Assert the crash contract on a reopened ``log``; then adopt what survived."""
        listed = set(log.runs())
        foreign = listed - set(self.runs)
        assert not foreign, f"reopened log lists runs that were never appended: {foreign}"
        for run_id, model in self.runs.items():
            got = read_run(log, run_id)
            where = f"run {run_id}"
            if model.deleted and model.deletion_durable:
                assert not got, f"{where}: deleted durably, but {len(got)} events came back"
            pending = self.pending.pop(run_id, [])
            for i, env in enumerate(got):
                if i >= len(model.acked):
                    j = i - len(model.acked)
                    assert j < len(pending) and env.event == pending[j], (
                        f"{where}: seq {env.seq} was never appended (foreign or duplicate record)"
                    )
                    assert env.seq == i + 1, f"{where}: in-flight event got seq {env.seq}"
                    continue
                assert same_envelope(env, model.acked[i]), (
                    f"{where}: record {i} is seq {env.seq} {env.event!r}, expected "
                    f"seq {model.acked[i].seq} {model.acked[i].event!r}"
                )
            kept = len(got)
            if pending:
                model.boundaries.add(len(model.acked) + len(pending))
            if model.may_vanish and not model.deleted and kept == 0:
                model.deleted = True  # the in-flight deletion took effect
            elif not model.deleted:
                assert kept in model.boundaries, (
                    f"{where}: recovered {kept} events, which cuts an atomic batch "
                    f"(batch ends at {sorted(model.boundaries)})"
                )
                need = model.durable if power_lost else len(model.acked)
                assert kept >= need, (
                    f"{where}: lost acknowledged events: {kept} recovered, {need} required "
                    f"({'power loss' if power_lost else 'process crash'})"
                )
            if kept:
                assert run_id in listed, f"{where}: has {kept} events but runs() omits it"
            assert log.last_seq(run_id) == (kept or None), f"{where}: last_seq disagrees"
            model.acked = got
            model.boundaries = {b for b in model.boundaries if b <= kept} | {kept}
            if power_lost:
                model.durable = kept
            model.durable = min(model.durable, kept)
