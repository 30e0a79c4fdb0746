"""Idempotent and conditional appends (``key=``, ``keys=``, ``expected_seq=``), on every
backend.

The rules, in the order a backend applies them:
1. Arguments (keys, ``expected_seq``, events) are checked before anything touches storage;
   ``append(event, key=k)`` is ``append_batch([event], keys=[k])``.
2. ``expected_seq`` with a batch over several runs is a ``ValueError``.
3. Keys first: if any event's key is held by its run, every event must have a key held by an
   equal event (msgspec ``==``); then the stored envelopes come back in input order, nothing
   is written and ``expected_seq`` is not checked. A held key whose stored event differs is
   an ``IdempotencyConflictError`` naming it (checked first); a mix of held keys with new keys
   or unkeyed events is one too, naming the first held key.
4. Then ``expected_seq``: unless it equals the run's last seq (0 for no events),
   ``SeqConflictError(run_id, expected, actual)``.
5. Otherwise the batch is appended and each envelope carries its key; keys are per run.
Whatever raises, nothing was written.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from segmentlog import (
    AppendError,
    Envelope,
    IdempotencyConflictError,
    InvalidEventError,
    InvalidKeyError,
    NotFoundError,
    RunStarted,
    SeqConflictError,
)
from tests.conformance.events_factory import text_delta


def _seqs(store: Any, run_id: uuid.UUID) -> list[int]:
    return [e.seq for e in store.list_after(run_id)]


def _assert_nothing_stored(store: Any, run_id: uuid.UUID) -> None:
    with pytest.raises(NotFoundError):
        store.list_after(run_id)


def _same_stored(a: Envelope[Any], b: Envelope[Any]) -> None:
    assert (a.seq, a.event_id, a.emitted_at, a.key) == (b.seq, b.event_id, b.emitted_at, b.key)
    assert a == b


# --- keys -----------------------------------------------------------------------------------


def test_envelopes_carry_their_key_when_appended_and_when_read(store: Any) -> None:
    run_id = uuid.uuid4()
    keyed = store.append(text_delta(run_id, "a"), key="k-1")
    plain = store.append(text_delta(run_id, "b"))
    batch = store.append_batch(
        [text_delta(run_id, "c"), text_delta(run_id, "d")], keys=[None, "k-2"]
    )
    assert [keyed.key, plain.key, *(e.key for e in batch)] == ["k-1", None, None, "k-2"]
    assert store.list_after(run_id) == [keyed, plain, *batch]


def test_retry_after_a_lost_acknowledgement_returns_the_stored_envelope(store: Any) -> None:
    run_id = uuid.uuid4()
    event = text_delta(run_id, "once")
    first = store.append(event, key="retry-me")  # the caller never saw this answer
    again = store.append(event, key="retry-me")
    _same_stored(again, first)
    (batch_retry,) = store.append_batch([event], keys=["retry-me"])
    _same_stored(batch_retry, first)
    assert store.list_after(run_id) == [first]
    assert store.append(text_delta(run_id)).seq == 2


def test_retry_after_reopen_returns_the_stored_envelope(backend: Any) -> None:
    store = backend.open()
    run_id, session_id = uuid.uuid4(), uuid.uuid4()
    started = RunStarted(run_id=run_id, session_id=session_id, provider="p", model="m")
    event = text_delta(run_id, "after reopen")
    written = store.append_batch([started, event], keys=["start", "delta"])
    store = backend.reopen()
    _same_stored(store.append(event, key="delta"), written[1])
    retried = store.append_batch([started, event], keys=["start", "delta"])
    assert retried == written
    assert retried[1].session_id == session_id
    assert store.list_after(run_id) == written


def test_a_refused_append_leaves_its_key_free_for_the_retry(store: Any) -> None:
    run_id = uuid.uuid4()
    event = text_delta(run_id, "retried")
    with pytest.raises(InvalidEventError):
        store.append_batch([event, "not an event"], keys=["k", "other"])
    with pytest.raises(SeqConflictError):
        store.append(event, key="k", expected_seq=3)
    _assert_nothing_stored(store, run_id)
    stored = store.append(event, key="k")
    assert stored.seq == 1
    _same_stored(store.append(event, key="k"), stored)
    assert store.append_batch([text_delta(run_id), event], keys=[None, "other"])[1].seq == 3


def test_same_key_with_a_different_event_is_a_conflict_and_writes_nothing(store: Any) -> None:
    run_id = uuid.uuid4()
    first = store.append(text_delta(run_id, "first"), key="k")
    store.append(text_delta(run_id, "second"))
    with pytest.raises(IdempotencyConflictError) as info:
        store.append(text_delta(run_id, "not the first"), key="k")
    error = info.value
    assert (error.run_id, error.key, error.seq) == (run_id, "k", 1)
    assert isinstance(error, AppendError)
    assert _seqs(store, run_id) == [1, 2]
    assert store.list_after(run_id)[0] == first


def test_keys_are_per_run(store: Any) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    in_a = store.append(text_delta(a, "a"), key="shared")
    in_b = store.append(text_delta(b, "b"), key="shared")
    assert (in_a.seq, in_b.seq) == (1, 1)
    assert in_a.event_id != in_b.event_id
    _same_stored(store.append(text_delta(b, "b2"), key="other"), store.list_after(b)[1])


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("", id="empty"),
        pytest.param("x" * 257, id="257-bytes"),
        pytest.param("é" * 128 + "x", id="257-bytes-multibyte"),
        pytest.param(b"bytes", id="bytes"),
        pytest.param(7, id="int"),
    ],
)
def test_an_invalid_key_is_refused_before_anything_is_written(store: Any, key: Any) -> None:
    run_id = uuid.uuid4()
    with pytest.raises(InvalidKeyError) as info:
        store.append(text_delta(run_id), key=key)
    assert isinstance(info.value, AppendError)
    with pytest.raises(InvalidKeyError):
        store.append_batch([text_delta(run_id), text_delta(run_id)], keys=["fine", key])
    _assert_nothing_stored(store, run_id)


def test_a_key_of_exactly_256_utf8_bytes_is_accepted(store: Any) -> None:
    run_id = uuid.uuid4()
    key = "\U0001f600" * 63 + "é" + "xy"
    assert len(key.encode()) == 256
    event = text_delta(run_id)
    stored = store.append(event, key=key)
    assert stored.key == key
    _same_stored(store.append(event, key=key), stored)


def test_bad_keys_and_expected_seq_are_refused_before_a_conflict_is_looked_for(
    store: Any,
) -> None:
    run_id = uuid.uuid4()
    store.append(text_delta(run_id), key="k")
    with pytest.raises(InvalidKeyError):
        store.append(text_delta(run_id, "different"), key="", expected_seq=99)
    with pytest.raises(ValueError, match="twice"):
        store.append_batch([text_delta(run_id), text_delta(run_id)], keys=["k", "k"])
    with pytest.raises(ValueError, match="expected_seq"):
        store.append(text_delta(run_id, "different"), key="k", expected_seq=-1)
    assert _seqs(store, run_id) == [1]


# --- batches --------------------------------------------------------------------------------


def test_a_key_repeated_in_a_batch_is_a_value_error_and_writes_nothing(store: Any) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    with pytest.raises(ValueError, match="twice") as info:
        store.append_batch([text_delta(a), text_delta(b), text_delta(a)], keys=["k", None, "k"])
    assert not isinstance(info.value, InvalidKeyError)
    _assert_nothing_stored(store, a)
    _assert_nothing_stored(store, b)


def test_keys_of_the_wrong_length_are_a_value_error(store: Any) -> None:
    run_id = uuid.uuid4()
    with pytest.raises(ValueError, match="one per event"):
        store.append_batch([text_delta(run_id), text_delta(run_id)], keys=["only one"])
    _assert_nothing_stored(store, run_id)


def test_keys_that_are_all_none_append_as_usual(store: Any) -> None:
    run_id = uuid.uuid4()
    events = [text_delta(run_id), text_delta(run_id)]
    assert [e.seq for e in store.append_batch(events, keys=[None, None])] == [1, 2]
    assert [e.seq for e in store.append_batch(events, keys=[None, None])] == [3, 4]


def test_a_batch_whose_keys_are_all_held_returns_the_stored_envelopes_in_input_order(
    store: Any,
) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    events = [text_delta(a, "a1"), text_delta(b, "b1"), text_delta(a, "a2")]
    written = store.append_batch(events, keys=["x", "y", "z"])
    store.append(text_delta(a, "later"))
    reordered = store.append_batch([events[2], events[0], events[1]], keys=["z", "x", "y"])
    assert reordered == [written[2], written[0], written[1]]
    (alone,) = store.append_batch([events[1]], keys=["y"])
    _same_stored(alone, written[1])
    assert _seqs(store, a) == [1, 2, 3]
    assert _seqs(store, b) == [1]


@pytest.mark.parametrize("new_key", [None, "new"], ids=["unkeyed", "new-key"])
def test_a_batch_mixing_held_and_new_keys_is_a_conflict_and_writes_nothing(
    store: Any, new_key: str | None
) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    held = text_delta(a, "held")
    stored = store.append(held, key="held")
    for events in ([text_delta(a, "new"), held], [text_delta(b, "new"), held]):
        with pytest.raises(IdempotencyConflictError) as info:
            store.append_batch(events, keys=[new_key, "held"])
        assert (info.value.run_id, info.value.key, info.value.seq) == (a, "held", stored.seq)
    assert store.list_after(a) == [stored]
    _assert_nothing_stored(store, b)
    assert store.append(text_delta(b), key="new").seq == 1


def test_a_batch_with_a_held_key_for_a_different_event_names_that_key(store: Any) -> None:
    run_id = uuid.uuid4()
    events = [text_delta(run_id, "one"), text_delta(run_id, "two")]
    store.append_batch(events, keys=["one", "two"])
    with pytest.raises(IdempotencyConflictError) as info:
        store.append_batch([events[0], text_delta(run_id, "changed")], keys=["one", "two"])
    assert (info.value.key, info.value.seq) == ("two", 2)
    assert _seqs(store, run_id) == [1, 2]


# --- expected_seq ---------------------------------------------------------------------------


def test_expected_seq_zero_means_the_run_must_not_exist_yet(store: Any) -> None:
    run_id = uuid.uuid4()
    assert store.append(text_delta(run_id), expected_seq=0).seq == 1
    with pytest.raises(SeqConflictError) as info:
        store.append(text_delta(run_id), expected_seq=0)
    assert (info.value.run_id, info.value.expected, info.value.actual) == (run_id, 0, 1)
    assert isinstance(info.value, AppendError)
    assert _seqs(store, run_id) == [1]


def test_expected_seq_equal_to_the_last_seq_appends(store: Any) -> None:
    run_id = uuid.uuid4()
    last = 0
    for i in range(5):
        written = store.append_batch([text_delta(run_id, str(i))] * (i % 2 + 1), expected_seq=last)
        assert [e.seq for e in written] == list(range(last + 1, last + len(written) + 1))
        last = written[-1].seq
    assert _seqs(store, run_id) == list(range(1, last + 1))


@pytest.mark.parametrize("expected", [0, 2, 4, 100])
def test_a_stale_expected_seq_is_a_conflict_and_writes_nothing(store: Any, expected: int) -> None:
    run_id = uuid.uuid4()
    store.append_batch([text_delta(run_id) for _ in range(3)])
    with pytest.raises(SeqConflictError) as info:
        store.append_batch([text_delta(run_id), text_delta(run_id)], expected_seq=expected)
    assert (info.value.expected, info.value.actual) == (expected, 3)
    assert _seqs(store, run_id) == [1, 2, 3]


def test_expected_seq_of_a_run_with_no_events_is_compared_with_zero(store: Any) -> None:
    run_id = uuid.uuid4()
    with pytest.raises(SeqConflictError) as info:
        store.append(text_delta(run_id), expected_seq=3)
    assert (info.value.run_id, info.value.expected, info.value.actual) == (run_id, 3, 0)
    _assert_nothing_stored(store, run_id)


def test_expected_seq_with_a_batch_over_several_runs_is_a_value_error(store: Any) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    with pytest.raises(ValueError, match="runs"):
        store.append_batch([text_delta(a), text_delta(b)], expected_seq=0)
    _assert_nothing_stored(store, a)
    _assert_nothing_stored(store, b)


@pytest.mark.parametrize(
    ("expected_seq", "error"), [(-1, ValueError), (True, TypeError), ("1", TypeError)]
)
def test_an_invalid_expected_seq_is_refused(store: Any, expected_seq: Any, error: type) -> None:
    run_id = uuid.uuid4()
    with pytest.raises(error, match="expected_seq"):
        store.append(text_delta(run_id), expected_seq=expected_seq)
    _assert_nothing_stored(store, run_id)


def test_an_empty_batch_with_keys_and_expected_seq_writes_nothing(store: Any) -> None:
    assert store.append_batch([], keys=[], expected_seq=5) == []


# --- keys and expected_seq together ---------------------------------------------------------


def test_a_retried_conditional_append_that_landed_returns_the_stored_envelope(
    store: Any,
) -> None:
    run_id = uuid.uuid4()
    store.append(text_delta(run_id))
    event = text_delta(run_id, "conditional")
    first = store.append(event, key="c", expected_seq=1)
    store.append(text_delta(run_id, "someone else"))
    _same_stored(store.append(event, key="c", expected_seq=1), first)
    batch = [text_delta(run_id, "b1"), text_delta(run_id, "b2")]
    landed = store.append_batch(batch, keys=["b1", "b2"], expected_seq=3)
    assert store.append_batch(batch, keys=["b1", "b2"], expected_seq=3) == landed
    assert _seqs(store, run_id) == [1, 2, 3, 4, 5]


def test_a_held_key_with_a_different_event_is_an_idempotency_conflict_whatever_the_seq(
    store: Any,
) -> None:
    run_id = uuid.uuid4()
    store.append(text_delta(run_id, "first"), key="k")
    for expected in (0, 1, 7):
        with pytest.raises(IdempotencyConflictError):
            store.append(text_delta(run_id, "other"), key="k", expected_seq=expected)
    assert _seqs(store, run_id) == [1]


def test_a_new_key_with_a_stale_seq_is_a_seq_conflict_and_leaves_the_key_free(
    store: Any,
) -> None:
    run_id = uuid.uuid4()
    store.append(text_delta(run_id))
    event = text_delta(run_id, "late")
    with pytest.raises(SeqConflictError) as info:
        store.append(event, key="late", expected_seq=0)
    assert (info.value.expected, info.value.actual) == (0, 1)
    assert store.append(event, key="late", expected_seq=1).seq == 2
    with pytest.raises(IdempotencyConflictError):
        store.append_batch([text_delta(run_id), event], keys=["fresh", "late"], expected_seq=2)
    assert _seqs(store, run_id) == [1, 2]
