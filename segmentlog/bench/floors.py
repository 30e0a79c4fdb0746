"""Floors that bound what a read can cost: decoding alone, and the recovery scan alone.

Strategy and invariants
- The decode-only floor decodes the replay store's very payloads with one
  ``msgspec.msgpack.Decoder(list[Envelope[AgentEvent]]).decode`` per page of them, already
  gathered into one msgpack array in memory: no file, no frame walk, no checksum, no
  bookkeeping. Any replay that returns Envelopes does at least this, so it is the limit of
  the replay workload. Gathering a page is untimed; only the decode calls are timed.
- The scan workload measures ``segmentlog.scan.scan`` over a full segment's bytes already in
  memory (read before the clock starts), so it is the CPU cost of recovery's frame walk with
  its xxh3 checks, in GB/s of segment, and nothing of the disk.
"""

from __future__ import annotations

import os
import struct
import time
import uuid
from typing import Any

import msgspec

import segmentlog

from ..events import AgentEvent, Envelope
from ..format import DEFAULT_MAX_RECORD_BYTES, SEGMENT_HEADER_SIZE, FramedRecord
from ..frames import read_frame
from ..scan import scan
from .baselines import RAW_NAME
from .data import make_run_events
from .timing import Sample

__all__ = ["build_full_segment", "decode_floor", "scan_segment"]


def _array_header(count: int) -> bytes:
    if count < 16:
        return bytes([0x90 | count])
    if count < 1 << 16:
        return b"\xdc" + struct.pack(">H", count)
    return b"\xdd" + struct.pack(">I", count)


def decode_floor(raw_dir: str, limit: int) -> Sample:
    """Decode the raw store's payloads, ``limit`` per ``decode`` call. Value: events/s."""
    decode = msgspec.msgpack.Decoder(list[Envelope[AgentEvent]]).decode
    with open(os.path.join(raw_dir, RAW_NAME), "rb") as f:
        data = f.read()
    clock = time.perf_counter
    elapsed = 0.0
    count = 0
    pos = 0
    page: list[bytes | memoryview] = []
    while True:
        rec = read_frame(data, pos, DEFAULT_MAX_RECORD_BYTES)
        done = not isinstance(rec, FramedRecord)
        if not done:
            assert isinstance(rec, FramedRecord)
            page.append(rec.payload)
            pos = rec.end
        if page and (done or len(page) == limit):
            buf = b"".join([_array_header(len(page)), *page])
            t0 = clock()
            envelopes = decode(buf)
            elapsed += clock() - t0
            count += len(envelopes)
            page = []
        if done:
            break
    return Sample(count / elapsed, {"seconds": elapsed, "events": count})


def build_full_segment(directory: str, segment_bytes: int) -> str:
    """Fill one run until its first segment is sealed; return that segment's path.

    The events are those of the other workloads (``make_run_events``), appended in batches
    (of 1000 for a 64 MiB segment) under ``fsync="never"`` (a fixture, not timed).
    """
    run = uuid.UUID(int=0x5CA7, version=4)
    path = os.path.join(directory, "log")
    run_dir = os.path.join(path, "runs", str(run))
    total = max(10_000, segment_bytes // 100)  # more than a segment holds
    step = max(1, min(1000, segment_bytes // 2**16))  # a batch never straddles two segments
    with segmentlog.open(path, fsync="never", segment_bytes=segment_bytes) as log:
        for start in range(0, total, step):
            log.append_batch(make_run_events(run, total, 77, start=start, stop=start + step))
            if len([n for n in os.listdir(run_dir) if n.endswith(".seg")]) > 1:
                break
        else:
            raise RuntimeError("the segment never filled")
    return os.path.join(run_dir, sorted(n for n in os.listdir(run_dir) if n.endswith(".seg"))[0])


def scan_segment(segment: str) -> Sample:
    """``scan`` over a whole sealed segment already in memory. Value: GB/s of segment."""
    with open(segment, "rb") as f:
        data = f.read()
    body = data[SEGMENT_HEADER_SIZE:]
    base_seq = int(os.path.basename(segment).split(".")[0])
    start = time.perf_counter()
    result: Any = scan(body, SEGMENT_HEADER_SIZE, base_seq, DEFAULT_MAX_RECORD_BYTES)
    elapsed = time.perf_counter() - start
    if result.damage is not None or result.end != len(data):
        raise AssertionError(f"scan of {segment} stopped early: {result.damage}")
    return Sample(
        len(data) / elapsed / 1e9,
        {"seconds": elapsed, "bytes": float(len(data)), "frames": float(result.frames)},
    )
