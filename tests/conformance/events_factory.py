"""Factories and Hypothesis strategies for the 18 agent-event variants.

Strategy and invariants
- ``all_variants(run_id, session_id)`` builds one valid instance of every variant, in the order
  of ``VARIANTS`` (``RunStarted`` first, so a run replayed from it has a session).
- ``st_event(run_id)`` draws any variant with arbitrary field values that every backend must
  store and read back *equal*: text without lone surrogates (UTF-8 cannot carry them), integers
  in the signed 64-bit range, finite floats, timezone-aware timestamps at whole-minute UTC
  offsets, and ``Any`` fields restricted to JSON values (``None``, bools, ints, floats, strings,
  lists, string-keyed dicts). Text may contain NUL and characters outside the BMP.
- Other test modules import from here; keep the names below stable.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from segmentlog import (
    AssistantMessageCommitted,
    CacheMetrics,
    CompactionCircuitOpened,
    ContextBuilt,
    DoomLoopDetected,
    Failure,
    FinishReason,
    ModelStarted,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunStarted,
    Success,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallCompleted,
    ToolCallDelta,
    ToolCallStarted,
    ToolExecutionFinished,
    ToolExecutionStarted,
    ToolMessageCommitted,
    UsageRecorded,
)

__all__ = [
    "NON_TERMINAL",
    "TERMINAL",
    "VARIANTS",
    "all_variants",
    "st_event",
    "st_json",
    "st_text",
    "st_timestamp",
    "text_delta",
]

#: Every variant class of ``AgentEvent``, in the order ``all_variants`` builds them.
VARIANTS: tuple[type, ...] = (
    RunStarted,
    ContextBuilt,
    ModelStarted,
    TextDelta,
    ToolCallStarted,
    ToolCallDelta,
    ToolCallCompleted,
    ToolExecutionStarted,
    ToolExecutionFinished,
    AssistantMessageCommitted,
    ToolMessageCommitted,
    UsageRecorded,
    CacheMetrics,
    DoomLoopDetected,
    CompactionCircuitOpened,
    RunCompleted,
    RunFailed,
    RunCancelled,
)

TERMINAL: frozenset[type] = frozenset({RunCompleted, RunFailed, RunCancelled})
NON_TERMINAL: frozenset[type] = frozenset(VARIANTS) - TERMINAL

_TS = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def all_variants(run_id: uuid.UUID, session_id: uuid.UUID) -> list[Any]:
    """One valid instance of each of the 18 variants, for ``run_id``, ``RunStarted`` first."""
    call = ToolCall(id="call_1", name="search", arguments={"q": "segment logs", "k": [1, 2.5]})
    return [
        RunStarted(run_id=run_id, session_id=session_id, provider="acme", model="m-1"),
        ContextBuilt(run_id=run_id, message_count=7),
        ModelStarted(run_id=run_id, provider="acme", model="m-1", iteration=1),
        TextDelta(run_id=run_id, delta="héllo \U0001f600"),
        ToolCallStarted(run_id=run_id, call_id="call_1", tool_name="search"),
        ToolCallDelta(run_id=run_id, call_id="call_1", delta='{"q": "seg'),
        ToolCallCompleted(run_id=run_id, call=call),
        ToolExecutionStarted(run_id=run_id, call_id="call_1", tool_name="search"),
        ToolExecutionFinished(
            run_id=run_id,
            call_id="call_1",
            tool_name="search",
            result=Success(output={"hits": [{"id": 1, "score": 0.5}], "more": None}),
            duration_ms=12,
        ),
        AssistantMessageCommitted(run_id=run_id, message_id=uuid.uuid4()),
        ToolMessageCommitted(run_id=run_id, message_id=uuid.uuid4(), timestamp=_TS),
        UsageRecorded(
            run_id=run_id,
            usage=TokenUsage(
                input_tokens=100, output_tokens=20, total_tokens=120, cache_read_input_tokens=5
            ),
        ),
        CacheMetrics(
            run_id=run_id,
            cache_creation_input_tokens=1,
            cache_read_input_tokens=2,
            cached_input_tokens=3,
        ),
        DoomLoopDetected(run_id=run_id, description="same tool call three times"),
        CompactionCircuitOpened(run_id=run_id, consecutive_failures=3),
        RunCompleted(run_id=run_id, finish_reason=FinishReason.STOP, iterations=2),
        RunFailed(run_id=run_id, error="provider timed out"),
        RunCancelled(run_id=run_id),
    ]


def text_delta(run_id: uuid.UUID, delta: str = "x") -> TextDelta:
    """A small non-terminal event, for tests that only care about seqs."""
    return TextDelta(run_id=run_id, delta=delta)


# --- Hypothesis strategies ----------------------------------------------------------------

_INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def st_text(max_size: int = 20) -> st.SearchStrategy[str]:
    """Any UTF-8-encodable text (no lone surrogates), NUL and astral characters included."""
    return st.text(st.characters(exclude_categories=("Cs",)), max_size=max_size)


def st_json() -> st.SearchStrategy[Any]:
    """A JSON value: what ``ToolCall.arguments`` and ``Success.output`` may hold."""
    scalars = (
        st.none()
        | st.booleans()
        | _INT64
        | st.floats(allow_nan=False, allow_infinity=False)
        | st_text()
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st_text(max_size=8), inner, max_size=4)
        ),
        max_leaves=8,
    )


def st_timestamp() -> st.SearchStrategy[datetime]:
    """A timezone-aware datetime (UTC or a whole-minute offset), microsecond precision."""
    offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
        lambda minutes: timezone(timedelta(minutes=minutes))
    )
    return st.datetimes(
        min_value=datetime(1971, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.just(UTC) | offsets,
    )


def _variant_strategies(
    run_id: st.SearchStrategy[uuid.UUID],
) -> list[st.SearchStrategy[Any]]:
    text = st_text()
    ts = st_timestamp()
    uid = st.uuids()
    optional_int = st.none() | _INT64
    call = st.builds(ToolCall, id=text, name=text, arguments=st_json())
    result = st.builds(Success, output=st_json()) | st.builds(Failure, error=text)
    usage = st.builds(
        TokenUsage,
        input_tokens=_INT64,
        output_tokens=_INT64,
        total_tokens=_INT64,
        cache_creation_input_tokens=optional_int,
        cache_read_input_tokens=optional_int,
        cached_input_tokens=optional_int,
    )
    finish = st.sampled_from(sorted(FinishReason.KNOWN)) | text

    def ev(cls: type, **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.builds(cls, run_id=run_id, timestamp=ts, **fields)

    return [
        ev(RunStarted, session_id=uid, provider=text, model=text),
        ev(ContextBuilt, message_count=_INT64),
        ev(ModelStarted, provider=text, model=text, iteration=_INT64),
        ev(TextDelta, delta=text),
        ev(ToolCallStarted, call_id=text, tool_name=text),
        ev(ToolCallDelta, call_id=text, delta=text),
        ev(ToolCallCompleted, call=call),
        ev(ToolExecutionStarted, call_id=text, tool_name=text),
        ev(ToolExecutionFinished, call_id=text, tool_name=text, result=result, duration_ms=_INT64),
        ev(AssistantMessageCommitted, message_id=uid),
        ev(ToolMessageCommitted, message_id=uid),
        ev(UsageRecorded, usage=usage),
        ev(
            CacheMetrics,
            cache_creation_input_tokens=_INT64,
            cache_read_input_tokens=_INT64,
            cached_input_tokens=_INT64,
        ),
        ev(DoomLoopDetected, description=text),
        ev(CompactionCircuitOpened, consecutive_failures=_INT64),
        ev(RunCompleted, finish_reason=finish, iterations=_INT64),
        ev(RunFailed, error=text),
        ev(RunCancelled),
    ]


def st_event(run_id: uuid.UUID | st.SearchStrategy[uuid.UUID]) -> st.SearchStrategy[Any]:
    """Any of the 18 variants with arbitrary (storable) field values, for ``run_id``.

    ``run_id`` is a fixed UUID or a strategy drawing one (e.g. ``st.sampled_from(runs)``).
    """
    runs = run_id if isinstance(run_id, st.SearchStrategy) else st.just(run_id)
    return st.one_of(_variant_strategies(runs))
