"""Idempotent and conditional appends under concurrency, on every backend that implements
them: every backend.

Writers are threads sharing one store; on PostgreSQL each thread's call runs on a
connection of its own (the store lends one per call), so the races are between connections.
Hypothesis draws what each writer retries; the threads' scheduler draws the interleaving.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segmentlog import Envelope, IdempotencyConflictError, SeqConflictError, TextDelta
from tests.conformance.events_factory import text_delta

KEYS = 6
STAMP = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def _race(jobs: list[Callable[[], Any]], allowed: tuple[type[Exception], ...] = ()) -> list[Any]:
    """Run each job in a thread of its own, all released at once; return what each returned,
    or the ``allowed`` exception it raised. Any other error fails the test."""
    barrier = threading.Barrier(len(jobs))
    outcomes: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def start(i: int) -> None:
        try:
            barrier.wait()
            outcomes[i] = jobs[i]()
        except allowed as exc:
            outcomes[i] = exc
        except BaseException as exc:  # surfaced below; a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a writer hung"
    if errors:
        raise errors[0]
    return outcomes


_key = st.integers(min_value=0, max_value=KEYS - 1)
_attempt = st.one_of(
    st.tuples(st.just("append"), _key.map(lambda k: [k])),
    st.tuples(st.just("batch"), st.lists(_key, min_size=1, max_size=3, unique=True)),
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    writers=st.lists(st.lists(_attempt, min_size=1, max_size=6), min_size=2, max_size=4),
    run_count=st.integers(min_value=1, max_value=2),
)
def test_any_interleaving_of_concurrent_retries_stores_each_key_exactly_once(
    backend: Any, writers: list[list[tuple[str, list[int]]]], run_count: int
) -> None:
    store = backend.open()
    runs = [uuid.uuid4() for _ in range(run_count)]
    # One event per key, built once: a retry must send the very same event.
    events = [
        TextDelta(run_id=runs[k % run_count], delta=f"k{k}", timestamp=STAMP) for k in range(KEYS)
    ]

    def writer(attempts: list[tuple[str, list[int]]]) -> Callable[[], list[Any]]:
        def work() -> list[tuple[int, Envelope[Any]]]:
            got: list[tuple[int, Envelope[Any]]] = []
            for kind, keys in attempts:
                if kind == "append":
                    (k,) = keys
                    got.append((k, store.append(events[k], key=f"k{k}")))
                    continue
                try:
                    batch = store.append_batch(
                        [events[k] for k in keys], keys=[f"k{k}" for k in keys]
                    )
                except IdempotencyConflictError:
                    continue  # it mixed keys stored by then with new ones: legal
                got.extend(zip(keys, batch, strict=True))
            return got

        return work

    seen = [pair for got in _race([writer(a) for a in writers]) for pair in got]
    used = sorted({k for attempts in writers for _, keys in attempts for k in keys})
    for k in used:  # settle every key a conflicting batch may have left unstored
        seen.append((k, store.append(events[k], key=f"k{k}")))
    by_key: dict[str, Envelope[Any]] = {}
    for run_id in {events[k].run_id for k in used}:
        envelopes = store.list_after(run_id)
        assert [e.seq for e in envelopes] == list(range(1, len(envelopes) + 1))
        keys = [e.key for e in envelopes]
        assert len(keys) == len(set(keys)), f"a key stored twice in run {run_id}: {keys}"
        by_key.update((e.key, e) for e in envelopes if e.key is not None)
    assert sorted(by_key) == sorted(f"k{k}" for k in used)
    for k, envelope in seen:
        assert envelope == by_key[f"k{k}"]
        assert envelope.event == events[k]


def test_concurrent_first_appends_of_one_key_store_it_once(store: Any) -> None:
    for _ in range(10):
        event = text_delta(uuid.uuid4(), "first")
        got = _race([partial(store.append, event, key="only-once")] * 6)
        assert len({(e.seq, e.event_id) for e in got}) == 1
        assert store.list_after(event.run_id) == got[:1]


@pytest.mark.parametrize("keyed", [False, True], ids=["unkeyed", "keyed"])
def test_expected_seq_has_exactly_one_winner_among_concurrent_writers(
    store: Any, keyed: bool
) -> None:
    writers, rounds = 6, 8
    run_id = uuid.uuid4()
    winners: list[Envelope[Any]] = []
    for r in range(rounds):
        last = r  # round 0 races to create the run (expected_seq=0)
        outcomes = _race(
            [
                partial(
                    store.append,
                    text_delta(run_id, f"{r}:{i}"),
                    key=f"{r}:{i}" if keyed else None,
                    expected_seq=last,
                )
                for i in range(writers)
            ],
            allowed=(SeqConflictError,),
        )
        won = [o for o in outcomes if isinstance(o, Envelope)]
        lost = [o for o in outcomes if isinstance(o, SeqConflictError)]
        assert len(won) == 1, f"round {r}: {len(won)} winners"
        assert {(e.expected, e.actual) for e in lost} == {(last, last + 1)}
        assert len(lost) == writers - 1
        assert won[0].seq == last + 1
        winners.extend(won)
    assert store.list_after(run_id) == winners
    if keyed:  # a loser's key was never stored, so it is free
        loser = next(f"0:{i}" for i in range(writers) if f"0:{i}" != winners[0].key)
        assert store.append(text_delta(run_id), key=loser).seq == rounds + 1
