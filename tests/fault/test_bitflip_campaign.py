"""A campaign of single-bit flips over a whole log, each recovered in all three modes in turn.

The base log lives in a ``FaultFS``: three runs, about 600 events from single appends and
atomic batches of 2..5, in 4 KiB segments (several per run) with a 128-byte index interval. It
is written in three phases, so its frames carry every kind of durable mark: under ``always``
(closed cleanly), under ``never`` (marks that vouch for nothing), then under ``batch``, ended by
a process crash that leaves the last segments' preallocated zeros behind.

Each flip picks a file (a segment or an index, weighted by size), a byte and a bit, and
flips it in a fresh clone of the base. That clone is then opened with ``strict``,
``tolerate_tail`` and ``salvage`` in turn (every other flip runs ``maintenance.recover`` before
the ``salvage`` open), as an operator would escalate, and every run is read in full after
each open. For every flip and every mode:

- no corrupt record is returned as data: every envelope returned is byte-for-byte the one
  appended at that seq, and each run is a gapless prefix from seq 1;
- no intact record is lost: every record whose bytes the flip did not touch is returned live,
  or else is found by ``salvage_records``: as a quarantined record when recovery cut it out of
  its run, or (when the mode refused the damage with ``CorruptionError``) still in the run's
  files, untouched;
- every error is typed: ``CorruptionError`` in ``strict`` and ``tolerate_tail`` naming the
  flipped file, the damaged frame's offset and its seqs, ``NotFoundError`` for a run left with
  no events, nothing else; ``salvage`` raises nothing, and keeps every record before the
  damaged frame's batch live. A flip in an index (a cache) costs nothing in any mode.

The default run flips 2000 bits; ``SEGMENTLOG_SOAK=1`` flips 20000. Run with ``-s`` to see the
totals per mode.
"""

from __future__ import annotations

import logging
import os
import random
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from segmentlog import CorruptionError, Envelope, NotFoundError, maintenance
from segmentlog.format import SEGMENT_HEADER_SIZE, FramedRecord

from .faultfs import FaultFS
from .model import LOG_DIR, event, frames_of, fresh_fs, open_log

SOAK = os.environ.get("SEGMENTLOG_SOAK") == "1"
FLIPS = 20_000 if SOAK else 2_000
RUNS = [uuid.UUID(int=0x0190A8C4_1E00_7000_8000_0000_00B1_F000 + i) for i in range(3)]
MODES = ["strict", "tolerate_tail", "salvage"]
OPTIONS: dict[str, Any] = {"segment_bytes": 4096, "index_interval_bytes": 128}
ENCODE = msgspec.msgpack.Encoder(uuid_format="bytes").encode
#: Failures kept for the message (all are counted).
SHOWN = 15


@pytest.fixture(autouse=True)
def _quiet_recovery_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="segmentlog")


@dataclass
class Base:
    """The undamaged log and what it holds."""

    fs: FaultFS
    #: Per run, the encoded envelope of each seq (index seq - 1), as the appends returned it.
    payloads: dict[uuid.UUID, list[bytes]]
    #: Per segment path, its frames; per file path, its size.
    frames: dict[str, list[FramedRecord]]
    sizes: dict[str, int]


def _write(log: Any, rng: random.Random, count: int, acked: dict[uuid.UUID, list[Any]]) -> None:
    while count > 0:
        run = rng.choice(RUNS)
        sizes = [rng.choice([20, 80, 200]) for _ in range(rng.randint(2, 5))]
        if rng.random() < 0.3:
            envs = log.append_batch([event(run, rng.randrange(10**6), s) for s in sizes])
        else:
            envs = [log.append(event(run, rng.randrange(10**6), sizes[0]))]
        acked[run].extend(envs)
        count -= len(envs)


@pytest.fixture(scope="module")
def base() -> Base:
    rng = random.Random("bitflip-campaign")
    fs = fresh_fs()
    acked: dict[uuid.UUID, list[Envelope[Any]]] = {r: [] for r in RUNS}
    for policy, count in (("always", 300), ("never", 150), ("batch", 150)):
        log = open_log(fs, fsync=policy, **OPTIONS)
        _write(log, rng, count, acked)
        if policy == "batch":
            fs = fs.reboot()  # a process crash: preallocated zeros stay behind
        else:
            log.close()
    check = open_log(fs.clone(), recovery="strict", **OPTIONS)
    for run in RUNS:
        assert check.list_after(run, 0, 10_000) == acked[run], "the base log must be intact"
    check.close()
    files = [p for p in fs.walk_files() if p.endswith((".seg", ".idx"))]
    segs = [p for p in files if p.endswith(".seg")]
    assert len(segs) >= 3 * len(RUNS), "every run needs several segments"
    zeros = [p for p in segs if fs.read_bytes(p).endswith(bytes(64))]
    assert zeros, "some segment must end in preallocated zeros"
    return Base(
        fs=fs,
        payloads={r: [ENCODE(e) for e in acked[r]] for r in RUNS},
        frames={p: frames_of(fs.read_bytes(p)) for p in segs},
        sizes={p: len(fs.read_bytes(p)) for p in files},
    )


@dataclass
class Flip:
    """One flipped bit and what it touched."""

    path: str
    offset: int
    bit: int
    run: uuid.UUID
    #: Seq of the record whose frame holds the flipped byte (None: header, zeros or index).
    touched: int | None
    #: Offset and seqs a CorruptionError about this flip must name (None for an index).
    bad_offset: int | None
    first_seqs: range
    #: Records before this seq must stay live after salvage.
    keep: int

    def __str__(self) -> str:
        what = f"seq {self.touched}" if self.touched else "no record"
        return f"bit {self.bit} of byte {self.offset} in {self.path[len(LOG_DIR) :]} ({what})"


def _plan(base: Base, rng: random.Random) -> Flip:
    paths = list(base.sizes)
    path = rng.choices(paths, weights=[base.sizes[p] for p in paths])[0]
    offset = rng.randrange(base.sizes[path])
    run = uuid.UUID(path.split("/")[-2])
    bit = rng.randrange(8)
    if path.endswith(".idx"):
        return Flip(path, offset, bit, run, None, None, range(0), 1 << 62)
    frames = base.frames[path]
    base_seq = int(path.rsplit("/", 1)[1][:20])
    if offset < SEGMENT_HEADER_SIZE:
        return Flip(path, offset, bit, run, None, 0, range(base_seq, base_seq + 1), base_seq)
    for i, frame in enumerate(frames):
        if frame.offset <= offset < frame.end:
            first = i
            while first > 0 and frames[first - 1].continued:
                first -= 1  # the frame's atomic batch starts here
            seqs = range(frames[first].seq, frame.seq + 1)
            return Flip(path, offset, bit, run, frame.seq, frame.offset, seqs, frames[first].seq)
    # The preallocated zeros after the last frame (only the last segment has them).
    after = frames[-1].seq + 1
    return Flip(path, offset, bit, run, None, frames[-1].end, range(after, after + 1), 1 << 62)


class Campaign:
    """Runs flips and keeps the totals and the failures."""

    def __init__(self, base: Base) -> None:
        self.base = base
        self.totals: Counter[str] = Counter()
        self.failures: list[str] = []
        self.failed = 0

    def fail(self, flip: Flip, mode: str, what: str) -> None:
        self.failed += 1
        if len(self.failures) < SHOWN:
            self.failures.append(f"{flip}, {mode}: {what}")

    def run(self, flip: Flip, recover_first: bool) -> None:
        fs = self.base.fs.clone()
        data = bytearray(fs.read_bytes(flip.path))
        data[flip.offset] ^= 1 << flip.bit
        fs.set_bytes(flip.path, bytes(data))
        self.totals["flips"] += 1
        self.totals[f"flips in {flip.path[-3:]} files"] += 1
        for mode in MODES:
            self.totals[f"{mode}: opened"] += 1
            acts: list[str] = []
            if mode == "salvage" and recover_first:
                try:
                    acts += [r.action for r in maintenance.recover(LOG_DIR, fs=fs)]
                    self.totals["salvage: maintenance.recover first"] += 1
                except Exception as exc:
                    self.fail(flip, mode, f"recover raised {type(exc).__name__}: {exc}")
            live, refused = self._read(fs, flip, mode, acts)
            if refused:
                self.totals[f"{mode}: raised CorruptionError"] += 1
            if "quarantined" in acts:
                self.totals[f"{mode}: quarantined"] += 1
            self._check_nothing_intact_lost(fs, flip, mode, live, refused)

    def _read(
        self, fs: FaultFS, flip: Flip, mode: str, acts: list[str]
    ) -> tuple[dict[uuid.UUID, int], set[Any]]:
        """Open in ``mode`` and read every run; returns live counts and runs that raised, and
        adds the recovery's acts to ``acts``."""
        live: dict[uuid.UUID, int] = {}
        refused: set[uuid.UUID] = set()
        log = open_log(fs, recovery=mode, **OPTIONS)
        try:
            for run in RUNS:
                live[run] = 0
                try:
                    got = log.list_after(run, 0, 10_000)
                except NotFoundError:
                    continue
                except CorruptionError as exc:
                    refused.add(run)
                    self._check_error(flip, mode, run, exc)
                    continue
                except Exception as exc:
                    self.fail(flip, mode, f"raised {type(exc).__name__} reading: {exc!r}")
                    refused.add(run)
                    continue
                expected = self.base.payloads[run]
                for i, env in enumerate(got):
                    if env.seq != i + 1 or ENCODE(env) != expected[i]:
                        self.fail(flip, mode, f"returned seq {env.seq} at {i} unlike the append")
                        break
                live[run] = len(got)
                if run == flip.run:
                    if len(got) < min(flip.keep - 1, len(expected)):
                        self.fail(flip, mode, f"kept {len(got)}, not all {flip.keep - 1} before it")
                elif len(got) != len(expected):
                    self.fail(flip, mode, f"an undamaged run lost records ({len(got)} live)")
        finally:
            acts += [r.action for r in log.recovery_reports]
            try:
                log.close()
            except Exception as exc:
                self.fail(flip, mode, f"close raised {type(exc).__name__}: {exc}")
        return live, refused

    def _check_error(self, flip: Flip, mode: str, run: uuid.UUID, exc: CorruptionError) -> None:
        if mode == "salvage" or flip.bad_offset is None or run != flip.run:
            self.fail(flip, mode, f"raised {exc}")
        elif exc.path != flip.path or exc.offset != flip.bad_offset:
            self.fail(flip, mode, f"error names {exc.path}@{exc.offset}: {exc}")
        elif exc.first_seq not in flip.first_seqs:
            self.fail(flip, mode, f"error names seqs {exc.first_seq}..{exc.last_seq}")

    def _check_nothing_intact_lost(
        self, fs: FaultFS, flip: Flip, mode: str, live: dict[uuid.UUID, int], refused: set[Any]
    ) -> None:
        missing = [
            (run, seq)
            for run in RUNS
            for seq in range(live[run] + 1, len(self.base.payloads[run]) + 1)
            if (run, seq) != (flip.run, flip.touched)
        ]
        if not missing:
            return
        found: dict[bytes, set[bool]] = {}
        only = flip.run if all(run == flip.run for run, _ in missing) else None
        for payload, quarantined in maintenance.salvage_records(LOG_DIR, only, fs=fs):
            found.setdefault(payload, set()).add(quarantined)
        for run, seq in missing:
            where = found.get(self.base.payloads[run][seq - 1], set())
            if not where:
                self.fail(flip, mode, f"intact record {run} seq {seq} is gone")
                return
            if run not in refused and True not in where:
                self.fail(flip, mode, f"intact seq {seq} was cut out of its run, not quarantined")
                return
        self.totals[f"{mode}: intact records found by salvage_records"] += len(missing)


def test_bit_flips_never_return_corrupt_data_and_never_lose_intact_records(base: Base) -> None:
    rng = random.Random(f"flips-{FLIPS}")
    campaign = Campaign(base)
    for n in range(FLIPS):
        campaign.run(_plan(base, rng), recover_first=n % 2 == 1)
    totals = campaign.totals
    print(f"\nbit-flip campaign: {FLIPS} flips, each opened in {', '.join(MODES)} in turn")
    for key in sorted(totals):
        print(f"  {key}: {totals[key]}")
    assert not campaign.failed, f"{campaign.failed} failures:\n" + "\n".join(campaign.failures)
    assert totals["flips"] == FLIPS and all(totals[f"{m}: opened"] == FLIPS for m in MODES)
    # The campaign must have met every outcome it claims to check.
    assert totals["strict: raised CorruptionError"] > FLIPS // 2
    assert totals["salvage: quarantined"] > FLIPS // 2
    assert totals["tolerate_tail: quarantined"] > 0, "no torn tail with intact frames after it"
    assert totals["flips in idx files"] > 0
    assert totals["salvage: intact records found by salvage_records"] > FLIPS
