"""Benchmark inputs: the suite sizes, the generated agent events, and envelope stamping.

Strategy and invariants
- Every contender (segmentlog and each baseline) gets the same events, generated once per
  workload from a fixed seed, so a ratio compares storage work rather than inputs.
- Events look like an agent run: ``RunStarted``, then a mix of text and tool-call deltas, tool
  results and usage records, and ``RunCompleted`` last. Payload sizes vary as they do in
  practice (tens to a few hundred bytes).
- Baselines have no engine to assign ``seq`` and ``session_id``, so ``Stamper`` does the same
  bookkeeping the engine does on append (a per-run counter and the session of ``RunStarted``)
  and builds the Envelope with ``new_event_id()`` and ``utcnow()``. Its cost is part of every
  baseline's measured time, as the engine's is part of segmentlog's.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

from ..events import (
    AgentEvent,
    Envelope,
    ModelStarted,
    RunCompleted,
    RunStarted,
    Success,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallCompleted,
    ToolCallDelta,
    ToolExecutionFinished,
    UsageRecorded,
    new_event_id,
    utcnow,
)

__all__ = [
    "SIZES",
    "Sizes",
    "Stamper",
    "batches_of",
    "envelope_decoder",
    "envelope_encoder",
    "interleave",
    "make_run_events",
    "make_runs",
    "run_ids",
]

_WORDS: Final = (
    "the", "agent", "reads", "file", "and", "calls", "a", "tool", "to", "list", "directory",
    "then", "writes", "summary", "of", "what", "it", "found", "including", "failing", "test",
    "proposed", "patch", "for", "parser",
)  # fmt: skip
_BASE_TIME: Final = datetime(2025, 1, 1, tzinfo=UTC)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big each workload is in one suite (quick, full or tiny)."""

    name: str
    repeat: int
    append_runs: int  # runs interleaved in the non-durable append workloads
    append_per_run: int  # events per run there
    batch_size: int  # events per append_batch / transaction
    durable_events: int  # events in the fsync=always / FULL / fdatasync workloads
    thread_counts: tuple[int, ...]  # group-commit thread counts
    per_thread: int  # events each thread appends in the group-commit workloads
    replay_events: int  # events in the replay store
    replay_run_events: int  # events per run in the replay store
    seek_sizes: tuple[int, ...]  # run lengths for the seek workloads
    seek_probes: int  # list_after calls timed per seek measurement
    kill_runs: int  # runs written before the simulated kill
    kill_events_per_run: int
    open_runs: int  # runs in the directory reopened by the open workload
    new_runs: int  # fresh runs given their first event, fsync="never"
    new_runs_durable: int  # the same under fsync="batch"
    existing_runs: int  # runs that already have events, in the existing-run batch workload
    existing_batches: int  # batches appended to each of them
    scan_segment_bytes: int  # the segment scanned by the recovery-scan workload
    processes: int  # writer processes in the multiprocess workloads
    per_process: int  # events each of them appends (fsync="batch")
    keyed_run_events: int  # events in the run that gets a keyed append after a reopen


#: The suites. ``quick`` is the default of ``segmentlog bench`` (a minute or two on 2 cores).
SIZES: Final = {
    "quick": Sizes(
        name="quick",
        repeat=3,
        append_runs=100,
        append_per_run=100,
        batch_size=100,
        durable_events=1000,
        thread_counts=(1, 4, 16),
        per_thread=30,
        replay_events=100_000,
        replay_run_events=10_000,
        seek_sizes=(1_000, 100_000),
        seek_probes=200,
        kill_runs=1_000,
        kill_events_per_run=3,
        open_runs=10_000,
        new_runs=300,
        new_runs_durable=100,
        existing_runs=10,
        existing_batches=10,
        scan_segment_bytes=64 * 2**20,
        processes=4,
        per_process=300,
        keyed_run_events=100_000,
    ),
    "full": Sizes(
        name="full",
        repeat=5,
        append_runs=100,
        append_per_run=1_000,
        batch_size=100,
        durable_events=2_000,
        thread_counts=(1, 4, 16),
        per_thread=200,
        replay_events=1_000_000,
        replay_run_events=10_000,
        seek_sizes=(1_000, 100_000, 1_000_000),
        seek_probes=1_000,
        kill_runs=1_000,
        kill_events_per_run=10,
        open_runs=100_000,
        new_runs=2_000,
        new_runs_durable=500,
        existing_runs=100,
        existing_batches=10,
        scan_segment_bytes=64 * 2**20,
        processes=4,
        per_process=2_000,
        keyed_run_events=1_000_000,
    ),
    "tiny": Sizes(
        name="tiny",
        repeat=1,
        append_runs=4,
        append_per_run=25,
        batch_size=10,
        durable_events=10,
        thread_counts=(1, 4),
        per_thread=5,
        replay_events=1_000,
        replay_run_events=250,
        seek_sizes=(300, 1_000),
        seek_probes=20,
        kill_runs=10,
        kill_events_per_run=3,
        open_runs=50,
        new_runs=10,
        new_runs_durable=4,
        existing_runs=2,
        existing_batches=2,
        scan_segment_bytes=2**20,
        processes=2,
        per_process=10,
        keyed_run_events=500,
    ),
}


def run_ids(count: int, seed: int) -> list[uuid.UUID]:
    """``count`` distinct run ids, the same for the same seed."""
    rng = random.Random(seed)
    return [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(count)]


def _text(rng: random.Random, low: int, high: int) -> str:
    words = rng.randint(low, high)
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def make_run_events(
    run_id: uuid.UUID, count: int, seed: int, *, start: int = 0, stop: int | None = None
) -> list[AgentEvent]:
    """Events ``start..stop`` of a ``count``-event run (``RunStarted`` first, ``RunCompleted``
    last). Generating a long run slice by slice keeps memory bounded; the slices are
    deterministic but depend on where they start.
    """
    rng = random.Random(seed * 7919 + start)
    events: list[AgentEvent] = []
    step = timedelta(milliseconds=7)
    ts = _BASE_TIME + timedelta(seconds=seed % 100_000) + step * start
    for i in range(start, count if stop is None else min(stop, count)):
        ts += step
        if i == 0:
            events.append(
                RunStarted(
                    run_id=run_id,
                    timestamp=ts,
                    session_id=uuid.UUID(int=rng.getrandbits(128), version=4),
                    provider="openai",
                    model="gpt-4.1-mini",
                )
            )
            continue
        if i == count - 1 and count > 2:
            events.append(
                RunCompleted(run_id=run_id, timestamp=ts, finish_reason="stop", iterations=i)
            )
            continue
        kind = rng.random()
        event: AgentEvent
        if kind < 0.55:
            event = TextDelta(run_id=run_id, timestamp=ts, delta=_text(rng, 1, 12))
        elif kind < 0.70:
            event = ToolCallDelta(
                run_id=run_id, timestamp=ts, call_id=f"call_{i // 10}", delta=_text(rng, 1, 6)
            )
        elif kind < 0.80:
            event = ToolCallCompleted(
                run_id=run_id,
                timestamp=ts,
                call=ToolCall(
                    id=f"call_{i // 10}",
                    name="read_file",
                    arguments={"path": f"src/module_{i % 50}.py", "limit": 200},
                ),
            )
        elif kind < 0.90:
            event = ToolExecutionFinished(
                run_id=run_id,
                timestamp=ts,
                call_id=f"call_{i // 10}",
                tool_name="read_file",
                result=Success(output=_text(rng, 10, 60)),
                duration_ms=rng.randint(1, 900),
            )
        elif kind < 0.95:
            event = UsageRecorded(
                run_id=run_id,
                timestamp=ts,
                usage=TokenUsage(
                    input_tokens=rng.randint(100, 9000),
                    output_tokens=rng.randint(10, 900),
                    total_tokens=rng.randint(110, 9900),
                ),
            )
        else:
            event = ModelStarted(
                run_id=run_id, timestamp=ts, provider="openai", model="gpt-4.1-mini", iteration=i
            )
        events.append(event)
    return events


def make_runs(runs: int, per_run: int, seed: int) -> dict[uuid.UUID, list[AgentEvent]]:
    """``runs`` runs of ``per_run`` events each, keyed by run id."""
    ids = run_ids(runs, seed)
    return {rid: make_run_events(rid, per_run, seed * 1_000_003 + n) for n, rid in enumerate(ids)}


def interleave(runs: dict[uuid.UUID, list[AgentEvent]]) -> list[AgentEvent]:
    """One event of each run in turn, as concurrent runs would append them."""
    out: list[AgentEvent] = []
    lists = list(runs.values())
    longest = max((len(x) for x in lists), default=0)
    for i in range(longest):
        out.extend(events[i] for events in lists if i < len(events))
    return out


def batches_of(runs: dict[uuid.UUID, list[AgentEvent]], size: int) -> list[list[AgentEvent]]:
    """Batches of up to ``size`` events of one run each, runs taking turns."""
    per_run = [
        [events[i : i + size] for i in range(0, len(events), size)] for events in runs.values()
    ]
    out: list[list[AgentEvent]] = []
    longest = max((len(x) for x in per_run), default=0)
    for i in range(longest):
        out.extend(chunks[i] for chunks in per_run if i < len(chunks))
    return out


class Stamper:
    """Assigns seq, session and identity to events as the engine does on append."""

    __slots__ = ("_last", "_session")

    def __init__(self) -> None:
        self._last: dict[uuid.UUID, int] = {}
        self._session: dict[uuid.UUID, uuid.UUID] = {}

    def stamp(self, event: Any) -> Envelope[Any]:
        """Return the envelope the next append of ``event`` to its run would store."""
        run_id: uuid.UUID = event.run_id
        seq = self._last.get(run_id, 0) + 1
        self._last[run_id] = seq
        if type(event) is RunStarted:
            self._session[run_id] = event.session_id
        return Envelope(new_event_id(), seq, run_id, self._session.get(run_id), event, utcnow())

    def stamp_all(self, events: list[Any]) -> Iterator[Envelope[Any]]:
        """Stamp several events in order."""
        stamp = self.stamp
        for event in events:
            yield stamp(event)


def envelope_encoder() -> msgspec.msgpack.Encoder:
    """The payload encoder the engine uses (UUIDs as 16 raw bytes)."""
    return msgspec.msgpack.Encoder(uuid_format="bytes")


def envelope_decoder() -> msgspec.msgpack.Decoder[Envelope[Any]]:
    """A decoder of stored payloads into ``Envelope[AgentEvent]``."""
    return msgspec.msgpack.Decoder(Envelope[AgentEvent])
