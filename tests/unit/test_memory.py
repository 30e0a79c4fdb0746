"""Tests for segmentlog.memory: what MemoryEventStore and FailingEventStore add to the contract.

The contract itself (seqs, paging, sessions, batches, invalid events) is covered for every
backend by ``tests/conformance``; this module checks the memory stores' own surface.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from segmentlog import (
    AppendError,
    FailingEventStore,
    IdempotencyConflictError,
    InvalidEventError,
    InvalidKeyError,
    MemoryEventStore,
    NotFoundError,
    RunStarted,
    SeqConflictError,
)
from tests.conformance.events_factory import all_variants, text_delta

# --- MemoryEventStore ----------------------------------------------------------------------


def test_new_store_has_no_runs() -> None:
    store: MemoryEventStore[Any] = MemoryEventStore()
    assert store.runs() == []
    assert store.last_seq(uuid.uuid4()) is None


def test_runs_lists_every_run_with_events_in_first_append_order() -> None:
    store: MemoryEventStore[Any] = MemoryEventStore()
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    store.append(text_delta(b))
    store.append_batch([text_delta(a), text_delta(b), text_delta(c)])
    store.append(text_delta(a))
    assert store.runs() == [b, a, c]


def test_last_seq_follows_appends_and_batches() -> None:
    store: MemoryEventStore[Any] = MemoryEventStore()
    a, b = uuid.uuid4(), uuid.uuid4()
    store.append(text_delta(a))
    assert store.last_seq(a) == 1
    store.append_batch([text_delta(a), text_delta(b), text_delta(a)])
    assert store.last_seq(a) == 3
    assert store.last_seq(b) == 1


def test_refused_batch_changes_neither_runs_nor_last_seq() -> None:
    store: MemoryEventStore[Any] = MemoryEventStore()
    a, b = uuid.uuid4(), uuid.uuid4()
    store.append(text_delta(a))
    with pytest.raises(InvalidEventError):
        store.append_batch([text_delta(a), text_delta(b), "not an event"])
    assert store.runs() == [a]
    assert store.last_seq(a) == 1
    assert store.last_seq(b) is None


def test_refused_run_started_in_a_batch_does_not_change_the_session() -> None:
    store: MemoryEventStore[Any] = MemoryEventStore()
    run_id, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    store.append(RunStarted(run_id=run_id, session_id=first, provider="p", model="m"))
    with pytest.raises(InvalidEventError):
        store.append_batch(
            [RunStarted(run_id=run_id, session_id=second, provider="p", model="m"), None]
        )
    assert store.append(text_delta(run_id)).session_id == first


def test_returned_pages_are_copies_the_caller_may_mutate() -> None:
    store: MemoryEventStore[Any] = MemoryEventStore()
    run_id = uuid.uuid4()
    store.append_batch([text_delta(run_id) for _ in range(3)])
    page = store.list_after(run_id)
    page.clear()
    runs = store.runs()
    runs.append(uuid.uuid4())
    assert len(store.list_after(run_id)) == 3
    assert store.runs() == [run_id]


def test_envelope_holds_the_very_event_object_appended() -> None:
    store: MemoryEventStore[Any] = MemoryEventStore()
    run_id = uuid.uuid4()
    event = text_delta(run_id)
    assert store.append(event).event is event
    assert store.list_after(run_id)[0].event is event


def test_batch_event_ids_increase_in_input_order() -> None:
    store: MemoryEventStore[Any] = MemoryEventStore()
    runs = [uuid.uuid4(), uuid.uuid4()]
    out = store.append_batch([text_delta(runs[i % 2]) for i in range(50)])
    ids = [e.event_id for e in out]
    assert ids == sorted(ids)


def test_bug_append_batch_of_a_generator_stores_every_event_like_segmentlog() -> None:
    """BUG (segmentlog/memory.py): append_batch iterates ``events`` twice.

    ``run_ids = [...]`` exhausts a generator, then ``zip(events, run_ids, strict=True)`` raises
    ``ValueError: zip() argument 2 is longer than argument 1``. SegmentLog.append_batch calls
    ``list(events)`` first and accepts any iterable, so code that works against the engine
    fails against its in-memory stand-in. Fix: ``events = list(events)`` at the top of
    ``MemoryEventStore.append_batch``.
    """
    store: MemoryEventStore[Any] = MemoryEventStore()
    run_id = uuid.uuid4()
    out = store.append_batch(text_delta(run_id, str(i)) for i in range(3))  # type: ignore[arg-type]
    assert [e.seq for e in out] == [1, 2, 3]
    assert store.list_after(run_id) == out


def test_stores_are_independent() -> None:
    first: MemoryEventStore[Any] = MemoryEventStore()
    second: MemoryEventStore[Any] = MemoryEventStore()
    run_id = uuid.uuid4()
    first.append(text_delta(run_id))
    with pytest.raises(NotFoundError):
        second.list_after(run_id)
    assert second.append(text_delta(run_id)).seq == 1


def test_a_held_key_returns_the_very_envelope_object_stored() -> None:
    store: MemoryEventStore[Any] = MemoryEventStore()
    event = text_delta(uuid.uuid4())
    first = store.append(event, key="k")
    assert store.append(event, key="k") is first
    assert store.list_after(event.run_id)[0] is first


def test_conflicts_change_neither_runs_nor_last_seq() -> None:
    store: MemoryEventStore[Any] = MemoryEventStore()
    a, b = uuid.uuid4(), uuid.uuid4()
    first = text_delta(a, "first")
    store.append(first, key="k")
    with pytest.raises(IdempotencyConflictError):
        store.append_batch([text_delta(b), first], keys=["new", "k"])
    with pytest.raises(SeqConflictError):
        store.append(text_delta(b), expected_seq=1)
    assert store.runs() == [a]
    assert store.last_seq(a) == 1
    assert store.last_seq(b) is None


# --- FailingEventStore ---------------------------------------------------------------------


def test_failing_store_append_raises_append_error_for_every_variant() -> None:
    store: FailingEventStore[Any] = FailingEventStore()
    for event in all_variants(uuid.uuid4(), uuid.uuid4()):
        with pytest.raises(AppendError) as info:
            store.append(event)
        assert not isinstance(info.value, InvalidEventError)


def test_failing_store_append_batch_raises_append_error() -> None:
    store: FailingEventStore[Any] = FailingEventStore()
    with pytest.raises(AppendError):
        store.append_batch(all_variants(uuid.uuid4(), uuid.uuid4()))
    with pytest.raises(AppendError):
        store.append_batch([])


def test_failing_store_list_after_raises_not_found_with_the_run_id() -> None:
    store: FailingEventStore[Any] = FailingEventStore()
    run_id = uuid.uuid4()
    with pytest.raises(NotFoundError) as info:
        store.list_after(run_id, 3, 10)
    assert info.value.run_id == run_id


def test_failing_store_list_after_still_validates_page_args() -> None:
    store: FailingEventStore[Any] = FailingEventStore()
    with pytest.raises(ValueError):
        store.list_after(uuid.uuid4(), -1)
    with pytest.raises(ValueError):
        store.list_after(uuid.uuid4(), None, 0)
    with pytest.raises(TypeError):
        store.list_after("not-a-uuid")  # type: ignore[arg-type]


def test_failing_store_checks_keys_and_expected_seq_before_refusing() -> None:
    store: FailingEventStore[Any] = FailingEventStore()
    a, b = uuid.uuid4(), uuid.uuid4()
    with pytest.raises(InvalidKeyError):
        store.append(text_delta(a), key="")
    with pytest.raises(InvalidKeyError):
        store.append(text_delta(a), key="x" * 257)
    with pytest.raises(ValueError, match="twice"):
        store.append_batch([text_delta(a), text_delta(a)], keys=["k", "k"])
    with pytest.raises(ValueError, match="one per event"):
        store.append_batch([text_delta(a)], keys=["k", "l"])
    with pytest.raises(ValueError, match="expected_seq"):
        store.append(text_delta(a), expected_seq=-1)
    with pytest.raises(TypeError, match="expected_seq"):
        store.append(text_delta(a), expected_seq="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2 runs"):
        store.append_batch([text_delta(a), text_delta(b)], expected_seq=0)


def test_failing_store_checks_events_before_refusing() -> None:
    store: FailingEventStore[Any] = FailingEventStore()
    with pytest.raises(InvalidEventError):
        store.append("not an event")  # type: ignore[arg-type]
    with pytest.raises(InvalidEventError):
        store.append_batch([text_delta(uuid.uuid4()), 42])


def test_failing_store_refuses_valid_keyed_and_conditional_appends() -> None:
    store: FailingEventStore[Any] = FailingEventStore()
    run_id = uuid.uuid4()
    with pytest.raises(AppendError) as info:
        store.append(text_delta(run_id), key="k", expected_seq=0)
    assert type(info.value) is AppendError
    with pytest.raises(AppendError) as batch:
        store.append_batch([text_delta(run_id), text_delta(run_id)], keys=["a", None])
    assert type(batch.value) is AppendError
