"""Run segmentlog.format's hot loops on both paths, compiled and pure, and compare the outcomes.

Strategy
- ``on_path(native)`` / ``on_path(None)`` point the dispatch of ``format`` and ``frames``
  (``_native``, ``xxh3_64``, ``seal_frame``) at the compiled module or at the pure reference
  for the duration of a call, so the public functions (``walk_frames``, ``scan_frames``,
  ``decode_index``) are exercised exactly as shipped. On the pure path xxh3 is the
  ``xxhash`` package's, so the reference never leans on the code it checks.
- An outcome is what a caller can observe: the returned value, the bytes appended to ``out``
  (or written into the sealed buffer), or the exception's class.
- Streams are built on the pure path, with ``FrameEncoder`` and ``_seal_frame_py``.

Used by the Hypothesis tests here and by ``fuzz_walker.py``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import msgspec
import xxhash
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import segmentlog.format as fmt
import segmentlog.frames as frm
from segmentlog.format import (
    DEFAULT_MAX_RECORD_BYTES,
    FRAME_CONTINUED,
    FRAME_HEADER_SIZE,
    FRAME_MAGIC,
    MAX_FRAME_LENGTH,
    MAX_SEGMENT_OFFSET,
)
from segmentlog.frames import (
    FrameEncoder,
)

#: The compiled module, imported whatever SEGMENTLOG_PURE says: a missing build fails here.
native: ModuleType = importlib.import_module("segmentlog._native")

U64_MAX = (1 << 64) - 1
NO_LIMIT = 1 << 64

#: Examples per Hypothesis test (the sanitizer run lowers it).
EXAMPLES = int(os.environ.get("SEGMENTLOG_NATIVE_EXAMPLES", "600"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@contextmanager
def on_path(module: ModuleType | None) -> Iterator[None]:
    """Dispatch format's hot loops to ``module`` (the compiled one) or, for None, the pure code."""
    saved = (fmt._native, fmt.xxh3_64, frm._native, frm.xxh3_64, frm.seal_frame)
    xxh3 = xxhash.xxh3_64_intdigest if module is None else module.xxh3_64
    fmt._native = frm._native = module
    fmt.xxh3_64 = frm.xxh3_64 = xxh3
    frm.seal_frame = frm._seal_frame_py if module is None else module.seal_frame
    try:
        yield
    finally:
        fmt._native, fmt.xxh3_64, frm._native, frm.xxh3_64, frm.seal_frame = saved


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """``("ok", value)`` or ``("raises", exception class)``."""
    try:
        return "ok", call()
    except Exception as exc:
        return "raises", type(exc)


def both(call: Callable[[], Any]) -> tuple[tuple[str, Any], tuple[str, Any]]:
    """The outcome of ``call`` on the compiled path, then on the pure path."""
    with on_path(native):
        compiled = outcome(call)
    with on_path(None):
        pure = outcome(call)
    return compiled, pure


# --- the four functions, as callers see them ----------------------------------------------


def walk(
    buf: Any, pos: int, seq: int, first: int, last: int, max_record: int, out: bytearray | None
) -> tuple[str, Any]:
    """Both paths' ``walk_frames``; each gets its own copy of ``out``. Asserts they agree."""
    results = []
    for module in (native, None):
        mine = None if out is None else bytearray(out)
        with on_path(module):
            result = outcome(lambda: frm.walk_frames(buf, pos, seq, first, last, max_record, mine))  # noqa: B023
        results.append((result, None if mine is None else bytes(mine)))
    assert results[0] == results[1], f"native {results[0]!r} != pure {results[1]!r}"
    return results[0][0]


def scan(
    buf: Any, base: int, seq: int, max_record: int, interval: int, last_point: int
) -> tuple[str, Any]:
    compiled, pure = both(lambda: frm.scan_frames(buf, base, seq, max_record, interval, last_point))
    assert compiled == pure, f"native {compiled!r} != pure {pure!r}"
    return compiled


def decode_index(data: Any, base_seq: int, segment_size: int) -> tuple[str, Any]:
    compiled, pure = both(lambda: fmt.decode_index(data, base_seq, segment_size))
    assert compiled == pure, f"native {compiled!r} != pure {pure!r}"
    return compiled


def seal(buf: bytearray, start: int, seq: Any, marks: Any) -> tuple[str, Any]:
    """Both paths' ``seal_frame`` on copies of ``buf``; on success the bytes must agree."""
    results = []
    for module in (native, None):
        mine = bytearray(buf)
        with on_path(module):
            result = outcome(lambda: frm.seal_frame(mine, start, seq, marks))  # noqa: B023
        # On an exception the pure code may leave part of a header behind (struct packs the
        # fields in order); only the class of the exception is compared then.
        results.append((result, bytes(mine) if result[0] == "ok" else None))
    assert results[0] == results[1], f"native {results[0]!r} != pure {results[1]!r}"
    return results[0][0]


# --- building streams (pure path) ---------------------------------------------------------


class Blob(msgspec.Struct):
    """A stand-in envelope: FrameEncoder only needs ``seq`` and something msgspec encodes."""

    seq: int
    data: bytes


#: Payload bytes with the frame magic inside, as binary event data can have.
_FILLER = (FRAME_MAGIC + bytes(range(256))) * 300


class Frame(msgspec.Struct, frozen=True):
    """One frame to write: payload size, seq offset from the expected seq, marks, raw or not."""

    size: int
    skew: int = 0
    durable: int = 0
    continued: bool = False
    raw: bool = False  # sealed directly (any size, even 0) rather than through FrameEncoder


def build_stream(frames: list[Frame], first_seq: int) -> tuple[bytes, list[int], list[int]]:
    """Encode ``frames`` with seqs from ``first_seq`` on; returns (bytes, offsets, seqs)."""
    buf = bytearray()
    offsets: list[int] = []
    seqs: list[int] = []
    encoder = FrameEncoder(max_record_bytes=MAX_FRAME_LENGTH)
    with on_path(None):
        for i, frame in enumerate(frames):
            seq = first_seq + i + frame.skew
            if not 0 <= seq <= U64_MAX:
                break
            offsets.append(len(buf))
            seqs.append(seq)
            marks = frame.durable | (FRAME_CONTINUED if frame.continued else 0)
            if frame.raw or seq == 0:
                start = len(buf)
                buf += bytes(FRAME_HEADER_SIZE)
                buf += _FILLER[i % 251 : i % 251 + frame.size]
                frm._seal_frame_py(buf, start, seq, marks)
            else:
                blob = Blob(seq, _FILLER[i % 251 : i % 251 + frame.size])
                encoder.encode(buf, blob, frame.durable, frame.continued)
    return bytes(buf), offsets, seqs


def damage(stream: bytes, ops: list[tuple[str, int, bytes]]) -> bytes:
    """Apply damage ops: (kind, where, bytes); ``where`` is taken modulo the stream's length."""
    data = bytearray(stream)
    for kind, where, extra in ops:
        at = where % (len(data) + 1)
        if kind == "flip" and data:
            data[at % len(data)] ^= 1 << (where % 8)
        elif kind == "truncate":
            del data[at:]
        elif kind == "zero_tail":
            data[at:] = bytes(len(data) - at)
        elif kind == "zero_range":
            data[at : at + len(extra) + 1] = bytes(len(data[at : at + len(extra) + 1]))
        elif kind == "overwrite":
            data[at : at + len(extra)] = extra[: len(data) - at]
        elif kind == "append":
            data += extra
        elif kind == "append_zeros":
            data += bytes(len(extra) + 1)
    return bytes(data)


def as_buffer(data: bytes, kind: str) -> Any:
    """``data`` as one of the bytes-like types the functions accept."""
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(data)
    if kind == "memoryview_of_bytearray":
        return memoryview(bytearray(data))
    return data


# --- strategies ---------------------------------------------------------------------------

frames = st.builds(
    Frame,
    size=st.one_of(st.integers(0, 64), st.integers(0, 700)),
    skew=st.sampled_from([0] * 20 + [1, -1, 5]),
    durable=st.one_of(st.just(0), st.integers(0, MAX_SEGMENT_OFFSET)),
    continued=st.booleans(),
    raw=st.sampled_from([False, False, False, True]),
)
#: Frames of 60-70 KB: a stream gets at most one, so the compiled walker's large-buffer
#: path (GIL released) is exercised without making every example slow.
large_frames = st.builds(Frame, size=st.integers(60_000, 70_000), raw=st.booleans())


def _with_large(parts: tuple[list[Frame], tuple[int, Frame] | None]) -> list[Frame]:
    small, large = parts
    if large is None:
        return small
    at, frame = large
    return [*small[:at], frame, *small[at:]]


frame_lists = st.tuples(
    st.lists(frames, max_size=10),
    st.one_of(st.none(), st.none(), st.none(), st.tuples(st.integers(0, 10), large_frames)),
).map(_with_large)
first_seqs = st.one_of(st.integers(1, 1000), st.integers(U64_MAX - 12, U64_MAX), st.just(0))
damage_ops = st.one_of(
    st.just([]),
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "flip",
                    "truncate",
                    "zero_tail",
                    "zero_range",
                    "overwrite",
                    "append",
                    "append_zeros",
                ]
            ),
            st.integers(0, 1 << 32),
            st.binary(max_size=48),
        ),
        min_size=1,
        max_size=3,
    ),
)
buffer_kinds = st.sampled_from(
    ["bytes", "bytes", "bytes", "bytearray", "memoryview", "memoryview_of_bytearray"]
)
#: Seqs the format cannot hold, and the edges of the ones it can.
odd_seqs = st.sampled_from(
    [-(1 << 70), -1, 0, 1, U64_MAX - 1, U64_MAX, 1 << 64, (1 << 64) + 1, 1 << 70]
)
max_records = st.one_of(
    st.just(DEFAULT_MAX_RECORD_BYTES),
    st.just(MAX_FRAME_LENGTH),
    st.sampled_from(
        [
            -(1 << 70),
            -1,
            0,
            1,
            27,
            28,
            100,
            65_535,
            70_100,
            8 << 20,
            MAX_FRAME_LENGTH,
            MAX_FRAME_LENGTH + 1,
            1 << 40,
            1 << 70,
        ]
    ),
    st.integers(0, 80_000),
)
