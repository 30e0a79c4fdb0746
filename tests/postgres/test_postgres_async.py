"""AsyncPostgresEventStore: the same contract and guarantees as the sync store, with await."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from contextlib import aclosing
from typing import Any, TypeVar

import pytest
from psycopg_pool import AsyncConnectionPool

from segmentlog import (
    Envelope,
    InvalidEventError,
    LogClosedError,
    NotFoundError,
    RunCompleted,
    RunStarted,
)
from segmentlog.postgres import (
    AsyncPostgresEventStore,
    PostgresEventStore,
    PostgresUnavailableError,
    SchemaMissingError,
)
from tests.conformance.events_factory import all_variants, text_delta

pytestmark = pytest.mark.postgres

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def test_async_store_appends_and_reads_what_the_sync_store_reads(dsn: str, schema: str) -> None:
    a, b, session = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    async def scenario() -> list[Envelope[Any]]:
        async with AsyncPostgresEventStore(dsn, schema=schema) as store:
            await store.create_schema()
            await store.create_schema()
            written = [await store.append(e) for e in all_variants(a, session)]
            written += await store.append_batch(
                [
                    text_delta(b),
                    text_delta(a),
                    RunStarted(run_id=b, session_id=session, provider="p", model="m"),
                ]
            )
            assert await store.list_after(a) == [e for e in written if e.run_id == a]
            assert await store.list_after(a, 3, 2) == [e for e in written if e.run_id == a][3:5]
            assert await store.last_seq(b) == 2
            assert await store.runs() == sorted([a, b])
            with pytest.raises(NotFoundError):
                await store.list_after(uuid.uuid4())
            with pytest.raises(InvalidEventError):
                await store.append_batch([text_delta(a), "nope"])
            assert await store.append_batch([]) == []
            return written

    written = run(scenario())
    with PostgresEventStore(dsn, schema=schema) as sync_store:
        assert sync_store.list_after(a) + sync_store.list_after(b) == sorted(
            written, key=lambda e: (e.run_id != a, e.seq)
        )
    assert [e.session_id for e in written[-3:]] == [None, session, session]


def test_async_concurrent_appends_on_one_run_are_gapless(dsn: str, schema: str) -> None:
    run_id = uuid.uuid4()

    async def scenario() -> list[int]:
        async with AsyncPostgresEventStore(dsn, schema=schema) as store:
            await store.create_schema()

            async def worker(w: int) -> list[int]:
                return [(await store.append(text_delta(run_id, f"{w}:{i}"))).seq for i in range(40)]

            seqs = await asyncio.gather(*(worker(w) for w in range(6)))
            assert [e.seq for e in await store.list_after(run_id)] == list(range(1, 241))
            return sorted(s for per in seqs for s in per)

    assert run(scenario()) == list(range(1, 241))


def test_async_subscribe_replays_then_follows_to_the_terminal(dsn: str, schema: str) -> None:
    run_id = uuid.uuid4()

    async def scenario() -> None:
        async with AsyncPostgresEventStore(dsn, schema=schema) as store:
            await store.create_schema()
            early = await store.append_batch([text_delta(run_id, str(i)) for i in range(5)])

            async def consume() -> list[Envelope[Any]]:
                return [e async for e in store.subscribe(run_id, 2, poll_interval=0.2)]

            consumer = asyncio.create_task(consume())
            late = []
            for i in range(20):
                late.append(await store.append(text_delta(run_id, f"late {i}")))
                await asyncio.sleep(0)
            late.append(
                await store.append(RunCompleted(run_id=run_id, finish_reason="stop", iterations=1))
            )
            got = await asyncio.wait_for(consumer, 30)
            assert got == early[2:] + late

            async with aclosing(store.subscribe(run_id)) as again:
                async for envelope in again:
                    assert envelope.seq == 1
                    break

    run(scenario())


def test_async_store_over_a_pool(dsn: str, schema: str) -> None:
    async def scenario() -> None:
        async with AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False) as pool:
            store: AsyncPostgresEventStore[Any] = AsyncPostgresEventStore(pool, schema=schema)
            with pytest.raises(SchemaMissingError):
                await store.append(text_delta(uuid.uuid4()))
            await store.create_schema()
            run_id = uuid.uuid4()
            written = await store.append_batch([text_delta(run_id) for _ in range(3)])
            assert await store.list_after(run_id) == written
            await store.close()
            with pytest.raises(LogClosedError):
                await store.list_after(run_id)
            stats = pool.get_stats()
            assert stats["pool_available"] == stats["pool_size"]

    run(scenario())


def test_async_unreachable_server_is_a_clear_unavailable_error(tmp_path: object) -> None:
    async def scenario() -> None:
        async with AsyncPostgresEventStore(f"host={tmp_path} port=1", connect_timeout=2) as store:
            with pytest.raises(PostgresUnavailableError) as info:
                await store.append(text_delta(uuid.uuid4()))
            assert "cannot connect to PostgreSQL" in str(info.value)

    run(scenario())
