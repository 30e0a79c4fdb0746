"""PostgresEventStore.subscribe: replay, then follow through LISTEN/NOTIFY, stop at the end."""

from __future__ import annotations

import random
import threading
import uuid
from typing import Any

import pytest

from segmentlog import Envelope, RunCompleted, RunFailed
from segmentlog.postgres import PostgresEventStore
from tests.conformance.events_factory import text_delta

pytestmark = pytest.mark.postgres


def _collect(store: PostgresEventStore, run_id: uuid.UUID, after: int | None, **kw: Any) -> Any:
    out: list[Envelope[Any]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.extend(store.subscribe(run_id, after, **kw))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out, errors


def test_subscribers_joining_mid_stream_see_every_seq_once_through_the_terminal(
    store: PostgresEventStore,
) -> None:
    run_id = uuid.uuid4()
    store.append_batch([text_delta(run_id, str(i)) for i in range(30)])
    rng = random.Random(7)
    started = [_collect(store, run_id, after, poll_interval=0.2) for after in (None, 0, 10, 30)]
    for i in range(60):
        size = rng.randint(1, 4)
        store.append_batch([text_delta(run_id, f"{i}.{k}") for k in range(size)])
        if i in (5, 20, 40):  # subscribers joining while events keep arriving
            started.append(_collect(store, run_id, store.last_seq(run_id), poll_interval=0.2))
    last = store.append(RunCompleted(run_id=run_id, finish_reason="stop", iterations=1))
    store.append(text_delta(run_id, "after the end"))
    stored = store.list_after(run_id, None, 10_000)
    for thread, out, errors in started:
        thread.join(30)
        assert not thread.is_alive()
        assert errors == []
        first = out[0].seq
        assert [e.seq for e in out] == list(range(first, last.seq + 1))
        assert out == stored[first - 1 : last.seq]
        assert out[-1].is_terminal


def test_resubscribing_with_the_last_seq_seen_resumes_exactly_after_it(
    store: PostgresEventStore,
) -> None:
    run_id = uuid.uuid4()
    written = store.append_batch([text_delta(run_id, str(i)) for i in range(12)])
    written.append(store.append(RunFailed(run_id=run_id, error="boom")))
    seen: list[Envelope[Any]] = []
    after = None
    while not (seen and seen[-1].is_terminal):
        subscription = store.subscribe(run_id, after, page_size=3)
        for envelope in subscription:
            seen.append(envelope)
            if envelope.seq % 5 == 0:
                break  # the consumer drops its connection here
        after = seen[-1].seq
    assert seen == written


def test_subscription_ending_at_or_before_after_seq_yields_nothing(
    store: PostgresEventStore,
) -> None:
    run_id = uuid.uuid4()
    store.append(text_delta(run_id))
    terminal = store.append(RunCompleted(run_id=run_id, finish_reason="stop", iterations=1))
    store.append(text_delta(run_id))
    assert list(store.subscribe(run_id, terminal.seq)) == []
    assert list(store.subscribe(run_id, terminal.seq + 1)) == []
    assert [e.seq for e in store.subscribe(run_id)] == [1, 2]


def test_subscribing_before_the_run_exists_waits_for_its_events(
    store: PostgresEventStore,
) -> None:
    run_id = uuid.uuid4()
    thread, out, errors = _collect(store, run_id, None, poll_interval=0.2)
    written = [store.append(text_delta(run_id, str(i))) for i in range(3)]
    written.append(store.append(RunCompleted(run_id=run_id, finish_reason="stop", iterations=1)))
    thread.join(30)
    assert errors == []
    assert out == written


def test_a_commit_wakes_a_follower_without_waiting_for_the_poll(
    store: PostgresEventStore,
) -> None:
    run_id = uuid.uuid4()
    first = store.append(text_delta(run_id))
    caught_up = threading.Event()
    woken = threading.Event()
    out: list[Envelope[Any]] = []

    def follow() -> None:
        for envelope in store.subscribe(run_id, poll_interval=3600):
            out.append(envelope)
            (woken if envelope.seq > 1 else caught_up).set()
            if envelope.seq == 2:
                return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    assert caught_up.wait(10)
    second = store.append(text_delta(run_id))
    assert woken.wait(10), "the NOTIFY never woke the subscriber"
    thread.join(10)
    assert out == [first, second]


def test_subscribe_checks_its_arguments_before_iterating(store: PostgresEventStore) -> None:
    with pytest.raises(ValueError):
        store.subscribe(uuid.uuid4(), -1)
    with pytest.raises(ValueError):
        store.subscribe(uuid.uuid4(), poll_interval=0)
    with pytest.raises(ValueError):
        store.subscribe(uuid.uuid4(), page_size=0)
    with pytest.raises(TypeError):
        store.subscribe("not a uuid")  # type: ignore[arg-type]
