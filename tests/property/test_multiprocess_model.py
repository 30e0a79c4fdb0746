"""A stateful Hypothesis model of several writer processes on one log: a dict of lists.

Three long-lived worker processes (``tests/multiproc.py``, spawn context, driven over pipes)
each hold a ``multiprocess=True`` log of the same directory. Every rule picks a worker and
makes it append (one event, or a batch over several runs), read a page, ask ``last_seq``,
delete a run, close and reopen its log, or look through a fresh ``read_only`` log; each
answer is compared with the model, ``dict[run_id, list[Envelope]]`` plus each run's session:

- seqs are per run, gapless and unique whichever process appended;
- an envelope's ``session_id`` is that of the run's last ``RunStarted``, whichever process
  appended that;
- every process reads exactly what any process appended (its own cached view is never
  stale), and an append after another process deleted the run starts it again at seq 1.

Small segments (4 KiB) and events of up to 3 KiB make rolls happen within a few steps. The
teardown reads every run through every worker. ``fsync="never"`` keeps the model fast; a
smaller run repeats it under ``"batch"``. ``SEGMENTLOG_SOAK=1`` runs many more examples.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

import segmentlog
from segmentlog import Envelope, RunCompleted, RunStarted, TextDelta
from tests.multiproc import RemoteError, Worker, read_all, workers

SOAK = os.environ.get("SEGMENTLOG_SOAK") == "1"
WORKERS = 3
PLACEHOLDER_RUN = uuid.UUID(int=0)
OPTIONS: dict[str, Any] = {
    "multiprocess": True,
    "segment_bytes": 4096,
    "index_interval_bytes": 256,
    "max_record_bytes": 16_384,
}


def _scratch_root() -> str | None:
    """A RAM file system when there is one: the model creates and deletes many files."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _filler(size: int) -> TextDelta:
    return TextDelta(run_id=PLACEHOLDER_RUN, delta="d" * size)


#: Events for a run (``run_id`` is replaced by the rule): text, sessions, terminal events, and
#: deltas of up to 3 KiB that roll the 4 KiB segments.
EVENTS = st.one_of(
    st.builds(TextDelta, run_id=st.just(PLACEHOLDER_RUN), delta=st.text(max_size=30)),
    st.builds(
        RunStarted,
        run_id=st.just(PLACEHOLDER_RUN),
        session_id=st.uuids(),
        provider=st.just("acme"),
        model=st.just("m-1"),
    ),
    st.builds(
        RunCompleted,
        run_id=st.just(PLACEHOLDER_RUN),
        finish_reason=st.just("stop"),
        iterations=st.integers(0, 10),
    ),
    st.integers(0, 600).map(_filler),
    st.integers(600, 3000).map(_filler),
)
WORKER = st.integers(0, WORKERS - 1)


def read_only_look(state: dict[str, Any], path: str, run_id: uuid.UUID) -> list[Envelope[Any]]:
    """In a worker: the run as a fresh read-only log of that process sees it."""
    with segmentlog.open(path, read_only=True) as log:
        return read_all(log, run_id)


class MultiprocessLogModel(RuleBasedStateMachine):
    """Several processes' logs against ``dict[run_id, list[Envelope]]`` and sessions."""

    runs = Bundle("runs")

    def __init__(self, pool: list[Worker], fsync: str) -> None:
        super().__init__()
        self.pool = pool
        self.fsync = fsync
        self.root = tempfile.mkdtemp(prefix="segmentlog-mp-model-", dir=_scratch_root())
        self.path = os.path.join(self.root, "log")
        self.model: dict[uuid.UUID, list[Envelope[Any]]] = {}
        self.sessions: dict[uuid.UUID, uuid.UUID] = {}
        for w in pool:
            self._open(w)

    def _open(self, w: Worker) -> None:
        w.call("open", self.path, fsync=self.fsync, **OPTIONS)

    def teardown(self) -> None:
        try:
            for w in self.pool:
                for run_id, expected in self.model.items():
                    assert w.call("read_all", run_id) == expected, f"{w.name} disagrees"
        finally:
            for w in self.pool:
                w.call("close")
            shutil.rmtree(self.root, ignore_errors=True)

    # --- runs ---------------------------------------------------------------------------

    # Run ids are drawn (not uuid4()), so that Hypothesis replays an example exactly.
    @initialize(target=runs, run_id=st.uuids())
    def first_run(self, run_id: uuid.UUID) -> uuid.UUID:
        return run_id

    @rule(target=runs, run_id=st.uuids())
    def new_run(self, run_id: uuid.UUID) -> uuid.UUID:
        return run_id

    # --- appends ------------------------------------------------------------------------

    def _expect(self, event: Any, envelope: Envelope[Any]) -> None:
        if event.starts_session:
            self.sessions[event.run_id] = event.session_id
        run = self.model.setdefault(event.run_id, [])
        assert envelope.event == event
        assert envelope.run_id == event.run_id
        assert envelope.seq == len(run) + 1, "seqs not gapless and unique across processes"
        assert envelope.session_id == self.sessions.get(event.run_id), "session not carried"
        run.append(envelope)

    @rule(w=WORKER, run_id=runs, event=EVENTS)
    def append(self, w: int, run_id: uuid.UUID, event: Any) -> None:
        event = msgspec.structs.replace(event, run_id=run_id)
        self._expect(event, self.pool[w].call("append", event))

    @rule(w=WORKER, pairs=st.lists(st.tuples(runs, EVENTS), min_size=1, max_size=6))
    def append_batch(self, w: int, pairs: list[tuple[uuid.UUID, Any]]) -> None:
        events = [msgspec.structs.replace(e, run_id=r) for r, e in pairs]
        out = self.pool[w].call("append_batch", events)
        assert len(out) == len(events)
        for event, envelope in zip(events, out, strict=True):
            self._expect(event, envelope)

    # --- reads --------------------------------------------------------------------------

    @rule(w=WORKER, run_id=runs, after=st.integers(0, 30), limit=st.integers(1, 40))
    def list_after(self, w: int, run_id: uuid.UUID, after: int, limit: int) -> None:
        expected = self.model.get(run_id, [])
        try:
            got = self.pool[w].call("list_after", run_id, after, limit)
        except RemoteError as exc:
            assert exc.kind == "NotFoundError" and not expected, exc
            return
        assert expected, "a run with no events was found"
        assert got == expected[after : after + limit]

    @rule(w=WORKER, run_id=runs)
    def last_seq(self, w: int, run_id: uuid.UUID) -> None:
        assert self.pool[w].call("last_seq", run_id) == (len(self.model.get(run_id, [])) or None)

    @rule(w=WORKER, run_id=runs)
    def read_only(self, w: int, run_id: uuid.UUID) -> None:
        got = self.pool[w].call("run", read_only_look, self.path, run_id)
        assert got == self.model.get(run_id, [])

    # --- deletes and reopening ----------------------------------------------------------

    @precondition(lambda self: bool(self.model))
    @rule(w=WORKER, data=st.data())
    def delete_run(self, w: int, data: st.DataObject) -> None:
        run_id = data.draw(st.sampled_from(sorted(self.model)))
        assert self.pool[w].call("delete_run", run_id) is True
        del self.model[run_id]
        self.sessions.pop(run_id, None)

    @rule(w=WORKER, run_id=runs)
    def delete_absent_or_present(self, w: int, run_id: uuid.UUID) -> None:
        assert self.pool[w].call("delete_run", run_id) == (run_id in self.model)
        self.model.pop(run_id, None)
        self.sessions.pop(run_id, None)

    @rule(w=WORKER)
    def reopen(self, w: int) -> None:
        self.pool[w].call("close")
        self._open(self.pool[w])


@pytest.fixture(scope="module")
def pool() -> Iterator[list[Worker]]:
    with workers(WORKERS, "model") as started:
        yield started


@pytest.mark.parametrize(("fsync", "examples"), [("never", 150), ("batch", 30)])
def test_multiprocess_log_matches_the_model(pool: list[Worker], fsync: str, examples: int) -> None:
    run_state_machine_as_test(
        lambda: MultiprocessLogModel(pool, fsync),
        settings=settings(
            max_examples=examples * (10 if SOAK else 1),
            stateful_step_count=80 if SOAK else 40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
