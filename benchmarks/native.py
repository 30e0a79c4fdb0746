"""The compiled core against the pure-Python path, function by function.

    python benchmarks/native.py [--mib 64] [--repeat 7] [--json FILE]

Runs each measurement in two fresh interpreters, one as installed (``segmentlog._native``) and
one with ``SEGMENTLOG_PURE=1``, through segmentlog.format's public functions, and prints the
median of ``--repeat`` runs of each, side by side:

- xxh3-64 of one large buffer (GB/s) and of a 200-byte one (ns per call);
- ``walk_frames`` over a buffer of ~200-byte frames, every payload collected (GB/s, ns/frame),
  and verifying only (``out=None``); beside them, the time to allocate and zero a bytearray
  the size of the payloads (a fresh ``out`` of that size costs about as much in page faults);
  and in pages of 1000 frames, as a reader pages through a segment;
- ``scan_frames`` (the recovery scan) of a whole segment of the same frames (GB/s);
- ``decode_index`` of that segment's index at the default 4 KiB interval (ns per entry);
- ``FrameEncoder.encode`` of an agent event's envelope (ns per frame).

The pure path's xxh3 is the ``xxhash`` package, so its column is that package's speed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

FRAME_BYTES = 200  # header included
INTERVAL = 4096


def _median_seconds(fn: Callable[[], object], repeat: int, inner: int = 1) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


def measure(mib: int, repeat: int) -> dict[str, Any]:
    """Every figure for the path this interpreter is on."""
    import segmentlog.format as fmt
    import segmentlog.frames as frm
    from segmentlog.events import Envelope, TextDelta

    rng = random.Random(1)
    results: dict[str, Any] = {"native": fmt.NATIVE}

    def hash_speed(data: bytes, inner: int) -> float:
        return _median_seconds(lambda: fmt.xxh3_64(data), repeat, inner)

    results["xxh3 large, GB/s"] = (mib << 20) / hash_speed(rng.randbytes(mib << 20), 1) / 1e9
    results["xxh3 200 B, ns/call"] = hash_speed(rng.randbytes(FRAME_BYTES), 200_000) * 1e9

    # A segment of ~200-byte frames from the header's end; the frames' bytes are random.
    payload = FRAME_BYTES - fmt.FRAME_HEADER_SIZE
    count = ((mib << 20) - fmt.SEGMENT_HEADER_SIZE) // FRAME_BYTES
    seg = bytearray(fmt.SEGMENT_HEADER_SIZE)
    offsets = []
    for seq in range(1, count + 1):
        offsets.append(len(seg))
        start = len(seg)
        seg += bytes(fmt.FRAME_HEADER_SIZE)
        seg += rng.randbytes(payload)
        frm.seal_frame(seg, start, seq, 0)
    body = bytes(seg[fmt.SEGMENT_HEADER_SIZE :])
    del seg

    def walk() -> None:
        out = bytearray()
        _, next_seq, stop = frm.walk_frames(body, 0, 1, 1, 1 << 64, 1 << 20, out)
        assert next_seq == count + 1 and stop is fmt.NEED_DATA and len(out) == count * payload

    t = _median_seconds(walk, repeat)
    results["walk_frames, GB/s"] = len(body) / t / 1e9
    results["walk_frames, ns/frame"] = t / count * 1e9

    def walk_pages() -> None:
        # As a reader pages through a segment: 1000 records per call, a fresh out for each.
        pos, seq = 0, 1
        while seq <= count:
            out = bytearray()
            pos, seq, _ = frm.walk_frames(body, pos, seq, seq, seq + 999, 1 << 20, out)

    t = _median_seconds(walk_pages, repeat)
    results["walk_frames 1000-frame pages, GB/s"] = len(body) / t / 1e9
    results["walk_frames 1000-frame pages, ns/frame"] = t / count * 1e9
    t = _median_seconds(lambda: frm.walk_frames(body, 0, 1, 1, 1 << 64, 1 << 20), repeat)
    results["walk_frames out=None, GB/s"] = len(body) / t / 1e9
    results["walk_frames out=None, ns/frame"] = t / count * 1e9
    t = _median_seconds(lambda: bytearray(count * payload), repeat)
    results["(bytearray of the payloads), ms"] = t * 1e3

    def scan() -> fmt.FrameScan:
        return frm.scan_frames(body, fmt.SEGMENT_HEADER_SIZE, 1, 1 << 20, INTERVAL, 48)

    points = scan().points
    assert scan().frames == count
    t = _median_seconds(scan, repeat)
    results["scan_frames, GB/s"] = len(body) / t / 1e9

    index = b"".join(fmt.encode_index_entry(seq, off) for seq, off in points)
    t = _median_seconds(lambda: fmt.decode_index(index, 1, len(body) + 48), repeat, inner=20)
    results["decode_index, entries"] = len(points)
    results["decode_index, ns/entry"] = t / len(points) * 1e9

    encoder = frm.FrameEncoder()
    run = uuid.UUID(int=1)
    stamp = datetime(2024, 7, 1, tzinfo=UTC)
    envs = [
        Envelope(
            event_id=uuid.UUID(int=i),
            seq=i,
            run_id=run,
            session_id=uuid.UUID(int=2),
            event=TextDelta(run_id=run, timestamp=stamp, delta="x" * 40),
            emitted_at=stamp,
        )
        for i in range(1, 10_001)
    ]

    def encode() -> None:
        buf = bytearray()
        for env in envs:
            encoder.encode(buf, env, 48)

    buf = bytearray()
    encoder.encode(buf, envs[0], 48)
    results["encode, frame bytes"] = len(buf)
    t = _median_seconds(encode, repeat)
    results["FrameEncoder.encode, ns/frame"] = t / len(envs) * 1e9
    return results


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=64, help="segment and xxh3 buffer size")
    parser.add_argument("--repeat", type=int, default=7, help="runs per figure (median)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.mib, args.repeat)))
        return 0

    paths = {}
    for name, pure in (("native", "0"), ("pure", "1")):
        child = subprocess.run(
            [sys.executable, __file__, "--child", f"--mib={args.mib}", f"--repeat={args.repeat}"],
            env={**os.environ, "SEGMENTLOG_PURE": pure},
            capture_output=True,
            text=True,
            check=True,
        )
        paths[name] = json.loads(child.stdout)
    if not paths["native"]["native"]:
        print("segmentlog._native is not built: both columns are the pure path", file=sys.stderr)

    print(f"{args.mib} MiB buffers, {FRAME_BYTES}-byte frames, median of {args.repeat} runs")
    print(f"{'':40} {'native':>10} {'pure':>10} {'ratio':>8}")
    for key, value in paths["native"].items():
        if key == "native":
            continue
        pure = paths["pure"][key]
        ratio = value / pure if key.endswith("GB/s") else pure / value
        ratio_text = "" if key.endswith(("entries", "bytes", "ms")) else f"{ratio:7.1f}x"
        print(f"{key:40} {value:10.3f} {pure:10.3f} {ratio_text:>8}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(paths, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
