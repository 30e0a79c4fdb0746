"""A crash after every file-system call of the operations that touch several files.

Each sweep starts from one durable log and runs one operation (a segment roll, a run deletion,
a retention pass) with ``FaultFS.halt_after(k)`` for k = 0, 1, 2, ... until the operation
completes: the file system freezes after its k-th mutating call, as if the process died there.
From every frozen state two futures are checked: a process crash (the page cache survives) and
a power loss (only synced state survives). Each reopened log must be consistent (every run a
gapless prefix of what was acknowledged, a run being deleted wholly present or wholly absent,
no leftovers in ``trash/`` or ``*.tmp``) and must lose nothing acknowledged.
"""

from __future__ import annotations

import copy
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from .faultfs import FaultFS, SimulatedCrash
from .model import LOG_DIR, LogModel, event, fresh_fs, open_log, read_run, terminal

A = uuid.UUID("0190a8c4-1e00-7000-8000-0000000000a1")
B = uuid.UUID("0190a8c4-1e00-7000-8000-0000000000b2")
OLD_DONE = uuid.UUID("0190a8c4-1e00-7000-8000-0000000000c3")
OLD_OPEN = uuid.UUID("0190a8c4-1e00-7000-8000-0000000000d4")
YOUNG_DONE = uuid.UUID("0190a8c4-1e00-7000-8000-0000000000e5")
POLICIES = ["always", "batch", "interval", "never"]

Operation = Callable[[Any, LogModel], None]


@pytest.fixture(autouse=True)
def _quiet_recovery_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="segmentlog")


def _base(policy: str, fill: Callable[[Any], None], clock: list[float] | None = None) -> FaultFS:
    fs = fresh_fs()
    if clock is not None:
        fs.clock = lambda: clock[0]
    log = open_log(fs, fsync=policy)
    fill(log)
    log.close()
    fs.sync_all()
    return fs


def _model_of(log: Any, policy: str, runs: list[uuid.UUID]) -> LogModel:
    model = LogModel(durable_ack=policy in ("always", "batch"))
    for run_id in runs:
        envs = read_run(log, run_id)
        if envs:
            model.acknowledged(envs)
        model.run(run_id).durable = len(envs)  # the base state is synced
    return model


def _check_reopened(fs: FaultFS, model: LogModel, power_lost: bool, where: str) -> None:
    log = open_log(fs)
    try:
        model.check(log, power_lost=power_lost)
    except AssertionError as exc:
        raise AssertionError(f"{where}: {exc}") from exc
    leftovers = [p for p in fs.walk_files() if p.endswith(".tmp") or "/trash/" in p]
    assert not leftovers, f"{where}: leftovers after reopen: {leftovers}"
    for run_id, run in model.runs.items():
        if not run.deleted:
            nxt = log.append(event(run_id, 777))
            assert nxt.seq == len(run.acked) + 1, f"{where}: next append got seq {nxt.seq}"
    log.close()


def _sweep(policy: str, base: FaultFS, runs: list[uuid.UUID], operation: Operation) -> int:
    """Run ``operation`` halting after each mutating call; returns the number of steps."""
    for k in range(400):
        fs = base.clone()
        log = open_log(fs, fsync=policy, fsync_interval_ms=3_600_000)
        model = _model_of(log, policy, runs)
        fs.halt_after(k)
        try:
            operation(log, model)
        except SimulatedCrash:
            completed = False
        else:
            completed = True
        step = fs.journal[-1] if fs.journal else ("open", LOG_DIR)
        where = f"{policy}: crash after call {k} ({step[0]} {step[1]})"
        if completed:
            fs.clear_faults()
            log.close()
            _check_reopened(fs, model, power_lost=False, where=f"{policy}: completed")
            return k
        _check_reopened(fs.clone(), copy.deepcopy(model), False, f"{where}, process crash")
        lost = fs.clone()
        lost.power_loss("drop_unsynced")
        _check_reopened(lost, copy.deepcopy(model), True, f"{where}, power loss")
    raise AssertionError("the operation never completed")


@pytest.mark.parametrize("policy", POLICIES)
def test_crash_at_every_step_of_a_segment_roll(policy: str) -> None:
    def fill(log: Any) -> None:
        for n in range(14):
            log.append(event(A, n, 200))

    base = _base(policy, fill)

    def roll(log: Any, model: LogModel) -> None:
        before = log.run_info(A).segments
        for n in range(4):
            model.append(log, event(A, 100 + n, 600))
        model.append_batch(log, [event(A, 200 + n, 300) for n in range(3)])
        assert log.run_info(A).segments > before, "the operation should roll a segment"
        log.sync()
        model.synced()

    assert _sweep(policy, base, [A], roll) > 10


@pytest.mark.parametrize("policy", POLICIES)
def test_crash_at_every_step_of_a_run_deletion(policy: str) -> None:
    def fill(log: Any) -> None:
        for n in range(40):
            log.append(event(A if n % 3 else B, n, 200))

    base = _base(policy, fill)

    def delete(log: Any, model: LogModel) -> None:
        model.deleting(A)
        assert log.delete_run(A) is True
        model.deleted(A, durable=policy != "never")
        model.append(log, event(B, 999))

    assert _sweep(policy, base, [A, B], delete) >= 2


@pytest.mark.parametrize("policy", ["always", "never"])
def test_crash_at_every_step_of_retention(policy: str) -> None:
    clock = [time.time() - 10 * 86400]

    def fill(log: Any) -> None:
        for run_id in (OLD_DONE, OLD_OPEN):
            for n in range(25):
                log.append(event(run_id, n, 200))
        log.append(terminal(OLD_DONE))
        clock[0] = time.time()
        log.append(event(YOUNG_DONE, 1))
        log.append(terminal(YOUNG_DONE))

    base = _base(policy, fill, clock)
    assert base.mtime(f"{LOG_DIR}/runs/{OLD_DONE}") < time.time() - 86400
    runs = [OLD_DONE, OLD_OPEN, YOUNG_DONE]

    def retain(log: Any, model: LogModel) -> None:
        model.deleting(OLD_DONE)
        deleted = log.retain(max_age=86400)
        assert deleted == [OLD_DONE]
        model.deleted(OLD_DONE, durable=policy != "never")

    assert _sweep(policy, base, runs, retain) >= 2
