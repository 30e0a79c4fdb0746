"""``multiprocess=True``: several writer processes on one directory, step by step.

Every test drives real processes (``tests/multiproc.py``: spawn-context workers over pipes,
every wait bounded) and checks what each process was told against what the others, and a
fresh open, then find:

- who may write: an exclusive writer and multiprocess writers exclude each other with
  ``LockedError`` in both orders, multiprocess writers share, two exclusive writers do not;
- the pitfalls the design must avoid: a run's lock survives the holder opening and closing
  other descriptors of the same files (the POSIX ``fcntl`` trap), a writer re-reads the tail
  under the lock (alternating appends continue each other's seqs), and concurrent first
  opens of a missing or empty directory all succeed;
- deletes, ``retain`` and rolls across processes: an append after another process deleted
  the run starts it afresh at seq 1 and never lands in the deleted file;
- ``session_id`` carries across processes; ``fork`` children get ``LogForkedError``;
  ``segmentlog.aio.open(multiprocess=True)`` works.

Descriptors held per looked-at run, and an aio log used after fork, are covered in
``test_descriptors_and_fork.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import segmentlog
import segmentlog.aio
from segmentlog import (
    LockedError,
    LogForkedError,
    RunCompleted,
    RunStarted,
    UnsupportedPlatformError,
)
from segmentlog._fs import FileSystem
from segmentlog.format import segment_name
from tests.multiproc import (
    SPAWN,
    TIMEOUT,
    GateSpec,
    RemoteError,
    delta,
    lock_waiting,
    open_gate,
    read_all,
    wait_reached,
    workers,
)

MP: dict[str, Any] = {"multiprocess": True}
#: Small segments and index intervals: a few appends of about 700 bytes roll a segment.
SMALL: dict[str, Any] = {"segment_bytes": 4096, "index_interval_bytes": 256}


def started(run_id: uuid.UUID, session: uuid.UUID) -> RunStarted:
    return RunStarted(run_id=run_id, session_id=session, provider="p", model="m")


def tokens(envelopes: list[Any]) -> list[str]:
    """The names (``delta`` tokens, or event types) of envelopes, in order."""
    return [getattr(e.event, "delta", type(e.event).__name__).rstrip("x") for e in envelopes]


def fresh_read(path: Path, run_id: uuid.UUID) -> list[Any]:
    """The run as a fresh exclusive open finds it (every worker must have closed)."""
    with segmentlog.open(path) as log:
        got = read_all(log, run_id)
        assert log.recovery_reports == [], "a clean shutdown left something to repair"
        return got


# --- who may write ---------------------------------------------------------------------------


def test_exclusive_writer_locks_out_multiprocess_writers(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    run = uuid.uuid4()
    with workers(2) as (a, b):
        a.call("open", path)
        a.call("append", delta(run, "a"))
        with pytest.raises(RemoteError) as refused:
            b.call("open", path, **MP)
        assert refused.value.kind == "LockedError"
        assert "exclusive writer" in refused.value.message
        assert "multiprocess=True" in refused.value.message
        a.call("close")
        b.call("open", path, **MP)  # the exclusive writer is gone: now it may
        assert b.call("append", delta(run, "b")).seq == 2


def test_multiprocess_writer_locks_out_exclusive_writers(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    with workers(2) as (a, b):
        a.call("open", path, **MP)
        with pytest.raises(RemoteError) as refused:
            b.call("open", path)
        assert refused.value.kind == "LockedError"
        assert "multiprocess=True" in refused.value.message
        # This process too: the lock is between open file descriptions, not processes.
        with pytest.raises(LockedError):
            segmentlog.open(path)
        a.call("close")
        b.call("open", path)


def test_multiprocess_writers_share_the_directory(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    run = uuid.uuid4()
    with workers(3) as (a, b, c):
        a.call("open", path, **MP)
        b.call("open", path, **MP)
        c.call("open", path, read_only=True)
        with segmentlog.open(path, **MP) as here:  # a third, in the test process
            assert a.call("append", delta(run, "a")).seq == 1
            assert b.call("append", delta(run, "b")).seq == 2
            assert here.append(delta(run, "here")).seq == 3
        assert tokens(c.call("read_all", run)) == ["a", "b", "here"]


def test_a_second_exclusive_writer_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    with workers(2) as (a, b):
        a.call("open", path)
        with pytest.raises(RemoteError) as refused:
            b.call("open", path)
        assert refused.value.kind == "LockedError"


class _NoOFDLocks(FileSystem):
    """A platform without open-file-description locks."""

    @property
    def shared_locks(self) -> bool:
        return False


def test_multiprocess_needs_ofd_locks(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedPlatformError, match="open-file-description locks"):
        segmentlog.open(tmp_path / "log", fs=_NoOFDLocks(), **MP)
    assert not (tmp_path / "log").exists(), "a refused open must not create the directory"
    with segmentlog.open(tmp_path / "log", fs=_NoOFDLocks()) as log:  # exclusive still works
        assert log.append(delta(uuid.uuid4(), "x")).seq == 1


# --- pitfall: closing other descriptors never releases a run's lock --------------------------


def hold_and_churn(
    state: dict[str, Any], path: str, run_id: uuid.UUID, gate_dir: str
) -> tuple[list[str], list[int]]:
    """In the holder: append on a thread (held inside its fdatasync by the gate, so it holds
    the run's lock), and meanwhile open and close other descriptors of every file involved,
    including a whole read-only log of the same directory."""
    log = state["log"]
    box: dict[str, Any] = {}

    def append() -> None:
        box["env"] = log.append(delta(run_id, "held"))

    thread = threading.Thread(target=append)
    thread.start()
    state["held"] = (thread, box)
    wait_reached(gate_dir, "fdatasync", 2)
    run_dir = f"{path}/runs/{run_id}"
    churned = [f"{path}/LOCKS", f"{path}/LOCK", f"{run_dir}/STATE", f"{run_dir}/{segment_name(1)}"]
    for name in churned:
        for flags in (os.O_RDONLY, os.O_RDWR):
            os.close(os.open(name, flags))
    with segmentlog.open(path, read_only=True) as reader:
        seen = [e.seq for e in read_all(reader, run_id)]
    return churned, seen


def finish_held(state: dict[str, Any]) -> int:
    thread, box = state.pop("held")
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    return int(box["env"].seq)


def append_then_look_at_gate(
    state: dict[str, Any], run_id: uuid.UUID, go_file: str
) -> tuple[int, bool]:
    """Append; then report the seq and whether the holder's gate was open by then."""
    seq = state["log"].append(delta(run_id, "waiter")).seq
    return seq, os.path.exists(go_file)


def test_closing_other_descriptors_never_releases_a_run_lock(tmp_path: Path) -> None:
    path, gates = str(tmp_path / "log"), str(tmp_path / "gates")
    os.mkdir(gates)
    run = uuid.uuid4()
    with workers(2) as (holder, waiter):
        spec = GateSpec(gates, fdatasync={2: "hold"})
        holder.call("open", path, fs=spec, fsync="always", **MP)
        assert holder.call("append", delta(run, "first")).seq == 1
        churned, seen = holder.call("run", hold_and_churn, path, run, gates)
        assert len(churned) == 4
        assert seen == [1], "a read-only log delivered the held (unacknowledged) append"

        waiter.call("open", path, **MP)
        waiter.send("run", append_then_look_at_gate, run, os.path.join(gates, "go-fdatasync-2"))
        deadline = time.monotonic() + TIMEOUT
        while (waiting := lock_waiting(waiter.pid)) is False and time.monotonic() < deadline:
            assert not waiter.answered(), "the waiter appended while the holder held the run"
            time.sleep(0.01)
        if waiting is None:  # no /proc: give the waiter time to reach the lock
            time.sleep(1.0)
        assert waiting is not False, "the waiter never reached the run's lock"
        assert not waiter.answered(), "the waiter appended while the holder held the run"

        open_gate(gates, "fdatasync", 2)
        assert holder.call("run", finish_held) == 2
        seq, gate_was_open = waiter.recv()
        assert gate_was_open, "the waiter's append finished before the holder released the run"
        assert seq == 3
    assert tokens(fresh_read(tmp_path / "log", run)) == ["first", "held", "waiter"]


# --- pitfall: a writer re-reads the tail under the lock --------------------------------------


def test_alternating_writers_continue_each_others_seqs(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    run = uuid.uuid4()
    expected: list[str] = []
    with workers(2) as pair:
        for w in pair:
            w.call("open", path, **MP, **SMALL)
        for i in range(24):
            w = pair[i % 2]
            assert w.call("last_seq", run) == (len(expected) or None)
            if i % 3 == 2:
                names = [f"{i}.{j}" for j in range(3)]
                envs = w.call("append_batch", [delta(run, n, 700) for n in names])
            else:
                names = [str(i)]
                envs = [w.call("append", delta(run, names[0], 700))]
            assert [e.seq for e in envs] == list(
                range(len(expected) + 1, len(expected) + 1 + len(names))
            )
            expected.extend(names)
            other = pair[(i + 1) % 2]
            assert tokens(other.call("read_all", run)) == expected
            assert other.call("list_after", run, len(expected) - 1, 5)[0].seq == len(expected)
    assert tokens(fresh_read(tmp_path / "log", run)) == expected
    assert len(list((tmp_path / "log" / "runs" / str(run)).glob("*.seg"))) > 3, "no rolls"


def test_session_id_carries_across_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    run, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with workers(3) as (a, b, c):
        for w in (a, b, c):
            w.call("open", path, **MP)
        assert a.call("append", delta(run, "before")).session_id is None
        assert b.call("append", started(run, first)).session_id == first
        assert c.call("append", delta(run, "c")).session_id == first
        assert a.call("append_batch", [delta(run, "a1"), delta(run, "a2")])[1].session_id == first
        assert c.call("append", started(run, second)).session_id == second
        assert b.call("append", delta(run, "b")).session_id == second
        assert a.call("append", delta(run, "a3")).session_id == second
        assert a.call("run_info", run).session_id == second
    sessions = [e.session_id for e in fresh_read(tmp_path / "log", run)]
    assert sessions == [None, first, first, first, first, second, second, second]


# --- pitfall: concurrent first opens ---------------------------------------------------------


def first_open(barrier: Any, results: Any, index: int, path: str, shared_run: uuid.UUID) -> None:
    """One of several processes that open a missing or empty directory at the same moment,
    then append to a shared run and to a run of its own."""
    try:
        barrier.wait(TIMEOUT)
        with segmentlog.open(path, **MP) as log:
            for i in range(4):
                log.append(delta(shared_run, f"{index}.{i}"))
            log.append(delta(uuid.UUID(int=index + 1), "own"))
        results.put((index, "ok"))
    except BaseException as exc:
        results.put((index, f"{type(exc).__name__}: {exc}"))


def exclusive_first_open(barrier: Any, results: Any, index: int, path: str) -> None:
    """Open exclusively at the same moment as the others; hold the log until all have tried."""
    try:
        barrier.wait(TIMEOUT)
        try:
            log = segmentlog.open(path)
        except LockedError:
            barrier.wait(TIMEOUT)
            results.put((index, "LockedError"))
            return
        log.append(delta(uuid.UUID(int=index + 1), "own"))
        barrier.wait(TIMEOUT)
        log.close()
        results.put((index, "ok"))
    except BaseException as exc:
        results.put((index, f"{type(exc).__name__}: {exc}"))


def race(target: Any, count: int, *args: Any) -> dict[int, str]:
    """Start ``count`` processes of ``target(barrier, results, index, *args)`` that pass a
    barrier together; return what each reported."""
    barrier = SPAWN.Barrier(count)
    results = SPAWN.Queue()
    procs = [SPAWN.Process(target=target, args=(barrier, results, i, *args)) for i in range(count)]
    for p in procs:
        p.start()
    out: dict[int, str] = {}
    try:
        for _ in range(count):
            index, status = results.get(timeout=TIMEOUT)
            out[index] = status
    finally:
        for p in procs:
            p.join(TIMEOUT)
            if p.is_alive():
                p.kill()
                p.join(TIMEOUT)
    assert [p.exitcode for p in procs] == [0] * count
    return out


def check_fresh_directory(path: Path) -> None:
    names = set(os.listdir(path))
    assert names <= {"SEGMENTLOG", "LOCK", "LOCKS", "runs", "trash"}, sorted(names)
    assert {"SEGMENTLOG", "LOCK", "runs", "trash"} <= names, sorted(names)
    assert json.loads((path / "SEGMENTLOG").read_text()) == {"format": "segmentlog", "version": 1}
    assert os.listdir(path / "trash") == []


def _place(tmp_path: Path, attempt: int, where: str) -> Path:
    path = tmp_path / str(attempt) / ("a/b/log" if where == "missing-parent" else "log")
    if where == "empty":
        path.mkdir(parents=True)
    elif where == "missing":
        path.parent.mkdir(parents=True)
    return path


@pytest.mark.parametrize("where", ["missing", "missing-parent", "empty"])
def test_concurrent_first_opens_all_succeed(tmp_path: Path, where: str) -> None:
    procs = 5
    for attempt in range(2):
        path = _place(tmp_path, attempt, where)
        shared = uuid.uuid4()
        assert race(first_open, procs, str(path), shared) == {i: "ok" for i in range(procs)}
        check_fresh_directory(path)
        with segmentlog.open(path) as log:
            envs = read_all(log, shared)
            assert [e.seq for e in envs] == list(range(1, 4 * procs + 1))
            assert sorted(tokens(envs)) == sorted(
                f"{i}.{j}" for i in range(procs) for j in range(4)
            )
            for i in range(procs):
                assert tokens(read_all(log, uuid.UUID(int=i + 1))) == ["own"]
            assert log.recovery_reports == []


@pytest.mark.parametrize("where", ["missing", "empty"])
def test_concurrent_exclusive_first_opens_one_wins(tmp_path: Path, where: str) -> None:
    procs = 4
    path = _place(tmp_path, 0, where)
    results = race(exclusive_first_open, procs, str(path))
    winners = [i for i, status in results.items() if status == "ok"]
    assert len(winners) == 1, results
    assert sorted(results.values()) == ["LockedError"] * (procs - 1) + ["ok"], results
    check_fresh_directory(path)
    with segmentlog.open(path) as log:
        assert log.runs() == [uuid.UUID(int=winners[0] + 1)]


# --- deletes, retention and rolls across processes -------------------------------------------


def test_append_after_another_process_deleted_the_run_starts_at_seq_1(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    run, session = uuid.uuid4(), uuid.uuid4()
    with workers(2) as (a, b):
        a.call("open", path, **MP)
        b.call("open", path, **MP)
        a.call("append", started(run, session))
        a.call("append_batch", [delta(run, "old1"), delta(run, "old2")])
        assert b.call("last_seq", run) == 3
        old_segment = os.open(f"{path}/runs/{run}/{segment_name(1)}", os.O_RDONLY)
        try:
            old_size = os.fstat(old_segment).st_size
            assert b.call("delete_run", run) is True
            assert a.call("last_seq", run) is None
            env = a.call("append", delta(run, "new"))
            assert (env.seq, env.session_id) == (1, None)
            assert tokens(b.call("read_all", run)) == ["new"]
            assert os.fstat(old_segment).st_size == old_size, "written into the deleted file"
            assert os.fstat(old_segment).st_nlink == 0
        finally:
            os.close(old_segment)
        assert a.call("append_batch", [delta(run, "new2"), delta(run, "new3")])[-1].seq == 3
    assert tokens(fresh_read(tmp_path / "log", run)) == ["new", "new2", "new3"]


def test_append_after_delete_and_recreate_elsewhere_continues_the_new_run(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    run, old_session, new_session = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with workers(3) as (a, b, c):
        for w in (a, b, c):
            w.call("open", path, **MP)
        a.call("append", started(run, old_session))
        a.call("append", delta(run, "old"))
        assert b.call("delete_run", run) is True
        assert c.call("append", started(run, new_session)).seq == 1
        assert c.call("append", delta(run, "c")).seq == 2
        env = a.call("append", delta(run, "a"))  # a's view is of the deleted incarnation
        assert (env.seq, env.session_id) == (3, new_session)
        assert tokens(b.call("read_all", run)) == ["RunStarted", "c", "a"]
    assert tokens(fresh_read(tmp_path / "log", run)) == ["RunStarted", "c", "a"]


def test_delete_reaches_a_writer_whose_descriptors_were_evicted(tmp_path: Path) -> None:
    """With ``max_open_files=2`` the writer keeps one run's descriptors (and state map) at a
    time: the deleted run's were closed before the delete, so only the files can tell."""
    path = str(tmp_path / "log")
    run, others = uuid.uuid4(), [uuid.uuid4() for _ in range(3)]
    with workers(2) as (a, b):
        a.call("open", path, max_open_files=2, **MP)
        b.call("open", path, **MP)
        a.call("append", delta(run, "old"))
        for other in others:
            a.call("append", delta(other, "other"))
        assert b.call("delete_run", run) is True
        assert a.call("append", delta(run, "new")).seq == 1
        b.call("append", delta(run, "b"))  # and the re-created run goes on from either
        for other in others:
            a.call("append", delta(other, "other"))
        assert a.call("append", delta(run, "new2")).seq == 3
    assert tokens(fresh_read(tmp_path / "log", run)) == ["new", "b", "new2"]


def append_many(
    state: dict[str, Any],
    run_ids: list[uuid.UUID],
    count: int,
    tag: str,
    size: int = 200,
    threads: int = 1,
) -> list[tuple[uuid.UUID, int, str]]:
    """Append ``count`` events per thread, cycling over ``run_ids`` (every fifth a batch of
    two); return ``(run, seq, token)`` of each acknowledged one."""
    log = state["log"]
    out: list[tuple[uuid.UUID, int, str]] = []
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(count):
                run = run_ids[i % len(run_ids)]
                names = [f"{tag}.{t}.{i}"] + ([f"{tag}.{t}.{i}b"] if i % 5 == 4 else [])
                envs = log.append_batch([delta(run, n, size) for n in names])
                out.extend((run, e.seq, n) for e, n in zip(envs, names, strict=True))
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(TIMEOUT)
    if errors:
        raise errors[0]
    return out


def make_finished_runs(state: dict[str, Any], count: int) -> list[uuid.UUID]:
    log = state["log"]
    made = []
    for _ in range(count):
        run = uuid.uuid4()
        log.append(started(run, uuid.uuid4()))
        log.append(RunCompleted(run_id=run, finish_reason="stop", iterations=1))
        made.append(run)
    return made


def test_retain_in_one_process_while_another_appends(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    busy = [uuid.uuid4(), uuid.uuid4()]
    with workers(2) as (appender, keeper):
        appender.call("open", path, fsync="never", **MP, **SMALL)
        keeper.call("open", path, fsync="never", **MP)
        appender.send("run", append_many, busy, 600, "a", 300)
        deleted: set[uuid.UUID] = set()
        for _ in range(4):
            finished = keeper.call("run", make_finished_runs, 5)
            assert set(keeper.call("retain", max_age=0)) == set(finished)
            deleted.update(finished)
        acked = appender.recv()
        assert keeper.call("retain", max_age=0) == []  # the busy runs are not finished
    with segmentlog.open(tmp_path / "log") as log:
        assert set(log.runs()) == set(busy)
        for run in busy:
            mine = sorted((seq, name) for r, seq, name in acked if r == run)
            got = read_all(log, run)
            assert [(e.seq, t) for e, t in zip(got, tokens(got), strict=True)] == mine
            assert [e.seq for e in got] == list(range(1, len(got) + 1))


def test_rolls_interleaved_between_processes_keep_seqs_gapless(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    run = uuid.uuid4()
    with workers(3) as trio:
        for w in trio:
            w.call("open", path, fsync="batch", **MP, **SMALL)
        for w in trio:  # all at once, two threads each
            w.send("run", append_many, [run], 40, w.name, 700, 2)
        acked = [item for w in trio for item in w.recv()]
        views = [tokens(w.call("read_all", run)) for w in trio]
    seqs = sorted(seq for _, seq, _ in acked)
    assert seqs == list(range(1, len(seqs) + 1)), "seqs not unique and gapless across processes"
    got = fresh_read(tmp_path / "log", run)
    assert [(e.seq, t) for e, t in zip(got, tokens(got), strict=True)] == sorted(
        (seq, name) for _, seq, name in acked
    )
    assert views == [tokens(got)] * 3
    segments = list((tmp_path / "log" / "runs" / str(run)).glob("*.seg"))
    assert len(segments) > 10, "the appends did not roll segments"


# --- fork ------------------------------------------------------------------------------------


def fork_and_use(state: dict[str, Any], path: str, multiprocess: bool) -> dict[str, Any]:
    """Open a log, fork, use it in the child (every call must refuse), close it there, and
    keep appending in the parent."""
    log = segmentlog.open(path, multiprocess=multiprocess)
    run = uuid.uuid4()
    log.append(delta(run, "before"))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        out: dict[str, Any] = {}
        calls = {
            "append": lambda: log.append(delta(run, "child")),
            "append_batch": lambda: log.append_batch([delta(run, "child")]),
            "list_after": lambda: log.list_after(run, 0),
            "last_seq": lambda: log.last_seq(run),
            "runs": lambda: log.runs(),
            "run_info": lambda: log.run_info(run),
            "delete_run": lambda: log.delete_run(run),
            "sync": lambda: log.sync(),
            "subscribe": lambda: next(iter(log.subscribe(run))),
        }
        for name, call in calls.items():
            try:
                call()
                out[name] = "no error"
            except BaseException as exc:
                out[name] = [type(exc).__name__, str(exc)]
        try:
            log.close()
            out["close"] = "ok"
        except BaseException as exc:
            out["close"] = [type(exc).__name__, str(exc)]
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        child = json.loads(pipe.read())
    os.waitpid(pid, 0)
    seqs = [log.append(delta(run, f"after{i}")).seq for i in range(3)]
    log.close()
    return {"child": child, "parent_seqs": seqs, "run": str(run)}


@pytest.mark.parametrize("multiprocess", [False, True])
def test_a_log_used_in_a_fork_child_raises_log_forked_error(
    tmp_path: Path, multiprocess: bool
) -> None:
    path = str(tmp_path / "log")
    with workers(1) as (w,):
        got = w.call("run", fork_and_use, path, multiprocess)
    child = got["child"]
    assert child.pop("close") == "ok", "close() in the child must be allowed"
    for name, outcome in child.items():
        assert outcome != "no error", f"{name} worked in a fork child"
        kind, message = outcome
        assert kind == "LogForkedError", f"{name}: {kind}: {message}"
        assert "fork" in message and "open it again in the child" in message
    assert got["parent_seqs"] == [2, 3, 4]
    assert tokens(fresh_read(tmp_path / "log", uuid.UUID(got["run"]))) == [
        "before",
        "after0",
        "after1",
        "after2",
    ]
    assert issubclass(LogForkedError, segmentlog.SegmentLogError)


def close_in_fork_child_while_parent_appends(
    state: dict[str, Any], path: str, multiprocess: bool
) -> tuple[list[int], str]:
    """The child closes the inherited log only after the parent appended more: the child's
    copy of the writer's view is stale by then."""
    log = segmentlog.open(path, multiprocess=multiprocess, fsync="batch")
    run = uuid.uuid4()
    seqs = [log.append(delta(run, "before")).seq]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)  # the parent has appended
        log.close()
        os._exit(0)
    os.close(r)
    seqs += [log.append(delta(run, f"p{i}", 100)).seq for i in range(20)]
    os.write(w, b"x")
    os.waitpid(pid, 0)
    os.close(w)
    seqs += [log.append(delta(run, f"q{i}", 100)).seq for i in range(3)]
    log.close()
    return seqs, str(run)


@pytest.mark.parametrize("multiprocess", [False, True])
def test_closing_the_log_in_a_fork_child_leaves_the_parents_appends_alone(
    tmp_path: Path, multiprocess: bool
) -> None:
    """``close()`` in a fork child must write nothing: once it synced and trimmed the run's
    active segment to the child's stale size, cutting off everything the parent appended
    since the fork (the parent's next writes then landed past a hole of zeros, and the
    reopened run was corrupt)."""
    path = str(tmp_path / "log")
    with workers(1) as (w,):
        seqs, run = w.call("run", close_in_fork_child_while_parent_appends, path, multiprocess)
    assert seqs == list(range(1, 25))
    assert [e.seq for e in fresh_read(tmp_path / "log", uuid.UUID(run))] == seqs


# --- asyncio ---------------------------------------------------------------------------------


def aio_append(state: dict[str, Any], path: str, run: uuid.UUID, tag: str, n: int) -> list[int]:
    async def main() -> list[int]:
        log = await segmentlog.aio.open(path, multiprocess=True)
        async with log:
            envs = await asyncio.gather(*(log.append(delta(run, f"{tag}{i}")) for i in range(n)))
            page = await log.list_after(run, 0, 1000)
            assert {e.seq for e in envs} <= {e.seq for e in page}
            return [e.seq for e in envs]

    return asyncio.run(main())


def aio_subscribe(state: dict[str, Any], path: str, run: uuid.UUID) -> list[tuple[int, str]]:
    async def main() -> list[tuple[int, str]]:
        async with segmentlog.aio.open(path, multiprocess=True) as log:
            out = []
            async for env in log.subscribe(run, poll_interval=0.05):
                out.append((env.seq, tokens([env])[0]))
            return out

    return asyncio.run(main())


def aio_finish(state: dict[str, Any], path: str, run: uuid.UUID, n: int) -> int:
    async def main() -> int:
        async with segmentlog.aio.open(path, multiprocess=True) as log:
            for i in range(n):
                await log.append(delta(run, f"w{i}"))
            done = RunCompleted(run_id=run, finish_reason="stop", iterations=1)
            return (await log.append_batch([done]))[0].seq

    return asyncio.run(main())


def test_aio_open_multiprocess_in_two_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    run = uuid.uuid4()
    with workers(3) as (a, b, follower):
        follower.send("run", aio_subscribe, path, run)
        a.send("run", aio_append, path, run, "a", 30)
        b.send("run", aio_append, path, run, "b", 30)
        seqs = a.recv() + b.recv()
        assert sorted(seqs) == list(range(1, 61))
        assert a.call("run", aio_finish, path, run, 5) == 66
        followed = follower.recv()
    assert [seq for seq, _ in followed] == list(range(1, 67))
    assert followed[-1][1] == "RunCompleted"
    assert [name for _, name in followed] == tokens(fresh_read(tmp_path / "log", run))


# --- following inside writer processes -------------------------------------------------------


def subscribe_all(state: dict[str, Any], run: uuid.UUID) -> list[int]:
    return [e.seq for e in state["log"].subscribe(run, poll_interval=0.05)]


def test_subscribe_in_a_multiprocess_writer_sees_other_processes_appends(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    run = uuid.uuid4()
    with workers(2) as (follower, writer):
        follower.call("open", path, **MP)
        writer.call("open", path, **MP)
        follower.send("run", subscribe_all, run)
        for i in range(20):
            writer.call("append", delta(run, str(i)))
        writer.call("append", RunCompleted(run_id=run, finish_reason="stop", iterations=1))
        assert follower.recv() == list(range(1, 22))


def test_wait_for_in_a_multiprocess_writer_wakes_for_other_processes_appends(
    tmp_path: Path,
) -> None:
    """In a ``multiprocess=True`` writer, ``wait_for`` must wake for another process's append
    too, not only this process's (it once returned False at its timeout, or blocked forever
    with ``timeout=None``)."""
    path = str(tmp_path / "log")
    run = uuid.uuid4()
    with workers(2) as (waiter, writer):
        waiter.call("open", path, **MP)
        writer.call("open", path, **MP)
        waiter.send("wait_for", run, 0, 10.0)
        writer.call("append", delta(run, "x"))
        assert waiter.recv() is True
        assert waiter.call("wait_for", run, 1, 0.2) is False
        assert waiter.call("last_seq", run) == 1


@pytest.mark.parametrize("policy", ["never", "interval"])
def test_sync_after_another_process_deleted_a_run_does_not_fail_the_log(
    tmp_path: Path, policy: str
) -> None:
    """Under ``never``/``interval`` a multiprocess writer syncs a run under the run's lock,
    after catching up: once it synced from its own stale view, and after another process
    deleted a run it had appended to, ``sync()`` (and the interval flusher) fsynced the
    run's vanished directory and failed the whole log stop."""
    path = str(tmp_path / "log")
    run, other = uuid.uuid4(), uuid.uuid4()
    with workers(2) as (a, b):
        a.call("open", path, fsync=policy, fsync_interval_ms=3_600_000, **MP)
        b.call("open", path, **MP)
        a.call("append", delta(run, "x"))
        assert b.call("delete_run", run) is True
        a.call("sync")
        assert a.call("append", delta(other, "y")).seq == 1
        assert a.call("append", delta(run, "z")).seq == 1
