"""Tests for segmentlog.events: the variants, Envelope, and UUIDv7 ids."""

from __future__ import annotations

import itertools
import pickle
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

import msgspec
import pytest

from segmentlog import (
    AgentEvent,
    Envelope,
    Failure,
    FinishReason,
    MemoryEventStore,
    RunCompleted,
    Success,
    TextDelta,
    ToolCall,
    ToolExecutionFinished,
    new_event_id,
)
from segmentlog import events as events_module
from segmentlog.events import new_event_ids, utcnow
from tests.conformance.events_factory import NON_TERMINAL, TERMINAL, VARIANTS, all_variants


def _envelope(event: Any) -> Envelope[Any]:
    return Envelope(new_event_id(), 1, event.run_id, None, event, utcnow())


# --- UUIDv7 --------------------------------------------------------------------------------


def test_new_event_id_has_version_7_and_rfc_variant_bits() -> None:
    for _ in range(1000):
        event_id = new_event_id()
        assert event_id.version == 7
        assert event_id.variant == uuid.RFC_4122
        assert (event_id.int >> 76) & 0xF == 0x7
        assert (event_id.int >> 62) & 0b11 == 0b10


def test_new_event_id_embeds_unix_milliseconds_not_earlier_than_minting() -> None:
    before_ms = time.time_ns() // 1_000_000
    event_id = new_event_id()
    assert event_id.int >> 80 >= before_ms


def test_new_event_ids_are_strictly_increasing_in_a_tight_loop() -> None:
    ids = [new_event_id() for _ in range(20_000)]
    assert all(a < b for a, b in itertools.pairwise(ids))
    assert all(a.int < b.int for a, b in itertools.pairwise(ids))
    assert all(str(a) < str(b) for a, b in itertools.pairwise(ids))


class _FrozenClock:
    def __init__(self, ns: int) -> None:
        self.ns = ns

    def time_ns(self) -> int:
        return self.ns


def test_new_event_ids_stay_increasing_when_the_millisecond_counter_overflows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _FrozenClock(time.time_ns())
    monkeypatch.setattr(events_module, "time", clock)
    # 10k ids in one frozen millisecond overflow the 12-bit counter at least twice.
    ids = [new_event_id() for _ in range(10_000)]
    assert all(a < b for a, b in itertools.pairwise(ids))
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert len({i.int >> 80 for i in ids}) >= 3


def test_new_event_ids_stay_increasing_when_the_clock_goes_backwards(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _FrozenClock(time.time_ns())
    monkeypatch.setattr(events_module, "time", clock)
    first = [new_event_id() for _ in range(100)]
    clock.ns -= 5_000_000_000
    later = [new_event_id() for _ in range(100)]
    ids = first + later
    assert all(a < b for a, b in itertools.pairwise(ids))


def test_new_event_ids_from_many_threads_are_unique_and_increasing_per_thread() -> None:
    threads_n, per_thread = 8, 2000
    minted: list[list[uuid.UUID]] = [[] for _ in range(threads_n)]
    barrier = threading.Barrier(threads_n)

    def mint(i: int) -> None:
        barrier.wait()
        minted[i].extend(new_event_id() for _ in range(per_thread))

    threads = [threading.Thread(target=mint, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for ids in minted:
        assert len(ids) == per_thread
        assert all(a < b for a, b in itertools.pairwise(ids))
    every = [i for ids in minted for i in ids]
    assert len(set(every)) == threads_n * per_thread
    # The (milliseconds, counter) prefix is assigned under a lock, so it is unique too.
    assert len({i.int >> 62 for i in every}) == len(every)


def test_new_event_id_behaves_like_any_uuid() -> None:
    event_id = new_event_id()
    assert uuid.UUID(str(event_id)) == event_id
    assert uuid.UUID(int=event_id.int) == event_id
    assert hash(uuid.UUID(bytes=event_id.bytes)) == hash(event_id)
    assert pickle.loads(pickle.dumps(event_id)) == event_id
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(event_id), type=uuid.UUID) == event_id
    assert msgspec.json.decode(msgspec.json.encode(event_id), type=uuid.UUID) == event_id


# --- timestamps ----------------------------------------------------------------------------


def test_utcnow_is_timezone_aware_utc() -> None:
    now = utcnow()
    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)


def test_event_timestamp_defaults_to_aware_utc() -> None:
    event = TextDelta(run_id=uuid.uuid4(), delta="x")
    assert event.timestamp.utcoffset() == timedelta(0)


def test_naive_timestamp_is_refused_with_value_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        TextDelta(run_id=uuid.uuid4(), delta="x", timestamp=datetime(2025, 1, 1))


def test_naive_timestamp_is_refused_when_decoding_too() -> None:
    payload = msgspec.json.encode(
        {
            "type": "TextDelta",
            "run_id": str(uuid.uuid4()),
            "delta": "x",
            "timestamp": "2025-01-01T00:00:00",
        }
    )
    with pytest.raises((ValueError, msgspec.ValidationError)):
        msgspec.json.decode(payload, type=AgentEvent)


def test_aware_non_utc_timestamp_is_kept() -> None:
    stamp = datetime(2025, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=-3)))
    assert TextDelta(run_id=uuid.uuid4(), delta="x", timestamp=stamp).timestamp == stamp


# --- variants and the tagged union ---------------------------------------------------------


def test_agent_event_union_has_exactly_the_18_variants() -> None:
    assert set(AgentEvent.__args__) == set(VARIANTS)
    assert len(VARIANTS) == 18


def test_every_variant_is_tagged_with_its_class_name() -> None:
    for event in all_variants(uuid.uuid4(), uuid.uuid4()):
        encoded = msgspec.json.decode(msgspec.json.encode(event))
        assert encoded["type"] == type(event).__name__


@pytest.mark.parametrize("codec", [msgspec.json, msgspec.msgpack], ids=["json", "msgpack"])
def test_every_variant_round_trips_through_the_union(codec: Any) -> None:
    for event in all_variants(uuid.uuid4(), uuid.uuid4()):
        assert codec.decode(codec.encode(event), type=AgentEvent) == event


def test_variants_are_frozen_and_keyword_only() -> None:
    event = TextDelta(run_id=uuid.uuid4(), delta="x")
    with pytest.raises(AttributeError):
        event.delta = "y"  # type: ignore[misc]
    with pytest.raises(TypeError):
        TextDelta(uuid.uuid4(), "x")  # type: ignore[misc]


def test_is_terminal_exactly_for_completed_failed_and_cancelled() -> None:
    envelopes = [_envelope(e) for e in all_variants(uuid.uuid4(), uuid.uuid4())]
    assert {type(e.event) for e in envelopes if e.is_terminal} == TERMINAL
    assert {type(e.event) for e in envelopes if not e.is_terminal} == NON_TERMINAL
    assert len(TERMINAL) == 3


def test_finish_reason_unknown_string_is_kept_as_is() -> None:
    event = RunCompleted(run_id=uuid.uuid4(), finish_reason="provider_specific_9", iterations=1)
    back = msgspec.json.decode(msgspec.json.encode(event), type=AgentEvent)
    assert back.finish_reason == "provider_specific_9"
    assert "provider_specific_9" not in FinishReason.KNOWN
    assert FinishReason.STOP in FinishReason.KNOWN


def test_finish_reason_known_values() -> None:
    expected = {"stop", "tool_calls", "length", "content_filter", "error"}
    assert expected == FinishReason.KNOWN
    assert [FinishReason.STOP, FinishReason.TOOL_CALLS, FinishReason.LENGTH] == [
        "stop",
        "tool_calls",
        "length",
    ]
    assert [FinishReason.CONTENT_FILTER, FinishReason.ERROR] == ["content_filter", "error"]


@pytest.mark.parametrize(
    "arguments",
    [None, True, 0, -(2**63), 1.5, "text", [], [1, "a", None], {}, {"a": {"b": [1, 2.5]}}],
    ids=repr,
)
def test_tool_call_arguments_may_be_any_json_value(arguments: Any) -> None:
    call = ToolCall(id="c1", name="search", arguments=arguments)
    for codec in (msgspec.json, msgspec.msgpack):
        assert codec.decode(codec.encode(call), type=ToolCall) == call


def test_tool_call_arguments_default_to_none() -> None:
    assert ToolCall(id="c1", name="n").arguments is None


def test_tool_execution_result_is_success_or_failure_by_tag() -> None:
    run_id = uuid.uuid4()
    for result in (Success(output={"ok": [1]}), Success(), Failure(error="boom")):
        event = ToolExecutionFinished(
            run_id=run_id, call_id="c", tool_name="t", result=result, duration_ms=3
        )
        back = msgspec.msgpack.decode(msgspec.msgpack.encode(event), type=AgentEvent)
        assert back == event
        assert type(back.result) is type(result)


# --- user-defined event types --------------------------------------------------------------


class MyStarted(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    starts_session: ClassVar[bool] = True
    run_id: uuid.UUID
    session_id: uuid.UUID


class MyStep(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    run_id: uuid.UUID
    note: str


class MyDone(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    terminal: ClassVar[bool] = True
    run_id: uuid.UUID


MyEvent = MyStarted | MyStep | MyDone


class NoRunId(msgspec.Struct, frozen=True):
    name: str


def test_user_defined_single_struct_event_type_works_with_memory_store() -> None:
    store: MemoryEventStore[MyStep] = MemoryEventStore(event_type=MyStep)
    run_id = uuid.uuid4()
    envelope = store.append(MyStep(run_id=run_id, note="a"))
    assert envelope.seq == 1
    assert envelope.session_id is None
    assert not envelope.is_terminal
    assert store.list_after(run_id) == [envelope]


def test_user_defined_union_carries_session_and_terminal_markers() -> None:
    store: MemoryEventStore[Any] = MemoryEventStore(event_type=MyEvent)
    run_id, session_id = uuid.uuid4(), uuid.uuid4()
    out = store.append_batch(
        [
            MyStarted(run_id=run_id, session_id=session_id),
            MyStep(run_id=run_id, note="x"),
            MyDone(run_id=run_id),
        ]
    )
    assert [e.seq for e in out] == [1, 2, 3]
    assert [e.session_id for e in out] == [session_id] * 3
    assert [e.is_terminal for e in out] == [False, False, True]


def test_store_for_a_user_type_refuses_agent_events() -> None:
    from segmentlog import InvalidEventError

    store: MemoryEventStore[MyStep] = MemoryEventStore(event_type=MyStep)
    with pytest.raises(InvalidEventError):
        store.append(TextDelta(run_id=uuid.uuid4(), delta="x"))


def test_event_type_without_run_id_is_refused_at_store_construction() -> None:
    with pytest.raises(TypeError, match="run_id"):
        MemoryEventStore(event_type=NoRunId)


def test_union_with_one_member_without_run_id_is_refused_at_store_construction() -> None:
    with pytest.raises(TypeError, match="NoRunId"):
        MemoryEventStore(event_type=MyStep | NoRunId)


def test_event_type_that_is_not_a_struct_is_refused_at_store_construction() -> None:
    with pytest.raises(TypeError):
        MemoryEventStore(event_type=dict)


# --- Envelope ------------------------------------------------------------------------------


def test_envelope_round_trips_through_msgpack_with_aware_emitted_at() -> None:
    event = TextDelta(run_id=uuid.uuid4(), delta="x")
    envelope = _envelope(event)
    back = msgspec.msgpack.decode(msgspec.msgpack.encode(envelope), type=Envelope[AgentEvent])
    assert back == envelope
    assert back.emitted_at.tzinfo is not None
    assert back.emitted_at.astimezone(UTC) == envelope.emitted_at


def test_new_event_ids_mints_a_batch_of_increasing_unique_v7_ids() -> None:
    before = new_event_id()
    batch = new_event_ids(5000)  # more than one millisecond's 4096 counter values
    after = new_event_id()
    assert len(set(batch)) == 5000
    assert all(a < b for a, b in zip([before, *batch], [*batch, after], strict=True))
    assert {u.version for u in batch} == {7}
    assert {u.variant for u in batch} == {uuid.RFC_4122}
