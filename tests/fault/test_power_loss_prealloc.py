"""Power loss in the middle of appends into preallocated space, under ``always`` and ``batch``.

``test_power_loss.py`` crashes between operations, so no write is ever in flight there. Here
writer threads (two of them sharing one run, so group commit puts several appends in one
write) append single events and atomic batches to three runs in segments with preallocated
zeros ahead of the write offset, and the file system halts at a random call: a write may have
landed without its fsync, a preallocation may not be durable. Then the power fails and each
file keeps a random subset of its unsynced sectors (``FaultFS.power_loss("random_subset")``):
later frames of an unsynced write may survive while earlier ones are zeros. The log is
reopened with ``tolerate_tail`` and with ``salvage``, each on its own copy, and a second round
of appends and a second power loss follows on the recovered log. Every time:

- recovery never raises: what is damaged was never acknowledged;
- every acknowledged append survives, with its seq and event id; each run is gapless from 1,
  and anything past the acknowledged appends is an in-flight append, whole batches only;
- nothing acknowledged ends up only in quarantine: no quarantined record is an acknowledged
  one (every acknowledged record is live);
- the next append gets the next seq.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from segmentlog import Envelope, maintenance

from .faultfs import FaultFS, SimulatedCrash
from .model import LOG_DIR, event, fresh_fs, open_log, read_run

SOAK = os.environ.get("SEGMENTLOG_SOAK") == "1"
CASES = 600 if SOAK else 60
RUNS = [uuid.UUID(int=0x0190A8C4_1E00_7000_8000_0000_00F1_0000 + i) for i in range(3)]
#: Writer threads, by the run each appends to: two share the first run.
WRITERS = [RUNS[0], RUNS[0], RUNS[1], RUNS[2]]
OPTIONS: dict[str, Any] = {
    "segment_bytes": 16384,
    "index_interval_bytes": 512,
    "preallocate": True,
}
ENCODE = msgspec.msgpack.Encoder(uuid_format="bytes").encode


@pytest.fixture(autouse=True)
def _quiet_recovery_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="segmentlog")


@dataclass
class Expect:
    """What the runs must hold after a power loss."""

    #: Per run, seq -> envelope of every acknowledged append (and of what survived before).
    acked: dict[uuid.UUID, dict[int, Envelope[Any]]] = field(
        default_factory=lambda: {r: {} for r in RUNS}
    )
    #: Units (one append, or one batch) called but not acknowledged, per run.
    in_flight: dict[uuid.UUID, list[list[Any]]] = field(
        default_factory=lambda: {r: [] for r in RUNS}
    )
    lock: threading.Lock = field(default_factory=threading.Lock)


def _writer(log: Any, run: uuid.UUID, seed: str, expect: Expect) -> None:
    rng = random.Random(seed)
    for _ in range(60):
        sizes = [rng.choice([30, 150, 700]) for _ in range(rng.randint(2, 4))]
        events = [event(run, rng.randrange(1 << 40), s) for s in sizes]
        if rng.random() < 0.7:
            events = events[:1]
        with expect.lock:
            expect.in_flight[run].append(events)
        try:
            envs = log.append_batch(events) if len(events) > 1 else [log.append(events[0])]
        except SimulatedCrash:
            return  # the "process" died here; this unit stays in flight
        with expect.lock:
            expect.in_flight[run].remove(events)
            for env in envs:
                expect.acked[run][env.seq] = env


def _round(fs: FaultFS, policy: str, rng: random.Random, expect: Expect) -> FaultFS:
    """Append from every writer until the file system halts; return what a power loss left."""
    log = open_log(fs, fsync=policy, **OPTIONS)
    fs.halt_after(rng.randrange(1, 500))
    seed = rng.randrange(1 << 30)
    threads = [
        threading.Thread(target=_writer, args=(log, run, f"{seed}-{i}", expect), daemon=True)
        for i, run in enumerate(WRITERS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a writer hung after the crash"
    survivor = fs.reboot("random_subset", random.Random(rng.randrange(1 << 30)))
    with contextlib.suppress(Exception, SimulatedCrash):
        log.close()
    return survivor


def _check(
    fs: FaultFS, mode: str, expect: Expect, what: str
) -> tuple[dict[uuid.UUID, list[Any]], list[Any]]:
    """Reopen ``fs`` in ``mode`` and assert the contract; return what each run holds (with
    one probe append to the last run) and the recovery reports."""
    log = open_log(fs, recovery=mode, **OPTIONS)
    held: dict[uuid.UUID, list[Any]] = {}
    try:
        for run in RUNS:
            got = read_run(log, run, page=64)  # any error here fails the test
            held[run] = got
            acked = expect.acked[run]
            where = f"{what}, {mode}, run {run}"
            assert [e.seq for e in got] == list(range(1, len(got) + 1)), f"{where}: a gap"
            assert len(got) >= max(acked, default=0), f"{where}: acknowledged appends lost"
            for env in got:
                if env.seq in acked:
                    want = acked[env.seq]
                    assert (env.event_id, env.event) == (want.event_id, want.event), (
                        f"{where}: seq {env.seq} is not the acknowledged append"
                    )
            extra = [e.event for e in got if e.seq not in acked]
            for unit in expect.in_flight[run]:
                present = sum(ev in extra for ev in unit)
                assert present in (0, len(unit)), f"{where}: a batch survived in part"
            units = [ev for unit in expect.in_flight[run] for ev in unit]
            assert all(ev in units for ev in extra), f"{where}: records nobody appended"
        acked = {ENCODE(e) for run in RUNS for e in expect.acked[run].values()}
        for payload, quarantined in maintenance.salvage_records(LOG_DIR, fs=fs):
            assert not (quarantined and payload in acked), (
                f"{what}, {mode}: an acknowledged record went to quarantine"
            )
        probe = log.append(event(RUNS[2], -1))
        assert probe.seq == len(held[RUNS[2]]) + 1, f"{what}, {mode}: next seq skipped"
        held[RUNS[2]].append(probe)
        return held, log.recovery_reports
    finally:
        log.close()


@pytest.mark.parametrize("policy", ["always", "batch"])
def test_power_loss_mid_append_into_preallocated_space_loses_nothing_acknowledged(
    policy: str,
) -> None:
    cut = quarantined = 0
    for case in range(CASES):
        rng = random.Random(f"prealloc-{policy}-{case}")
        expect = Expect()
        fs = fresh_fs()
        for round_ in range(2):
            fs = _round(fs, policy, rng, expect)
            what = f"case {case}, round {round_}"
            _check(fs.clone(), "salvage", expect, what)
            held, reports = _check(fs, "tolerate_tail", expect, what)
            cut += any(r.action in ("truncated", "quarantined") for r in reports)
            quarantined += any(r.action == "quarantined" for r in reports)
            # The next round starts from what survived (durable now), probe included.
            expect = Expect()
            for run in RUNS:
                expect.acked[run] = {e.seq: e for e in held[run]}
    print(
        f"\n{policy}: {CASES} cases x 2 power losses mid-append; {cut} recoveries cut a "
        f"torn tail, {quarantined} of them kept intact unacknowledged frames in quarantine"
    )
    assert cut > CASES // 4, "few power losses left a tail to cut; the test proves little"
