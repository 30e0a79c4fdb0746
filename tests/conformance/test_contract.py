"""The EventStore contract, run against every backend in ``conftest.BACKENDS``.

Only the Protocol's methods (``append``, ``append_batch``, ``list_after``) are used, so any
backend can run these; ``backend.reopen()`` is used where data must survive a reopen (a no-op
for backends whose ``reopens`` is False).
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest

from segmentlog import (
    DEFAULT_PAGE_LIMIT,
    AppendError,
    Envelope,
    InvalidEventError,
    NotFoundError,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunStarted,
    SegmentLogError,
    TextDelta,
    ToolCall,
    ToolCallCompleted,
)
from tests.conformance.events_factory import (
    NON_TERMINAL,
    TERMINAL,
    VARIANTS,
    all_variants,
    text_delta,
)


def _seqs(envelopes: list[Envelope[Any]]) -> list[int]:
    return [e.seq for e in envelopes]


def _fill(store: Any, run_id: uuid.UUID, n: int) -> list[Envelope[Any]]:
    return [store.append(text_delta(run_id, f"d{i}")) for i in range(n)]


def _assert_nothing_stored(store: Any, run_id: uuid.UUID) -> None:
    with pytest.raises(NotFoundError):
        store.list_after(run_id)


# --- seq assignment ------------------------------------------------------------------------


def test_first_append_of_a_run_gets_seq_1(store: Any) -> None:
    envelope = store.append(text_delta(uuid.uuid4()))
    assert envelope.seq == 1


def test_seqs_are_gapless_per_run_across_interleaved_runs(store: Any) -> None:
    runs = [uuid.uuid4() for _ in range(3)]
    got: dict[uuid.UUID, list[int]] = {r: [] for r in runs}
    for i in range(30):
        run_id = runs[(i * 7) % 3 if i % 4 else 0]
        got[run_id].append(store.append(text_delta(run_id, str(i))).seq)
    for run_id in runs:
        assert got[run_id] == list(range(1, len(got[run_id]) + 1))
        assert _seqs(store.list_after(run_id)) == got[run_id]


def test_append_returns_envelope_with_the_event_and_its_run(store: Any) -> None:
    run_id = uuid.uuid4()
    event = text_delta(run_id, "hello")
    envelope = store.append(event)
    assert envelope.event == event
    assert envelope.run_id == run_id


# --- list_after paging ---------------------------------------------------------------------


def test_list_after_returns_only_seqs_greater_than_after_seq(store: Any) -> None:
    run_id = uuid.uuid4()
    written = _fill(store, run_id, 5)
    assert store.list_after(run_id, 2) == written[2:]
    assert _seqs(store.list_after(run_id, 4)) == [5]


def test_list_after_none_and_zero_both_start_from_the_first_event(store: Any) -> None:
    run_id = uuid.uuid4()
    written = _fill(store, run_id, 3)
    assert store.list_after(run_id) == written
    assert store.list_after(run_id, None) == written
    assert store.list_after(run_id, 0) == written


def test_list_after_respects_limit(store: Any) -> None:
    run_id = uuid.uuid4()
    written = _fill(store, run_id, 6)
    assert store.list_after(run_id, None, 2) == written[:2]
    assert store.list_after(run_id, 2, 3) == written[2:5]
    assert store.list_after(run_id, 5, 10) == written[5:]
    assert store.list_after(run_id, 0, 1) == written[:1]


def test_paging_with_last_seq_of_previous_page_visits_every_event_once(store: Any) -> None:
    run_id = uuid.uuid4()
    written = _fill(store, run_id, 11)
    seen: list[Envelope[Any]] = []
    after = 0
    while page := store.list_after(run_id, after, 3):
        seen.extend(page)
        after = page[-1].seq
    assert seen == written


def test_list_after_at_or_past_the_end_is_empty(store: Any) -> None:
    run_id = uuid.uuid4()
    _fill(store, run_id, 3)
    assert store.list_after(run_id, 3) == []
    assert store.list_after(run_id, 4) == []
    assert store.list_after(run_id, 10**9) == []


def test_list_after_default_limit_is_default_page_limit(store: Any) -> None:
    run_id = uuid.uuid4()
    store.append_batch([text_delta(run_id, str(i)) for i in range(DEFAULT_PAGE_LIMIT + 5)])
    page = store.list_after(run_id)
    assert _seqs(page) == list(range(1, DEFAULT_PAGE_LIMIT + 1))
    assert _seqs(store.list_after(run_id, DEFAULT_PAGE_LIMIT)) == list(
        range(DEFAULT_PAGE_LIMIT + 1, DEFAULT_PAGE_LIMIT + 6)
    )


def test_list_after_of_one_run_never_returns_another_runs_events(store: Any) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    _fill(store, a, 3)
    _fill(store, b, 2)
    assert {e.run_id for e in store.list_after(a)} == {a}
    assert {e.run_id for e in store.list_after(b)} == {b}


# --- errors --------------------------------------------------------------------------------


def test_list_after_unknown_run_raises_not_found_with_its_run_id(store: Any) -> None:
    store.append(text_delta(uuid.uuid4()))
    unknown = uuid.uuid4()
    with pytest.raises(NotFoundError) as info:
        store.list_after(unknown)
    assert info.value.run_id == unknown
    assert isinstance(info.value, SegmentLogError)


def test_list_after_unknown_run_raises_not_found_even_past_the_end(store: Any) -> None:
    unknown = uuid.uuid4()
    with pytest.raises(NotFoundError) as info:
        store.list_after(unknown, 5, 10)
    assert info.value.run_id == unknown


@pytest.mark.parametrize("after_seq", [-1, -100])
def test_negative_after_seq_is_a_value_error(store: Any, after_seq: int) -> None:
    run_id = uuid.uuid4()
    _fill(store, run_id, 2)
    with pytest.raises(ValueError):
        store.list_after(run_id, after_seq)


@pytest.mark.parametrize("limit", [0, -1])
def test_limit_below_one_is_a_value_error(store: Any, limit: int) -> None:
    run_id = uuid.uuid4()
    _fill(store, run_id, 2)
    with pytest.raises(ValueError):
        store.list_after(run_id, None, limit)


def test_page_args_are_checked_before_the_run_is_looked_up(store: Any) -> None:
    with pytest.raises(ValueError):
        store.list_after(uuid.uuid4(), -1)
    with pytest.raises(ValueError):
        store.list_after(uuid.uuid4(), None, 0)


# --- session ids ---------------------------------------------------------------------------


def test_run_started_envelope_carries_its_session_id(store: Any) -> None:
    run_id, session_id = uuid.uuid4(), uuid.uuid4()
    envelope = store.append(
        RunStarted(run_id=run_id, session_id=session_id, provider="p", model="m")
    )
    assert envelope.session_id == session_id


def test_later_envelopes_of_the_run_carry_the_session_id(store: Any) -> None:
    run_id, session_id = uuid.uuid4(), uuid.uuid4()
    store.append(RunStarted(run_id=run_id, session_id=session_id, provider="p", model="m"))
    later = [store.append(e) for e in all_variants(run_id, session_id)[1:]]
    assert {e.session_id for e in later} == {session_id}
    assert {e.session_id for e in store.list_after(run_id)} == {session_id}


def test_session_id_does_not_leak_to_other_runs(store: Any) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    store.append(RunStarted(run_id=a, session_id=uuid.uuid4(), provider="p", model="m"))
    assert store.append(text_delta(b)).session_id is None


def test_run_without_run_started_has_no_session_id(store: Any) -> None:
    run_id = uuid.uuid4()
    written = _fill(store, run_id, 3)
    assert [e.session_id for e in written] == [None, None, None]
    assert [e.session_id for e in store.list_after(run_id)] == [None, None, None]


def test_events_before_run_started_keep_no_session_id(store: Any) -> None:
    run_id, session_id = uuid.uuid4(), uuid.uuid4()
    store.append(text_delta(run_id))
    store.append(RunStarted(run_id=run_id, session_id=session_id, provider="p", model="m"))
    store.append(text_delta(run_id))
    assert [e.session_id for e in store.list_after(run_id)] == [None, session_id, session_id]


def test_second_run_started_changes_the_session_id(store: Any) -> None:
    run_id, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    store.append(RunStarted(run_id=run_id, session_id=first, provider="p", model="m"))
    store.append(text_delta(run_id))
    store.append(RunStarted(run_id=run_id, session_id=second, provider="p", model="m"))
    store.append(text_delta(run_id))
    sessions = [e.session_id for e in store.list_after(run_id)]
    assert sessions == [first, first, second, second]


def test_run_started_inside_a_batch_applies_to_the_rest_of_that_batch(store: Any) -> None:
    run_id, session_id = uuid.uuid4(), uuid.uuid4()
    other = uuid.uuid4()
    out = store.append_batch(
        [
            text_delta(run_id),
            RunStarted(run_id=run_id, session_id=session_id, provider="p", model="m"),
            text_delta(other),
            text_delta(run_id),
        ]
    )
    assert [e.session_id for e in out] == [None, session_id, None, session_id]
    assert store.append(text_delta(run_id)).session_id == session_id


# --- terminal events -----------------------------------------------------------------------


def test_is_terminal_only_for_completed_failed_and_cancelled(store: Any) -> None:
    run_id = uuid.uuid4()
    for event in all_variants(run_id, uuid.uuid4()):
        envelope = store.append(event)
        assert envelope.is_terminal == (type(event) in TERMINAL), type(event).__name__
    stored = store.list_after(run_id)
    assert {type(e.event) for e in stored if e.is_terminal} == {
        RunCompleted,
        RunFailed,
        RunCancelled,
    }
    assert {type(e.event) for e in stored if not e.is_terminal} == NON_TERMINAL
    assert len(NON_TERMINAL) == 15


def test_events_may_follow_a_terminal_event(store: Any) -> None:
    run_id = uuid.uuid4()
    store.append(RunCancelled(run_id=run_id))
    assert store.append(text_delta(run_id)).seq == 2


# --- round trips ---------------------------------------------------------------------------


def test_factory_builds_each_of_the_18_variants_once() -> None:
    events = all_variants(uuid.uuid4(), uuid.uuid4())
    assert [type(e) for e in events] == list(VARIANTS)
    assert len(set(VARIANTS)) == 18


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda cls: cls.__name__)
def test_every_variant_round_trips_exactly(store: Any, variant: type) -> None:
    run_id, session_id = uuid.uuid4(), uuid.uuid4()
    (event,) = [e for e in all_variants(run_id, session_id) if type(e) is variant]
    written = store.append(event)
    (read,) = store.list_after(run_id)
    assert read == written
    assert read.event == event
    assert type(read.event) is variant
    assert read.event_id == written.event_id
    assert read.emitted_at == written.emitted_at
    assert read.session_id == (session_id if variant is RunStarted else None)


def test_a_run_of_all_variants_round_trips_exactly(store: Any) -> None:
    run_id, session_id = uuid.uuid4(), uuid.uuid4()
    events = all_variants(run_id, session_id)
    written = [store.append(e) for e in events]
    assert store.list_after(run_id) == written
    assert [e.event for e in store.list_after(run_id)] == events


def test_text_with_nul_and_astral_characters_round_trips(store: Any) -> None:
    run_id = uuid.uuid4()
    delta = "a\x00b\U0001f600\u2028\ufeffz"
    written = store.append(TextDelta(run_id=run_id, delta=delta))
    (read,) = store.list_after(run_id)
    assert read == written
    assert read.event.delta == delta


def test_event_timestamp_is_preserved_as_the_same_instant(store: Any) -> None:
    run_id = uuid.uuid4()
    stamp = datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=5)))
    store.append(TextDelta(run_id=run_id, delta="x", timestamp=stamp))
    (read,) = store.list_after(run_id)
    assert read.event.timestamp == stamp
    assert read.event.timestamp.utcoffset() is not None


# --- append_batch --------------------------------------------------------------------------


def test_append_batch_returns_envelopes_in_input_order_with_contiguous_seqs(store: Any) -> None:
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    _fill(store, a, 2)
    order = [a, b, a, c, b, a, c]
    events = [text_delta(r, str(i)) for i, r in enumerate(order)]
    out = store.append_batch(events)
    assert [e.event for e in out] == events
    assert [e.run_id for e in out] == order
    assert [e.seq for e in out if e.run_id == a] == [3, 4, 5]
    assert [e.seq for e in out if e.run_id == b] == [1, 2]
    assert [e.seq for e in out if e.run_id == c] == [1, 2]
    assert store.list_after(a, 2) == [e for e in out if e.run_id == a]
    assert store.list_after(b) == [e for e in out if e.run_id == b]
    assert store.append(text_delta(a)).seq == 6


def test_append_batch_of_nothing_returns_nothing(store: Any) -> None:
    assert store.append_batch([]) == []


def test_append_batch_with_an_invalid_object_stores_nothing(store: Any) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    _fill(store, a, 2)
    with pytest.raises(InvalidEventError):
        store.append_batch([text_delta(a), text_delta(b), {"run_id": a}, text_delta(a)])
    assert _seqs(store.list_after(a)) == [1, 2]
    _assert_nothing_stored(store, b)
    assert store.append(text_delta(a)).seq == 3
    assert store.append(text_delta(b)).seq == 1


def test_append_batch_whose_last_event_is_invalid_stores_nothing(store: Any) -> None:
    run_id = uuid.uuid4()
    with pytest.raises(InvalidEventError):
        store.append_batch([text_delta(run_id), text_delta(run_id), object()])
    _assert_nothing_stored(store, run_id)


def test_append_batch_with_many_events_of_one_run(store: Any) -> None:
    run_id = uuid.uuid4()
    out = store.append_batch([text_delta(run_id, str(i)) for i in range(250)])
    assert _seqs(out) == list(range(1, 251))
    assert store.list_after(run_id, None, 1000) == out


# --- invalid events ------------------------------------------------------------------------


class ForeignEvent(msgspec.Struct, frozen=True, kw_only=True):
    run_id: uuid.UUID
    delta: str


class ForeignTextDelta(
    msgspec.Struct, frozen=True, kw_only=True, tag="TextDelta", tag_field="type"
):
    """Same tag and fields as TextDelta, but not the log's class."""

    run_id: uuid.UUID
    delta: str


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda r: None, id="none"),
        pytest.param(lambda r: "TextDelta", id="str"),
        pytest.param(lambda r: {"type": "TextDelta", "run_id": r, "delta": "x"}, id="dict"),
        pytest.param(lambda r: r, id="uuid"),
        pytest.param(lambda r: Envelope(uuid.uuid4(), 1, r, None, text_delta(r), None), id="env"),
        pytest.param(lambda r: ForeignEvent(run_id=r, delta="x"), id="foreign-struct"),
        pytest.param(lambda r: ForeignTextDelta(run_id=r, delta="x"), id="foreign-same-tag"),
        pytest.param(lambda r: TextDelta, id="class"),
    ],
)
def test_append_of_a_non_event_raises_invalid_event_and_stores_nothing(
    store: Any, make: Any
) -> None:
    run_id = uuid.uuid4()
    with pytest.raises(InvalidEventError) as info:
        store.append(make(run_id))
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, AppendError)
    _assert_nothing_stored(store, run_id)
    assert store.append(text_delta(run_id)).seq == 1


def test_event_whose_run_id_is_not_a_uuid_is_refused(store: Any) -> None:
    run_id = uuid.uuid4()
    with pytest.raises(InvalidEventError):
        store.append(TextDelta(run_id=str(run_id), delta="x"))  # type: ignore[arg-type]
    _assert_nothing_stored(store, run_id)


def test_failed_append_consumes_no_seq(store: Any) -> None:
    run_id = uuid.uuid4()
    _fill(store, run_id, 2)
    with pytest.raises(InvalidEventError):
        store.append(ForeignEvent(run_id=run_id, delta="x"))
    assert store.append(text_delta(run_id)).seq == 3
    assert _seqs(store.list_after(run_id)) == [1, 2, 3]


@pytest.mark.parametrize(
    "delta",
    [
        pytest.param("\ud800", id="lone-surrogate"),
        pytest.param(12345, id="int-for-str"),
        pytest.param(["a"], id="list-for-str"),
    ],
)
def test_unstorable_field_value_is_refused_or_read_back_equal(store: Any, delta: Any) -> None:
    """msgspec does not type-check at construction, so a field can hold what the schema forbids.

    A store may keep it as is (the memory store does) or refuse it with InvalidEventError and
    store nothing; it must never accept it and then fail to read the run back.
    """
    run_id = uuid.uuid4()
    event = TextDelta(run_id=run_id, delta=delta)
    try:
        written = store.append(event)
    except InvalidEventError:
        _assert_nothing_stored(store, run_id)
        assert store.append(text_delta(run_id)).seq == 1
        return
    assert store.list_after(run_id) == [written]


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param(2**64, id="int-beyond-64-bits"),
        pytest.param({1, 2}, id="set"),
        pytest.param(object(), id="object"),
    ],
)
def test_unencodable_tool_arguments_are_refused_or_read_back_equal(
    store: Any, arguments: Any
) -> None:
    run_id = uuid.uuid4()
    call = ToolCall(id="c", name="t", arguments=arguments)
    try:
        written = store.append(ToolCallCompleted(run_id=run_id, call=call))
    except InvalidEventError:
        _assert_nothing_stored(store, run_id)
        return
    assert store.list_after(run_id) == [written]


# --- identity and time ---------------------------------------------------------------------


def test_event_ids_are_uuid7_and_unique(store: Any) -> None:
    runs = [uuid.uuid4() for _ in range(3)]
    written = [store.append(text_delta(runs[i % 3])) for i in range(60)]
    written += store.append_batch([text_delta(runs[i % 3]) for i in range(60)])
    ids = [e.event_id for e in written]
    assert len(set(ids)) == len(ids)
    for event_id in ids:
        assert event_id.version == 7
        assert event_id.variant == uuid.RFC_4122
    stored = [e.event_id for r in runs for e in store.list_after(r)]
    assert sorted(stored) == sorted(ids)


def test_emitted_at_is_timezone_aware_utc(store: Any) -> None:
    run_id = uuid.uuid4()
    written = store.append(text_delta(run_id))
    (read,) = store.list_after(run_id)
    for stamp in (written.emitted_at, read.emitted_at):
        assert stamp.tzinfo is not None
        assert stamp.utcoffset() == timedelta(0)


# --- reopen --------------------------------------------------------------------------------


def test_envelopes_survive_reopen(backend: Any) -> None:
    store = backend.open()
    a, b = uuid.uuid4(), uuid.uuid4()
    written_a = [store.append(e) for e in all_variants(a, uuid.uuid4())]
    written_b = store.append_batch([text_delta(b, str(i)) for i in range(5)])
    store = backend.reopen()
    assert store.list_after(a) == written_a
    assert store.list_after(b) == written_b
    assert store.list_after(b, 3, 1) == written_b[3:4]


def test_appends_after_reopen_continue_at_last_seq_plus_one(backend: Any) -> None:
    store = backend.open()
    run_id, session_id = uuid.uuid4(), uuid.uuid4()
    store.append(RunStarted(run_id=run_id, session_id=session_id, provider="p", model="m"))
    _fill(store, run_id, 3)
    store = backend.reopen()
    after = store.append(text_delta(run_id))
    assert after.seq == 5
    assert after.session_id == session_id
    store = backend.reopen()
    assert _seqs(store.list_after(run_id)) == [1, 2, 3, 4, 5]
    assert store.list_after(run_id, 4) == [after]


def test_unknown_run_is_still_not_found_after_reopen(backend: Any) -> None:
    store = backend.open()
    _fill(store, uuid.uuid4(), 1)
    store = backend.reopen()
    unknown = uuid.uuid4()
    with pytest.raises(NotFoundError) as info:
        store.list_after(unknown)
    assert info.value.run_id == unknown


def test_refused_batch_leaves_nothing_to_find_after_reopen(backend: Any) -> None:
    store = backend.open()
    run_id = uuid.uuid4()
    _fill(store, run_id, 1)
    with pytest.raises(InvalidEventError):
        store.append_batch([text_delta(run_id), 42])
    store = backend.reopen()
    assert _seqs(store.list_after(run_id)) == [1]
    assert store.append(text_delta(run_id)).seq == 2


# --- concurrency ---------------------------------------------------------------------------


def test_concurrent_appends_leave_every_run_gapless(store: Any) -> None:
    threads_n, per_thread = 4, 200
    shared = uuid.uuid4()
    own = [uuid.uuid4() for _ in range(threads_n)]
    results: list[list[Envelope[Any]]] = [[] for _ in range(threads_n)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads_n)

    def work(i: int) -> None:
        try:
            barrier.wait()
            for j in range(per_thread):
                run_id = shared if j % 2 else own[i]
                if j % 10 == 9:
                    results[i].extend(store.append_batch([text_delta(run_id), text_delta(own[i])]))
                else:
                    results[i].append(store.append(text_delta(run_id, f"{i}:{j}")))
        except BaseException as exc:  # surfaced below; a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []

    returned = [e for per in results for e in per]
    for run_id in [shared, *own]:
        mine = sorted(e.seq for e in returned if e.run_id == run_id)
        assert mine == list(range(1, len(mine) + 1))
        stored = store.list_after(run_id, None, 10_000)
        assert _seqs(stored) == mine
        assert sorted(stored, key=lambda e: e.seq) == sorted(
            (e for e in returned if e.run_id == run_id), key=lambda e: e.seq
        )
    for i in range(threads_n):
        seqs = [e.seq for e in results[i] if e.run_id == own[i]]
        assert seqs == list(range(1, len(seqs) + 1))
    assert len({e.event_id for e in returned}) == len(returned)


def test_concurrent_readers_see_a_gapless_prefix_and_never_half_a_batch(store: Any) -> None:
    run_id, batch, batches = uuid.uuid4(), 5, 30
    store.append_batch([text_delta(run_id, "seed") for _ in range(batch)])
    done = threading.Event()
    problems: list[str] = []

    def read() -> None:
        while not done.is_set():
            seqs = _seqs(store.list_after(run_id, None, 10_000))
            if seqs != list(range(1, len(seqs) + 1)):
                problems.append(f"gap or reorder: {seqs[:3]}..{seqs[-3:]}")
            if len(seqs) % batch:
                problems.append(f"saw {len(seqs)} events, not a whole number of batches")

    readers = [threading.Thread(target=read) for _ in range(2)]
    total = batch * (batches + 1)
    for t in readers:
        t.start()
    try:
        for i in range(batches):
            store.append_batch([text_delta(run_id, f"{i}.{j}") for j in range(batch)])
    finally:
        done.set()
        for t in readers:
            t.join()
    assert problems == []
    assert _seqs(store.list_after(run_id, None, 10_000)) == list(range(1, total + 1))
