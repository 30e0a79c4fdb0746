"""The PostgreSQL stores' plans, with no server: steps out, results in.

Every operation of both stores is a plan (``segmentlog/postgres/_plans.py``), so what an
operation sends, in which order, and what it makes of each answer (or failure) is tested
here by playing the server's part. The drivers that carry steps out on real connections are
covered by the other modules of this folder.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
import pytest

from segmentlog import (
    AgentEvent,
    AppendError,
    IdempotencyConflictError,
    InvalidEventError,
    InvalidKeyError,
    RunCompleted,
    SeqConflictError,
)
from segmentlog.postgres import (
    AppendOutcomeUnknownError,
    PostgresStoreError,
    PostgresUnavailableError,
    SchemaMissingError,
)
from segmentlog.postgres._plans import (
    Emit,
    Failed,
    Listen,
    Plan,
    Plans,
    Query,
    Reconnect,
    Step,
    Stepper,
    Transaction,
    WaitForNotify,
)
from tests.conformance.events_factory import text_delta

SCHEMA = "plans"


@pytest.fixture
def plans() -> Plans[Any]:
    return Plans(AgentEvent, SCHEMA, 1 << 20)


Server = Callable[[Step], Any]


def play(plan: Plan[Any], server: Server) -> tuple[list[Step], Any]:
    """Carry ``plan`` out against ``server`` (a step's result, or an exception to throw in);
    return every step it took, sub-plans' steps included, and its result."""
    steps: list[Step] = []

    def walk(plan: Plan[Any]) -> Any:
        stepper = Stepper(plan)
        while (step := stepper.next()) is not None:
            steps.append(step)
            try:
                if isinstance(step, Transaction):
                    stepper.done(walk(step.plan))
                else:
                    answer = server(step)
                    if isinstance(answer, BaseException):
                        raise answer
                    stepper.done(answer)
            except Exception as exc:
                stepper.fail(exc)
        return stepper.result

    return steps, walk(plan)


def appended(last_seq: int, session: uuid.UUID | None = None) -> list[tuple[Any, ...]]:
    return [("appended", last_seq, session, None, None, None, None, None, None)]


def held_rows(event: Any, seq: int, key: str) -> tuple[Any, ...]:
    emitted = datetime(2025, 1, 1)
    encoded = Plans(AgentEvent, SCHEMA, 1 << 20).rows.encode_event(event)
    return ("held", None, None, seq, uuid.uuid4(), None, emitted, encoded, key)


def queries(steps: list[Step]) -> list[Query]:
    return [step for step in steps if isinstance(step, Query)]


def server_error(sqlstate_class: type[psycopg.Error] = psycopg.errors.UndefinedTable) -> Failed:
    return Failed(sqlstate_class("boom"), broken=False)


# --- appends ---------------------------------------------------------------------------------


def test_an_append_of_one_run_is_one_statement_in_one_round_trip(plans: Plans[Any]) -> None:
    event = text_delta(uuid.uuid4())
    steps, result = play(plans.append_batch([event], ["k"], 0), lambda step: appended(1))
    transaction, query = steps
    assert isinstance(transaction, Transaction) and transaction.single_statement
    assert isinstance(query, Query) and query.statement is plans.sql.append
    assert query.params is not None and query.params[-2:] == (["k"], 0)
    assert [(e.seq, e.key, e.event) for e in result] == [(1, "k", event)]


def test_an_unkeyed_append_sends_no_keys(plans: Plans[Any]) -> None:
    run_id = uuid.uuid4()
    steps, _ = play(plans.append_batch([text_delta(run_id)], None, None), lambda s: appended(4))
    (query,) = queries(steps)
    assert query.params is not None and query.params[-2:] == (None, None)
    steps, _ = play(
        plans.append_batch([text_delta(run_id)] * 2, [None, None], None), lambda s: appended(6)
    )
    (query,) = queries(steps)
    assert query.params is not None and query.params[-2] is None


def test_a_batch_over_runs_is_one_transaction_with_a_statement_per_run_in_run_order(
    plans: Plans[Any],
) -> None:
    runs = sorted(uuid.uuid4() for _ in range(3))
    events = [text_delta(runs[i]) for i in (2, 0, 1, 0)]
    steps, result = play(
        plans.append_batch(events, ["c", "a1", "b", "a2"], None), lambda step: appended(7)
    )
    assert isinstance(steps[0], Transaction) and not steps[0].single_statement
    sent = queries(steps)
    assert [q.params[0] for q in sent if q.params] == runs
    assert [q.params[6] for q in sent if q.params] == [["a1", "a2"], ["b"], ["c"]]
    assert [(e.run_id, e.seq, e.key) for e in result] == [
        (runs[2], 7, "c"),
        (runs[0], 6, "a1"),
        (runs[1], 7, "b"),
        (runs[0], 7, "a2"),
    ]


def test_every_argument_is_checked_when_the_plan_is_made(plans: Plans[Any]) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    with pytest.raises(InvalidKeyError):
        plans.append_batch([text_delta(a)], [""], None)
    with pytest.raises(ValueError, match="twice"):
        plans.append_batch([text_delta(a), text_delta(b)], ["k", "k"], None)
    with pytest.raises(InvalidEventError):
        plans.append_batch([text_delta(a), "nope"], None, None)
    with pytest.raises(ValueError, match="runs"):
        plans.append_batch([text_delta(a), text_delta(b)], None, 0)


def test_an_empty_batch_takes_no_step(plans: Plans[Any]) -> None:
    assert play(plans.append_batch([], [], 3), lambda step: pytest.fail("no step")) == ([], [])


def test_held_keys_come_back_as_the_stored_envelopes_in_input_order(plans: Plans[Any]) -> None:
    run_id = uuid.uuid4()
    events = [text_delta(run_id, "a"), text_delta(run_id, "b")]
    rows = [held_rows(events[1], 2, "b"), held_rows(events[0], 1, "a")]
    _, result = play(plans.append_batch(events, ["a", "b"], 9), lambda step: rows)
    assert [(e.seq, e.key, e.event) for e in result] == [(1, "a", events[0]), (2, "b", events[1])]


def test_a_held_key_for_another_event_raises_inside_the_transaction(plans: Plans[Any]) -> None:
    run_id = uuid.uuid4()
    rows = [held_rows(text_delta(run_id, "stored"), 3, "k")]
    plan = plans.append_batch([text_delta(run_id, "other")], ["k"], None)
    with pytest.raises(IdempotencyConflictError) as info:
        play(plan, lambda step: rows)
    assert (info.value.key, info.value.seq) == ("k", 3)


def test_a_run_holding_a_key_while_another_appended_raises_so_the_transaction_rolls_back(
    plans: Plans[Any],
) -> None:
    a, b = sorted(uuid.uuid4() for _ in range(2))
    events = [text_delta(a, "new"), text_delta(b, "held")]
    answers = iter([appended(1), [held_rows(events[1], 1, "held")]])
    steps: list[Step] = []

    def server(step: Step) -> Any:
        steps.append(step)
        return next(answers)

    with pytest.raises(IdempotencyConflictError, match="mixes"):
        play(plans.append_batch(events, ["new", "held"], None), server)
    assert len(steps) == 2  # both statements ran in the transaction the error rolls back


def test_a_seq_conflict_answer_is_a_seq_conflict_error(plans: Plans[Any]) -> None:
    run_id = uuid.uuid4()
    answer = [("seq_conflict", 5, None, None, None, None, None, None, None)]
    with pytest.raises(SeqConflictError) as info:
        play(plans.append_batch([text_delta(run_id)], None, 2), lambda step: answer)
    assert (info.value.run_id, info.value.expected, info.value.actual) == (run_id, 2, 5)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (psycopg.errors.UndefinedTable, SchemaMissingError),
        (psycopg.errors.AdminShutdown, PostgresUnavailableError),
        (psycopg.errors.CheckViolation, AppendError),
    ],
)
def test_a_refused_append_on_a_live_connection_is_an_append_error(
    plans: Plans[Any], error: type[psycopg.Error], expected: type[AppendError]
) -> None:
    plan = plans.append_batch([text_delta(uuid.uuid4())], None, None)
    with pytest.raises(expected) as info:
        play(plan, lambda step: server_error(error))
    assert type(info.value) is expected
    assert isinstance(info.value.__cause__, error)


def test_a_lost_append_reconnects_and_returns_what_the_server_stored(plans: Plans[Any]) -> None:
    run_id = uuid.uuid4()
    event = text_delta(run_id)
    lost = Failed(psycopg.OperationalError("gone"), broken=True)
    answers: list[Any] = [lost]

    def server(step: Step) -> Any:
        if isinstance(step, Query) and step.statement is plans.sql.settle_find:
            (event_id,) = step.params[1] if step.params else [None]
            return [(4, event_id, None, datetime(2025, 1, 1), encoded, "k")]
        return answers.pop() if answers else []

    encoded = plans.rows.encode_event(event)
    steps, result = play(plans.append_batch([event], ["k"], None), server)
    kinds = [type(step).__name__ for step in steps]
    assert kinds[:3] == ["Transaction", "Query", "Reconnect"]
    settle = steps[3]
    assert isinstance(settle, Transaction) and settle.force_rollback
    assert [(e.seq, e.key) for e in result] == [(4, "k")]


def test_a_lost_append_that_was_not_stored_is_unavailable(plans: Plans[Any]) -> None:
    answers: list[Any] = [Failed(psycopg.OperationalError("gone"), broken=True)]
    plan = plans.append_batch([text_delta(uuid.uuid4())], None, None)
    with pytest.raises(PostgresUnavailableError, match="nothing was stored"):
        play(plan, lambda step: answers.pop() if answers else [])


def test_a_lost_append_that_cannot_be_checked_has_an_unknown_outcome(plans: Plans[Any]) -> None:
    event = text_delta(uuid.uuid4())

    def server(step: Step) -> Any:
        if isinstance(step, Reconnect):
            return None
        if isinstance(step, Query) and step.statement is plans.sql.append:
            return Failed(psycopg.OperationalError("gone"), broken=True)
        return PostgresUnavailableError("still down")

    with pytest.raises(AppendOutcomeUnknownError) as info:
        play(plans.append_batch([event], None, None), server)
    assert info.value.run_ids == [event.run_id]
    assert len(info.value.event_ids) == 1


# --- reads -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (psycopg.errors.InvalidSchemaName, SchemaMissingError),
        (psycopg.errors.UndefinedFunction, PostgresStoreError),
    ],
)
def test_reads_turn_server_errors_into_store_errors(
    plans: Plans[Any], error: type[psycopg.Error], expected: type[PostgresStoreError]
) -> None:
    with pytest.raises(expected) as info:
        play(plans.runs(), lambda step: server_error(error))
    assert type(info.value) is expected
    broken = Failed(psycopg.OperationalError("gone"), broken=True)
    with pytest.raises(PostgresUnavailableError):
        play(plans.last_seq(uuid.uuid4()), lambda step: broken)


def test_follow_listens_before_it_reads_and_waits_only_after_a_short_page(
    plans: Plans[Any],
) -> None:
    run_id = uuid.uuid4()
    encode = plans.rows.encode_event
    stamp = datetime(2025, 1, 1)

    def row(seq: int, event: Any) -> tuple[Any, ...]:
        return (seq, uuid.uuid4(), None, stamp, encode(event), None)

    done = RunCompleted(run_id=run_id, finish_reason="stop", iterations=1)
    pages = iter(
        [
            [row(2, text_delta(run_id)), row(3, text_delta(run_id))],  # a full page
            [row(4, text_delta(run_id))],  # a short one: then wait
            [row(5, done), row(6, text_delta(run_id))],  # stops at the terminal event
        ]
    )

    def server(step: Step) -> Any:
        if isinstance(step, Query) and step.statement is plans.sql.page:
            return next(pages)
        return [] if isinstance(step, Query) else None

    steps, _ = play(plans.follow(run_id, 1, 0.5, 2), server)
    kinds = [type(step).__name__ for step in steps]
    assert kinds == [
        "Listen",
        "Query",  # the terminal seq
        "Query",
        "Emit",
        "Emit",
        "Query",
        "Emit",
        "WaitForNotify",
        "Query",
        "Emit",
    ]
    assert isinstance(steps[0], Listen)
    waits = [step for step in steps if isinstance(step, WaitForNotify)]
    assert waits == [WaitForNotify(0.5)]
    assert [step.envelope.seq for step in steps if isinstance(step, Emit)] == [2, 3, 4, 5]


def test_follow_stops_at_once_when_the_terminal_event_was_already_seen(
    plans: Plans[Any],
) -> None:
    steps, _ = play(plans.follow(uuid.uuid4(), 5, 1.0, 10), lambda step: [(5,)])
    assert [type(step).__name__ for step in steps] == ["Listen", "Query"]


def test_follow_checks_its_arguments_when_made(plans: Plans[Any]) -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        plans.follow(uuid.uuid4(), None, 0, 10)
    with pytest.raises(ValueError):
        plans.follow(uuid.uuid4(), -1, 1.0, 10)
