"""Hypothesis properties of the EventStore contract, run against every backend.

The ``backend`` fixture is function-scoped, so one store serves every example of a test; each
example uses fresh ``uuid4`` run ids and therefore cannot see the runs of earlier examples.
Events are drawn for a placeholder run and re-addressed to the example's runs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segmentlog import Envelope, InvalidEventError, NotFoundError
from tests.conformance.events_factory import st_event

PLACEHOLDER_RUN = uuid.UUID(int=0)
RUNS_PER_EXAMPLE = 3

_settings = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_run_index = st.integers(min_value=0, max_value=RUNS_PER_EXAMPLE - 1)
_addressed_event = st.tuples(_run_index, st_event(PLACEHOLDER_RUN))

_op = st.one_of(
    st.tuples(st.just("append"), _addressed_event),
    st.tuples(st.just("batch"), st.lists(_addressed_event, max_size=5)),
    st.tuples(
        st.just("bad_batch"),
        st.lists(_addressed_event, max_size=3),
        st.sampled_from([None, "event", 7, {"run_id": 0}]),
        st.integers(min_value=0, max_value=3),
    ),
    st.tuples(
        st.just("list"),
        _run_index,
        st.none() | st.integers(min_value=0, max_value=30),
        st.integers(min_value=1, max_value=30),
    ),
    st.tuples(st.just("reopen")),
)


@dataclass
class Model:
    """What the store must hold: every run's envelopes in seq order, and its current session."""

    envelopes: dict[uuid.UUID, list[Envelope[Any]]] = field(default_factory=dict)
    sessions: dict[uuid.UUID, uuid.UUID | None] = field(default_factory=dict)

    def expect(self, event: Any, envelope: Envelope[Any]) -> None:
        run = self.envelopes.setdefault(event.run_id, [])
        session = getattr(event, "session_id", None) if event.starts_session else None
        if session is not None:
            self.sessions[event.run_id] = session
        assert envelope.event == event
        assert envelope.run_id == event.run_id
        assert envelope.seq == len(run) + 1
        assert envelope.session_id == self.sessions.get(event.run_id)
        assert envelope.event_id.version == 7
        run.append(envelope)

    def check_page(self, store: Any, run_id: uuid.UUID, after: int | None, limit: int) -> None:
        stored = self.envelopes.get(run_id)
        if stored is None:
            with pytest.raises(NotFoundError):
                store.list_after(run_id, after, limit)
            return
        start = after or 0
        assert store.list_after(run_id, after, limit) == stored[start : start + limit]


def _address(runs: list[uuid.UUID], pairs: list[tuple[int, Any]]) -> list[Any]:
    return [msgspec.structs.replace(event, run_id=runs[i]) for i, event in pairs]


@_settings
@given(ops=st.lists(_op, max_size=25))
def test_any_interleaving_of_appends_matches_the_model(backend: Any, ops: list[Any]) -> None:
    store = backend.open()
    runs = [uuid.uuid4() for _ in range(RUNS_PER_EXAMPLE)]
    model = Model()
    for op in ops:
        kind = op[0]
        if kind == "append":
            (event,) = _address(runs, [op[1]])
            model.expect(event, store.append(event))
        elif kind == "batch":
            events = _address(runs, op[1])
            out = store.append_batch(events)
            assert len(out) == len(events)
            for event, envelope in zip(events, out, strict=True):
                model.expect(event, envelope)
        elif kind == "bad_batch":
            events = _address(runs, op[1])
            events.insert(min(op[3], len(events)), op[2])
            with pytest.raises(InvalidEventError):
                store.append_batch(events)
        elif kind == "list":
            model.check_page(store, runs[op[1]], op[2], op[3])
        else:
            store = backend.reopen()

    for run_id in runs:
        stored = model.envelopes.get(run_id, [])
        n = len(stored)
        if n:
            assert [e.seq for e in store.list_after(run_id, None, n + 1)] == list(range(1, n + 1))
        for after in range(n + 2):
            for limit in (1, 2, n + 1):
                model.check_page(store, run_id, after, limit)
        model.check_page(store, run_id, None, 1000)


@_settings
@given(
    events=st.lists(st_event(PLACEHOLDER_RUN), min_size=1, max_size=8),
    reopen=st.booleans(),
)
def test_any_events_round_trip_exactly(backend: Any, events: list[Any], reopen: bool) -> None:
    store = backend.open()
    run_id = uuid.uuid4()
    events = [msgspec.structs.replace(e, run_id=run_id) for e in events]
    written = [store.append(events[0]), *store.append_batch(events[1:])]
    if reopen:
        store = backend.reopen()
    read = store.list_after(run_id)
    assert read == written
    assert [e.event for e in read] == events
    assert [type(e.event) for e in read] == [type(e) for e in events]
