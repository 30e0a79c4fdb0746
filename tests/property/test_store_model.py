"""A stateful Hypothesis model of MemoryEventStore: a dict of lists of expected envelopes.

Every rule applies the same operation to the store and to the model and compares the results;
the invariants check the whole store (``runs``, ``last_seq``, full replays) after every step.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from segmentlog import Envelope, InvalidEventError, MemoryEventStore, NotFoundError
from tests.conformance.events_factory import st_event

PLACEHOLDER_RUN = uuid.UUID(int=0)


class MemoryStoreModel(RuleBasedStateMachine):
    """MemoryEventStore against ``dict[run_id, list[Envelope]]`` plus each run's session."""

    runs = Bundle("runs")

    def __init__(self) -> None:
        super().__init__()
        self.store: MemoryEventStore[Any] = MemoryEventStore()
        self.model: dict[uuid.UUID, list[Envelope[Any]]] = {}
        self.sessions: dict[uuid.UUID, uuid.UUID] = {}

    @initialize(target=runs)
    def first_run(self) -> uuid.UUID:
        return uuid.uuid4()

    @rule(target=runs)
    def new_run(self) -> uuid.UUID:
        return uuid.uuid4()

    def _expect(self, event: Any, envelope: Envelope[Any]) -> None:
        if event.starts_session:
            self.sessions[event.run_id] = event.session_id
        run = self.model.setdefault(event.run_id, [])
        assert envelope.event is event
        assert envelope.run_id == event.run_id
        assert envelope.seq == len(run) + 1
        assert envelope.session_id == self.sessions.get(event.run_id)
        run.append(envelope)

    @rule(run_id=runs, event=st_event(PLACEHOLDER_RUN))
    def append(self, run_id: uuid.UUID, event: Any) -> None:
        event = msgspec.structs.replace(event, run_id=run_id)
        self._expect(event, self.store.append(event))

    @rule(
        pairs=st.lists(st.tuples(runs, st_event(PLACEHOLDER_RUN)), max_size=6),
    )
    def append_batch(self, pairs: list[tuple[uuid.UUID, Any]]) -> None:
        events = [msgspec.structs.replace(e, run_id=r) for r, e in pairs]
        out = self.store.append_batch(events)
        assert len(out) == len(events)
        for event, envelope in zip(events, out, strict=True):
            self._expect(event, envelope)

    @rule(
        pairs=st.lists(st.tuples(runs, st_event(PLACEHOLDER_RUN)), max_size=4),
        bad=st.sampled_from([None, 0, "TextDelta", {"run_id": PLACEHOLDER_RUN}]),
        where=st.integers(min_value=0, max_value=4),
    )
    def refused_batch(self, pairs: list[tuple[uuid.UUID, Any]], bad: Any, where: int) -> None:
        events: list[Any] = [msgspec.structs.replace(e, run_id=r) for r, e in pairs]
        events.insert(min(where, len(events)), bad)
        with pytest.raises(InvalidEventError):
            self.store.append_batch(events)

    @rule(
        run_id=runs,
        after=st.none() | st.integers(min_value=0, max_value=40),
        limit=st.integers(min_value=1, max_value=40),
    )
    def list_after(self, run_id: uuid.UUID, after: int | None, limit: int) -> None:
        stored = self.model.get(run_id)
        if stored is None:
            with pytest.raises(NotFoundError) as info:
                self.store.list_after(run_id, after, limit)
            assert info.value.run_id == run_id
            return
        start = after or 0
        assert self.store.list_after(run_id, after, limit) == stored[start : start + limit]

    @rule(run_id=runs)
    def last_seq(self, run_id: uuid.UUID) -> None:
        stored = self.model.get(run_id)
        assert self.store.last_seq(run_id) == (len(stored) if stored else None)

    @invariant()
    def runs_are_the_runs_with_events(self) -> None:
        assert sorted(self.store.runs()) == sorted(self.model)

    @invariant()
    def every_run_replays_gaplessly_and_equal_to_the_model(self) -> None:
        for run_id, stored in self.model.items():
            replay = self.store.list_after(run_id, None, len(stored) + 1)
            assert replay == stored
            assert [e.seq for e in replay] == list(range(1, len(stored) + 1))
            assert self.store.last_seq(run_id) == len(stored)

    @invariant()
    def event_ids_are_unique(self) -> None:
        ids = [e.event_id for stored in self.model.values() for e in stored]
        assert len(set(ids)) == len(ids)


MemoryStoreModel.TestCase.settings = settings(
    max_examples=50, stateful_step_count=30, deadline=None
)
TestMemoryStoreModel = MemoryStoreModel.TestCase
