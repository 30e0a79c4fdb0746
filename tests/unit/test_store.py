"""Tests for segmentlog.store: the EventStore Protocol and ``check_page_args``."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from segmentlog import DEFAULT_PAGE_LIMIT, EventStore, FailingEventStore, MemoryEventStore
from segmentlog.store import check_page_args

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
