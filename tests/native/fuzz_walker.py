"""Fuzz target: the compiled walker, scan and index decoder against the pure reference.

    python -m tests.native.fuzz_walker [libFuzzer flags, e.g. -max_total_time=30 CORPUS_DIR]

(from the repository root). atheris (libFuzzer for Python) drives it; coverage of the pure
reference, which is instrumented, guides the search. Each input is a recipe rather than raw
bytes, so most inputs are real frame streams with valid checksums: a few frames (sizes, seqs,
marks, payload bytes from the input), then damage (bit flips, cuts, zero fill, overwrites),
then the walk's arguments. Now and then the input is used as raw bytes instead. Any
difference between the paths raises AssertionError, which atheris reports as a finding
(with the input saved under -artifact_prefix); a crash of the extension is one too.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import segmentlog.format as fmt
    import segmentlog.frames as frm
    from segmentlog.format import FRAME_HEADER_SIZE
    from tests.native import twins

from tests.native.twins import NO_LIMIT, U64_MAX

_SEQS = [0, 1, 2, 3, 100, U64_MAX - 2, U64_MAX - 1, U64_MAX]
_ODD = [-1, 1 << 64, (1 << 64) + 1, -(1 << 70), 1 << 70]
_BOUNDS = [-1, 0, 1, 28, 64, 255, 4096, 70_000, fmt.MAX_FRAME_LENGTH, 1 << 40]


def _pick(fdp: atheris.FuzzedDataProvider, near: int, odd: list[int]) -> int:
    """A value near ``near`` (mostly), or one of the odd values."""
    choice = fdp.ConsumeIntInRange(0, 7)
    if choice == 7:
        return fdp.PickValueInList(odd)
    return near + choice - 2


def _stream(fdp: atheris.FuzzedDataProvider) -> tuple[bytes, list[int], int]:
    first_seq = fdp.PickValueInList(_SEQS)
    buf = bytearray()
    offsets = []
    with twins.on_path(None):
        for i in range(fdp.ConsumeIntInRange(0, 6)):
            seq = first_seq + i
            if fdp.ConsumeIntInRange(0, 15) == 0:
                seq = fdp.ConsumeIntInRange(0, U64_MAX)
            if seq > U64_MAX:
                break
            size = fdp.ConsumeIntInRange(0, 300)
            if fdp.ConsumeIntInRange(0, 31) == 0:
                size = fdp.ConsumeIntInRange(0, 70_000)
            payload = fdp.ConsumeBytes(size)
            offsets.append(len(buf))
            start = len(buf)
            buf += bytes(FRAME_HEADER_SIZE)
            buf += payload
            frm._seal_frame_py(buf, start, seq, fdp.ConsumeIntInRange(0, 0xFFFF_FFFF))
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        op = fdp.ConsumeIntInRange(0, 4)
        at = fdp.ConsumeIntInRange(0, len(buf))
        if op == 0 and buf:
            buf[min(at, len(buf) - 1)] ^= 1 << fdp.ConsumeIntInRange(0, 7)
        elif op == 1:
            del buf[at:]
        elif op == 2:
            buf[at:] = bytes(len(buf) - at)
        elif op == 3:
            extra = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40))
            buf[at : at + len(extra)] = extra
        else:
            buf += fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40))
    return bytes(buf), offsets, first_seq


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeIntInRange(0, 7) == 0:
        first_seq = fdp.PickValueInList(_SEQS)
        stream = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 600))
        offsets: list[int] = []
    else:
        stream, offsets, first_seq = _stream(fdp)
    buf = twins.as_buffer(
        stream, fdp.PickValueInList(["bytes", "bytearray", "memoryview", "bytes"])
    )
    if offsets and fdp.ConsumeBool():
        k = fdp.ConsumeIntInRange(0, len(offsets) - 1)
        pos, seq = offsets[k], first_seq + k
    else:
        pos, seq = fdp.ConsumeIntInRange(0, len(stream) + 30), first_seq
    seq = _pick(fdp, seq, _ODD)
    first = _pick(fdp, seq, _ODD)
    last = NO_LIMIT if fdp.ConsumeBool() else _pick(fdp, seq + 3, [*_ODD, U64_MAX, NO_LIMIT])
    bound = fdp.PickValueInList(_BOUNDS) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 400)
    out = bytearray(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 3)))
    twins.walk(buf, pos, seq, first, last, bound, out if fdp.ConsumeBool() else None)

    base = fdp.ConsumeIntInRange(0, 1 << 40)
    interval = fdp.ConsumeIntInRange(-10, 5000)
    last_point = base + fdp.ConsumeIntInRange(-5000, 5000)
    twins.scan(buf, base, _pick(fdp, first_seq, _ODD), bound, interval, last_point)

    twins.decode_index(buf, _pick(fdp, first_seq, _ODD), fdp.ConsumeIntInRange(-1, 1 << 20))


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
