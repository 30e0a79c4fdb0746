"""The compiled xxh3_64 is byte-exact with the xxhash package (XXH3, 64 bits, seed 0)."""

from __future__ import annotations

import random
import threading

import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from .twins import SETTINGS, native


def test_every_length_up_to_20000() -> None:
    data = random.Random(20_000).randbytes(20_000)
    view = memoryview(data)
    mismatches = [
        n for n in range(20_001) if native.xxh3_64(view[:n]) != xxhash.xxh3_64_intdigest(view[:n])
    ]
    assert mismatches == []


def test_every_offset_into_a_buffer() -> None:
    # Unaligned starts: the SIMD loads must not care.
    data = random.Random(7).randbytes(4096 + 64)
    for start in range(64):
        chunk = data[start : start + 4096 - start]
        assert native.xxh3_64(chunk) == xxhash.xxh3_64_intdigest(chunk)


@SETTINGS
@given(data=st.binary(max_size=5000))
def test_any_bytes(data: bytes) -> None:
    assert native.xxh3_64(data) == xxhash.xxh3_64_intdigest(data)
    assert native.xxh3_64(bytearray(data)) == native.xxh3_64(memoryview(data))


def test_large_buffers_of_every_kind_and_from_threads() -> None:
    data = random.Random(3).randbytes(3 << 20)  # above the size where the GIL is released
    expected = xxhash.xxh3_64_intdigest(data)
    for kind in (bytes, bytearray, memoryview):
        assert native.xxh3_64(kind(data)) == expected
    assert native.xxh3_64(memoryview(data)[1:]) == xxhash.xxh3_64_intdigest(data[1:])
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.extend(native.xxh3_64(data) for _ in range(5)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 20


@pytest.mark.parametrize("bad", ["text", None, 5, [1, 2]])
def test_what_is_not_bytes_like_raises_type_error(bad: object) -> None:
    with pytest.raises(TypeError):
        xxhash.xxh3_64_intdigest(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        native.xxh3_64(bad)


def test_a_strided_view_raises_buffer_error() -> None:
    for hash_ in (native.xxh3_64, xxhash.xxh3_64_intdigest):
        with pytest.raises(BufferError):
            hash_(memoryview(b"abcdef")[::2])
