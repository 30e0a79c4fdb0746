"""Tests for segmentlog.store: the EventStore Protocol and the checks every backend shares."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from segmentlog import (
    DEFAULT_PAGE_LIMIT,
    Envelope,
    EventStore,
    FailingEventStore,
    IdempotencyConflictError,
    InvalidKeyError,
    MemoryEventStore,
    TextDelta,
)
from segmentlog.store import (
    MAX_KEY_BYTES,
    check_append_args,
    check_expected_run,
    check_key,
    check_page_args,
    held_envelopes,
)

RUN = uuid.uuid4()


def test_default_page_limit_is_1000() -> None:
    assert DEFAULT_PAGE_LIMIT == 1000


@pytest.mark.parametrize(("after_seq", "expected"), [(None, 0), (0, 0), (1, 1), (10**12, 10**12)])
def test_check_page_args_returns_after_seq_with_none_as_zero(
    after_seq: int | None, expected: int
) -> None:
    assert check_page_args(RUN, after_seq, 1) == expected


@pytest.mark.parametrize("limit", [1, 2, DEFAULT_PAGE_LIMIT, 10**9])
def test_check_page_args_accepts_any_limit_of_one_or_more(limit: int) -> None:
    assert check_page_args(RUN, 3, limit) == 3


@pytest.mark.parametrize("after_seq", [-1, -(10**12)])
def test_check_page_args_refuses_negative_after_seq(after_seq: int) -> None:
    with pytest.raises(ValueError, match="after_seq"):
        check_page_args(RUN, after_seq, 10)


@pytest.mark.parametrize("limit", [0, -1])
def test_check_page_args_refuses_limit_below_one(limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        check_page_args(RUN, None, limit)


@pytest.mark.parametrize("after_seq", [True, False, 1.0, "1", b"1"])
def test_check_page_args_refuses_after_seq_that_is_not_an_int(after_seq: Any) -> None:
    with pytest.raises(TypeError, match="after_seq"):
        check_page_args(RUN, after_seq, 10)


@pytest.mark.parametrize("limit", [True, 10.0, "10", None])
def test_check_page_args_refuses_limit_that_is_not_an_int(limit: Any) -> None:
    with pytest.raises(TypeError, match="limit"):
        check_page_args(RUN, None, limit)


@pytest.mark.parametrize("run_id", [str(RUN), RUN.bytes, RUN.int, None])
def test_check_page_args_refuses_run_id_that_is_not_a_uuid(run_id: Any) -> None:
    with pytest.raises(TypeError, match="run_id"):
        check_page_args(run_id, None, 10)


def test_check_page_args_checks_run_id_before_the_numbers() -> None:
    with pytest.raises(TypeError, match="run_id"):
        check_page_args("nope", -1, 0)


def test_memory_stores_satisfy_the_event_store_protocol() -> None:
    assert isinstance(MemoryEventStore(), EventStore)
    assert isinstance(FailingEventStore(), EventStore)


def test_an_object_without_append_batch_is_not_an_event_store() -> None:
    class OnlyAppend:
        def append(self, event: Any) -> Any:
            return event

        def list_after(self, run_id: Any, after_seq: Any = None, limit: int = 1) -> Any:
            return []

    assert not isinstance(OnlyAppend(), EventStore)


# --- idempotency keys and expected_seq ----------------------------------------------------


def test_max_key_bytes_is_256() -> None:
    assert MAX_KEY_BYTES == 256


@pytest.mark.parametrize("key", ["k", "x" * 256, "é" * 128, "\U0001f600" * 64, " ", "\x00"])
def test_check_key_accepts_non_empty_keys_of_at_most_256_utf8_bytes(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("", id="empty"),
        pytest.param("x" * 257, id="257-ascii"),
        pytest.param("é" * 129, id="258-bytes-of-two-byte-chars"),
        pytest.param("\U0001f600" * 64 + "x", id="257-bytes-of-four-byte-chars"),
    ],
)
def test_check_key_refuses_empty_and_long_keys(key: str) -> None:
    with pytest.raises(InvalidKeyError) as info:
        check_key(key)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("key", [b"k", 1, uuid.uuid4(), ["k"]])
def test_check_key_refuses_keys_that_are_not_str(key: Any) -> None:
    with pytest.raises(InvalidKeyError):
        check_key(key)


def test_check_append_args_returns_none_when_no_event_has_a_key() -> None:
    assert check_append_args(2, None, None) is None
    assert check_append_args(2, [None, None], 0) is None
    assert check_append_args(0, [], None) is None


def test_check_append_args_returns_the_keys_as_a_list() -> None:
    assert check_append_args(3, ("a", None, "b"), 5) == ["a", None, "b"]


def test_check_append_args_refuses_a_key_repeated_in_a_batch() -> None:
    with pytest.raises(ValueError, match="twice") as info:
        check_append_args(3, ["a", None, "a"], None)
    assert not isinstance(info.value, InvalidKeyError)


@pytest.mark.parametrize("keys", [[], ["a"], ["a", "b", "c"]])
def test_check_append_args_refuses_keys_of_the_wrong_length(keys: list[str]) -> None:
    with pytest.raises(ValueError, match="one per event"):
        check_append_args(2, keys, None)


def test_check_append_args_refuses_a_str_for_keys() -> None:
    with pytest.raises(TypeError):
        check_append_args(2, "ab", None)  # type: ignore[arg-type]


def test_check_append_args_refuses_a_bad_key_in_the_list() -> None:
    with pytest.raises(InvalidKeyError):
        check_append_args(2, ["a", ""], None)


@pytest.mark.parametrize("expected_seq", [-1, -(10**12)])
def test_check_append_args_refuses_negative_expected_seq(expected_seq: int) -> None:
    with pytest.raises(ValueError, match="expected_seq"):
        check_append_args(1, None, expected_seq)


@pytest.mark.parametrize("expected_seq", [True, 1.0, "1"])
def test_check_append_args_refuses_expected_seq_that_is_not_an_int(expected_seq: Any) -> None:
    with pytest.raises(TypeError, match="expected_seq"):
        check_append_args(1, None, expected_seq)


def test_check_expected_run_refuses_expected_seq_over_several_runs() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    check_expected_run([a, a, a], 3)
    check_expected_run([a, b], None)
    check_expected_run([], 0)
    with pytest.raises(ValueError, match="2 runs"):
        check_expected_run([a, b, a], 0)


def _stored(event: TextDelta, seq: int, key: str) -> Envelope[Any]:
    return Envelope(uuid.uuid4(), seq, event.run_id, None, event, datetime.now(UTC), key)


def test_held_envelopes_is_none_when_no_key_is_held() -> None:
    events = [TextDelta(run_id=RUN, delta="a"), TextDelta(run_id=RUN, delta="b")]
    assert held_envelopes(events, ["a", None], [None, None]) is None


def test_held_envelopes_returns_the_stored_envelopes_in_input_order() -> None:
    events = [TextDelta(run_id=RUN, delta="a"), TextDelta(run_id=RUN, delta="b")]
    stored = [_stored(events[0], 2, "a"), _stored(events[1], 1, "b")]
    assert held_envelopes(events, ["a", "b"], stored) == stored


def test_held_envelopes_compares_events_with_struct_equality() -> None:
    stamp = datetime(2025, 1, 1, tzinfo=UTC)
    event = TextDelta(run_id=RUN, delta="a", timestamp=stamp)
    same_instant = TextDelta(run_id=RUN, delta="a", timestamp=stamp.astimezone())
    stored = [_stored(event, 1, "a")]
    assert held_envelopes([same_instant], ["a"], stored) == stored


def test_held_envelopes_names_the_first_held_key_whose_event_differs() -> None:
    events = [TextDelta(run_id=RUN, delta=d) for d in "abc"]
    stored = [
        _stored(events[0], 1, "a"),
        _stored(TextDelta(run_id=RUN, delta="other"), 2, "b"),
        _stored(TextDelta(run_id=RUN, delta="other"), 3, "c"),
    ]
    with pytest.raises(IdempotencyConflictError) as info:
        held_envelopes(events, ["a", "b", "c"], stored)
    assert (info.value.run_id, info.value.key, info.value.seq) == (RUN, "b", 2)
    assert "different event" in str(info.value)


@pytest.mark.parametrize("new_key", [None, "new"])
def test_held_envelopes_refuses_a_mix_naming_its_first_held_key(new_key: str | None) -> None:
    events = [TextDelta(run_id=RUN, delta=d) for d in "abc"]
    keys = [new_key, "b", "c"]
    stored = [None, _stored(events[1], 4, "b"), _stored(events[2], 5, "c")]
    with pytest.raises(IdempotencyConflictError) as info:
        held_envelopes(events, keys, stored)
    assert (info.value.run_id, info.value.key, info.value.seq) == (RUN, "b", 4)
    assert "mixes" in str(info.value)


def test_held_envelopes_reports_a_differing_event_before_a_mix() -> None:
    events = [TextDelta(run_id=RUN, delta=d) for d in "ab"]
    stored = [None, _stored(TextDelta(run_id=RUN, delta="other"), 7, "b")]
    with pytest.raises(IdempotencyConflictError, match="different event") as info:
        held_envelopes(events, ["a", "b"], stored)
    assert info.value.key == "b"
