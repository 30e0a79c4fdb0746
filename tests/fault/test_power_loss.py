"""Power loss and process crashes at random points of a random workload, under every policy.

A Hypothesis state machine appends (single events and atomic batches) to several runs, deletes
runs, syncs, and crashes: a process crash (the page cache survives), a power loss that drops
every unsynced byte and directory entry, or a power loss that keeps a random subset of the
unsynced sectors. After each crash the log is reopened on what is left and ``LogModel.check``
asserts that every run is a gapless prefix of what was acknowledged, cut only between atomic
units, holding at least everything durable. The next append must then get the next seq.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import uuid
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from .faultfs import FaultFS, SimulatedCrash
from .model import LOG_DIR, LogModel, event, fresh_fs, open_log

SOAK = os.environ.get("SEGMENTLOG_SOAK") == "1"
RUNS = [uuid.UUID(int=0x0190A8C4_1E00_7000_8000_000000000000 + i) for i in range(4)]
CRASHES = ["process", "drop_unsynced", "random_subset"]


class PowerLossMachine(RuleBasedStateMachine):
    """A log under random appends, deletes, syncs and crashes, against ``LogModel``."""

    POLICY = "always"

    def __init__(self) -> None:
        super().__init__()
        self.fs: FaultFS = fresh_fs()
        self.model = LogModel(self.POLICY in ("always", "batch"))
        self.retired: set[uuid.UUID] = set()
        self.counter = 0
        self.crashes = 0
        self.log: Any = self._open()

    def _open(self) -> Any:
        return open_log(self.fs, fsync=self.POLICY, fsync_interval_ms=3_600_000)

    def _live(self, index: int) -> uuid.UUID | None:
        live = [r for r in RUNS if r not in self.retired]
        return live[index % len(live)] if live else None

    @rule(which=st.integers(0, 7), size=st.sampled_from([10, 60, 300, 900]))
    def append(self, which: int, size: int) -> None:
        run_id = self._live(which)
        if run_id is None:
            return
        self.counter += 1
        env = self.log.append(event(run_id, self.counter, size))
        self.model.acknowledged([env])

    @rule(which=st.integers(0, 7), sizes=st.lists(st.sampled_from([10, 80, 400]), max_size=6))
    def append_batch(self, which: int, sizes: list[int]) -> None:
        run_id = self._live(which)
        if run_id is None or not sizes:
            return
        events = []
        for size in sizes:
            self.counter += 1
            events.append(event(run_id, self.counter, size))
        envs = self.log.append_batch(events)
        assert len(envs) == len(events)
        self.model.acknowledged(envs)

    @rule()
    def sync(self) -> None:
        self.log.sync()
        self.model.synced()

    @precondition(lambda self: len(self.retired) < len(RUNS) - 1)
    @rule(which=st.integers(0, 7))
    def delete_run(self, which: int) -> None:
        run_id = self._live(which)
        if run_id is None:
            return
        existed = bool(self.model.run(run_id).acked)
        deleted = self.log.delete_run(run_id)
        # A run left with no events by a crash may still have a directory; either answer is
        # fine for it. A run with events must be reported deleted.
        assert deleted or not existed
        self.retired.add(run_id)
        self.model.deleted(run_id, durable=self.model.durable_ack)

    @rule(kind=st.sampled_from(CRASHES), seed=st.integers(0, 2**32 - 1))
    def crash_and_reopen(self, kind: str, seed: int) -> None:
        self.crashes += 1
        mode = None if kind == "process" else kind
        old = self.log
        self.fs = self.fs.reboot(mode, random.Random(seed))  # type: ignore[arg-type]
        _abandon(old)
        self.log = self._open()
        self.model.check(self.log, power_lost=mode is not None)

    @rule()
    def clean_reopen(self) -> None:
        self.log.close()
        self.log = self._open()
        self.model.check(self.log, power_lost=False)

    @invariant()
    def next_seq_is_continuous(self) -> None:
        for run_id, model in self.model.runs.items():
            if not model.deleted:
                assert self.log.last_seq(run_id) == (len(model.acked) or None)

    def teardown(self) -> None:
        self.fs = self.fs.reboot("drop_unsynced")
        _abandon(self.log)
        self.log = self._open()
        self.model.check(self.log, power_lost=True)
        self.log.close()


def _abandon(log: Any) -> None:
    """Let go of a log whose process "died": its file system now refuses every call."""
    with contextlib.suppress(Exception, SimulatedCrash):
        log.close()


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples * (10 if SOAK else 1),
        stateful_step_count=60 if SOAK else 40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


class AlwaysMachine(PowerLossMachine):
    POLICY = "always"


class BatchMachine(PowerLossMachine):
    POLICY = "batch"


class IntervalMachine(PowerLossMachine):
    POLICY = "interval"


class NeverMachine(PowerLossMachine):
    POLICY = "never"


TestPowerLossUnderAlways = AlwaysMachine.TestCase
TestPowerLossUnderAlways.settings = _settings(150)
TestPowerLossUnderBatch = BatchMachine.TestCase
TestPowerLossUnderBatch.settings = _settings(120)
TestPowerLossUnderInterval = IntervalMachine.TestCase
TestPowerLossUnderInterval.settings = _settings(120)
TestPowerLossUnderNever = NeverMachine.TestCase
TestPowerLossUnderNever.settings = _settings(120)


# --- directed scenarios (clear failure messages for the commonest cases) ----------------------


def _reopen_after_power_loss(fs: FaultFS, log: Any, **options: Any) -> tuple[FaultFS, Any]:
    fs = fs.reboot("drop_unsynced")
    _abandon(log)
    return fs, open_log(fs, **options)


def test_first_append_to_a_new_directory_survives_power_loss_under_always() -> None:
    fs = fresh_fs()
    log = open_log(fs, fsync="always")
    model = LogModel(durable_ack=True)
    model.acknowledged([log.append(event(RUNS[0], 1))])
    fs, log = _reopen_after_power_loss(fs, log, fsync="always")
    model.check(log, power_lost=True)
    assert log.append(event(RUNS[0], 2)).seq == 2
    log.close()


def test_appends_across_segment_rolls_survive_power_loss_under_batch() -> None:
    fs = fresh_fs()
    log = open_log(fs, fsync="batch")
    model = LogModel(durable_ack=True)
    for n in range(60):
        model.acknowledged([log.append(event(RUNS[n % 2], n, 200))])
    assert log.run_info(RUNS[0]).segments > 1
    fs, log = _reopen_after_power_loss(fs, log, fsync="batch")
    model.check(log, power_lost=True)
    log.close()


def test_synced_appends_survive_power_loss_under_never() -> None:
    fs = fresh_fs()
    log = open_log(fs, fsync="never")
    model = LogModel(durable_ack=False)
    for n in range(30):
        model.acknowledged([log.append(event(RUNS[0], n, 200))])
    log.sync()
    model.synced()
    for n in range(30, 40):
        model.acknowledged([log.append(event(RUNS[0], n, 200))])
    fs, log = _reopen_after_power_loss(fs, log, fsync="never")
    model.check(log, power_lost=True)
    log.close()


def test_interval_flusher_makes_appends_durable_without_sync() -> None:
    fs = fresh_fs()
    log = open_log(fs, fsync="interval", fsync_interval_ms=5)
    model = LogModel(durable_ack=False)
    model.acknowledged([log.append(event(RUNS[0], 1))])
    seg = f"{LOG_DIR}/runs/{RUNS[0]}/{1:020d}.seg"
    flushed = threading.Event()
    for _ in range(2000):  # polls for the flusher's effect; no timing is asserted
        if fs.durably_exists(seg) and len(fs.durable_bytes(seg)) == len(fs.read_bytes(seg)):
            flushed.set()
            break
        flushed.wait(0.005)
    assert flushed.is_set(), "the interval flusher never synced the appended frame"
    model.synced()
    fs, log = _reopen_after_power_loss(fs, log, fsync="interval")
    model.check(log, power_lost=True)
    log.close()
