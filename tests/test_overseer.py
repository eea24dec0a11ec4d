"""Overseer: registry, supervision, restarts, fan-out, readiness, block exit."""

from __future__ import annotations

import inspect
import itertools
import json
import logging
import math
import re
import signal
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from children import (
    ALLOWED,
    EXIT_0,
    EXIT_1,
    EXIT_42,
    FAIL_UNTIL,
    FINAL,
    IGNORE_SIGTERM,
    KILL_SELF,
    PRINT_BOTH,
    PRINT_LINES,
    PRINT_SIGNALS,
    PRINT_THEN_SLEEP,
    PY,
    SLEEP_FOREVER,
    T,
    exit_with,
    overseer,
    pid_alive,
    python,
    wait_pid_gone,
)

from trio_overseer import (
    STDERR,
    STDOUT,
    Cmd,
    LogBatch,
    LogMsg,
    Overseer,
    OverseerError,
    OverseerNotOpenError,
    OverseerStatistics,
    ProcessInfo,
    ProcessJSON,
    ProcExistsError,
    ProcRunningError,
    State,
    UnknownProcError,
    _procfs,
    open_overseer,
)
from trio_overseer._options import ProcOptions


class Recorder:
    """Subscribes to an Overseer's states (or logs) and keeps them with receipt times."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.times: list[float] = []
        self.closed = False

    def watch_state(self, ovr: Overseer) -> trio.MemoryReceiveChannel[ProcessInfo]:
        send, recv = trio.open_memory_channel[ProcessInfo](math.inf)
        ovr.watch_state(send)
        return recv

    async def pump(self, recv: trio.MemoryReceiveChannel[Any]) -> None:
        async for item in recv:
            self.items.append(item)
            self.times.append(trio.current_time())
        self.closed = True

    def of(self, id: str) -> list[ProcessInfo]:
        return [info for info in self.items if info.id == id]

    def states(self, id: str) -> list[State]:
        return [info.state for info in self.of(id)]


def drain(recv: trio.MemoryReceiveChannel[Any]) -> tuple[list[Any], bool]:
    """Everything buffered in ``recv``, and whether it ended with EndOfChannel."""
    items = []
    while True:
        try:
            items.append(recv.receive_nowait())
        except trio.WouldBlock:
            return items, False
        except trio.EndOfChannel:
            return items, True


def split_runs(states: Sequence[State]) -> list[list[State]]:
    """Split one proc's state events into runs; check each is a path of the table."""
    runs: list[list[State]] = []
    for state in states:
        if not runs or runs[-1][-1] in FINAL or state is State.INITIAL:
            runs.append([])
        runs[-1].append(state)
    runs = [run[1:] if run[0] is State.INITIAL else run for run in runs]
    runs = [run for run in runs if run]  # an "initial" event alone is no run
    for run in runs:
        assert run[0] is State.STARTING, runs
        for a, b in itertools.pairwise(run):
            assert b in ALLOWED.get(a, set()), f"illegal transition {a} -> {b} in {runs}"
        assert run[-1] in FINAL, runs
    return runs


# --- registry ---------------------------------------------------------------------


async def test_add_and_queries(tmp_path: Path) -> None:
    async with overseer() as ovr:
        cmd = ovr.add("b", PY, EXIT_0)
        assert isinstance(cmd, Cmd)
        ovr.add("a", PY, EXIT_0, group="g1")
        ovr.add("d", PY, EXIT_0, group="g1")
        ovr.add("c", PY, EXIT_0, group="g2", dir=tmp_path, delay_start=0.25, retry_times=2)
        assert ovr.list_all() == ["a", "b", "c", "d"]
        assert ovr.list_group("g1") == ["a", "d"]
        assert ovr.list_group("g2") == ["c"]
        assert ovr.list_group("nope") == []
        assert ovr.has_proc("a")
        assert not ovr.has_proc("zz")
        info = ovr.status("c")
        assert isinstance(info, ProcessInfo)
        assert (info.id, info.group, info.pid, info.state) == ("c", "g2", 0, State.INITIAL)
        assert PY in info.cmd
        assert "-c" in info.cmd
        assert str(info.dir) == str(tmp_path)
        assert (info.delay_start, info.retry_times) == (0.25, 2)
        assert info.restarts == 0
        assert info.restart_in is None
        assert info.error is None


async def test_to_dict_keys_and_values(tmp_path: Path) -> None:
    async with overseer() as ovr:
        ovr.add("p", PY, EXIT_42, group="g", dir=tmp_path, delay_start=0.01, retry_times=0)
        before = time.time()
        with trio.fail_after(T):
            assert await ovr.supervise("p") == 42
        info = ovr.status("p")
    d = info.to_dict()
    assert set(d) == {
        "id", "group", "cmd", "dir", "PID", "state", "exitCode", "error",
        "startTime", "delayStart", "retryTimes",
    }  # fmt: skip
    json.dumps(d)  # JSON-ready
    assert (d["id"], d["group"], d["PID"], d["exitCode"]) == ("p", "g", info.pid, 42)
    assert d["state"] == "finished"
    assert d["delayStart"] == 10
    assert isinstance(d["delayStart"], int)
    assert d["retryTimes"] == 0
    assert d["cmd"] == info.cmd
    started = datetime.fromisoformat(d["startTime"])
    assert started.tzinfo is not None
    assert started.timestamp() == pytest.approx(info.start_time, abs=1e-3)
    assert before <= info.start_time <= time.time()


def test_process_json_is_process_info() -> None:
    assert ProcessJSON is ProcessInfo


@pytest.mark.parametrize(
    "kwargs",
    [{"stop_timeout": -1.0}, {"backoff_base": -0.1}, {"backoff_max": -1.0}],
    ids=str,
)
def test_bad_overseer_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        Overseer(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"stop_timeout": math.inf}, ValueError, "stop_timeout must be a finite number >= 0"),
        ({"backoff_base": math.inf}, ValueError, "backoff_base must be a finite number >= 0"),
        ({"handle_signals": "no"}, TypeError, "handle_signals must be True or False, got 'no'"),
    ],
    ids=str,
)
def test_bad_overseer_arguments_say_why(kwargs: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error, match=f"^Overseer {re.escape(message)}"):
        Overseer(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"group": None}, "Cmd group must be a string ('' for none), got None"),
        ({"dir": 3}, "Cmd dir must be a path (str or os.PathLike), got 3"),
        ({"buffered": "no"}, "Cmd buffered must be True or False, got 'no'"),
    ],
    ids=str,
)
def test_bad_add_types_name_the_proc(kwargs: dict[str, Any], message: str) -> None:
    ovr = Overseer(handle_signals=False)
    with pytest.raises(TypeError) as caught:
        ovr.add("p", PY, **kwargs)
    assert str(caught.value) == f"proc 'p': {message}"
    assert not ovr.has_proc("p")


@pytest.mark.parametrize(
    "kwargs",
    [{"args": [1]}, {"stop_timeout": -1.0}, {"retry_times": -1}, {"delay_start": -1.0}],
    ids=str,
)
def test_bad_add_arguments(kwargs: dict[str, Any]) -> None:
    ovr = Overseer(handle_signals=False)
    with pytest.raises((ValueError, TypeError)):
        ovr.add("p", PY, **kwargs)
    assert not ovr.has_proc("p")


async def test_duplicate_id() -> None:
    async with overseer() as ovr:
        ovr.add("p", PY, EXIT_0)
        with pytest.raises(ProcExistsError) as info:
            ovr.add("p", PY, EXIT_1)
        assert isinstance(info.value, ValueError)
        assert isinstance(info.value, OverseerError)


async def test_empty_id_or_exec() -> None:
    async with overseer() as ovr:
        with pytest.raises(ValueError, match="needs a non-empty string id"):
            ovr.add("", PY, EXIT_0)
        with pytest.raises(ValueError, match="needs a non-empty executable"):
            ovr.add("p", "", EXIT_0)
        assert ovr.list_all() == []


async def test_unknown_ids() -> None:
    async with overseer() as ovr:
        calls: list[Callable[[], object]] = [
            lambda: ovr.status("nope"),
            lambda: ovr.stop("nope"),
            lambda: ovr.signal("nope", signal.SIGTERM),
            lambda: ovr.remove("nope"),
        ]
        for call in calls:
            with pytest.raises(UnknownProcError) as info:
                call()
            assert isinstance(info.value, LookupError)
        with pytest.raises(UnknownProcError):
            await ovr.supervise("nope")
        with pytest.raises(UnknownProcError):
            await ovr.start("nope")


async def test_remove() -> None:
    async with overseer() as ovr:
        ovr.add("idle", PY, EXIT_0)
        ovr.remove("idle")
        assert not ovr.has_proc("idle")
        assert ovr.list_all() == []
        ovr.add("done", PY, EXIT_0)
        with trio.fail_after(T):
            await ovr.supervise("done")
        ovr.remove("done")
        assert not ovr.has_proc("done")
        ovr.add("idle", PY, EXIT_0)  # the id is free again
        assert ovr.has_proc("idle")


async def test_a_busy_proc_refuses_remove_and_a_second_supervise() -> None:
    async with overseer() as ovr:
        ovr.add("p", PY, SLEEP_FOREVER)
        with trio.fail_after(T):
            await ovr.start("p")
            with pytest.raises(ProcRunningError) as info:
                ovr.remove("p")
            assert isinstance(info.value, RuntimeError)
            assert isinstance(info.value, OverseerError)
            assert ovr.has_proc("p")
            with pytest.raises(ProcRunningError):
                await ovr.supervise("p")
            ovr.stop("p")
            await ovr.wait_for_state("p", *FINAL)


async def test_supervise_twice_concurrently_raises() -> None:
    async with overseer() as ovr:
        ovr.add("p", PY, SLEEP_FOREVER)
        with trio.fail_after(T):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ovr.supervise, "p")
                await ovr.wait_for_state("p", State.RUNNING)
                with pytest.raises(ProcRunningError):
                    await ovr.supervise("p")
                ovr.stop("p")


def test_add_takes_exactly_the_options_of_the_record() -> None:
    # One definition of the per-proc options: add()'s keyword parameters are
    # ProcOptions' fields, with the same defaults, and each run's Cmd takes
    # the ones they share from it.
    params = inspect.signature(Overseer.add).parameters
    keywords = {name: p.default for name, p in params.items() if p.kind is p.KEYWORD_ONLY}
    fields = {field.name: field.default for field in attrs.fields(ProcOptions)}
    assert keywords == fields
    shared = {field.name for field in attrs.fields(Cmd)} & set(fields)
    assert shared == {
        "group", "dir", "env", "buffered", "stop_signal", "stop_timeout", "stop_signals",
        "delay_start", "retry_times", "pty",
    }  # fmt: skip


async def test_statistics() -> None:
    async with overseer() as ovr:
        assert ovr.statistics() == OverseerStatistics(0, 0, 0, 0, 0)
        ovr.add("idle", PY, EXIT_0)
        ovr.add("busy", PY, SLEEP_FOREVER)
        with trio.fail_after(T):
            async with ovr.subscribe_states(), ovr.subscribe_logs(1):
                await ovr.start("busy")
                await ovr.wait_for_log("busy", "ready")
                assert ovr.statistics() == OverseerStatistics(
                    procs=2, supervised=1, running=1, subscribers=2, cut_off_subscribers=0
                )
                ovr.add("chatty", PY, PRINT_LINES(5))
                await ovr.supervise("chatty")  # more lines than the buffer of 1
                stats = ovr.statistics()
                assert (stats.subscribers, stats.cut_off_subscribers) == (1, 1)
                assert repr(ovr) == "<Overseer 3 procs, 1 running>"
        ovr.stop("busy")
        await ovr.wait_for_state("busy", *FINAL)
        assert ovr.statistics() == OverseerStatistics(3, 0, 0, 0, 1)


# --- supervise and restarts ------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 42])
async def test_supervise_returns_exit_code(code: int) -> None:
    async with overseer() as ovr:
        ovr.add("p", PY, exit_with(code))
        with trio.fail_after(T):
            assert await ovr.supervise("p") == code
        info = ovr.status("p")
        assert info.state is State.FINISHED
        assert info.exit_code == code
        assert info.pid > 0


async def supervise_recorded(
    ovr_kwargs: dict[str, Any], id: str, exec: str, args: Sequence[str], **add_kwargs: Any
) -> tuple[int, Recorder, ProcessInfo]:
    """Supervise one proc to its end; return its result, every state event, its status."""
    rec = Recorder()
    with trio.fail_after(T):
        async with trio.open_nursery() as nursery, overseer(**ovr_kwargs) as ovr:
            nursery.start_soon(rec.pump, rec.watch_state(ovr))
            ovr.add(id, exec, args, **add_kwargs)
            result = await ovr.supervise(id)
            info = ovr.status(id)
    assert rec.closed
    return result, rec, info


async def test_retry_times_on_failure() -> None:
    result, rec, info = await supervise_recorded({}, "p", PY, EXIT_1, retry_times=3)
    assert result == 1
    runs = split_runs(rec.states("p"))
    assert runs == [[State.STARTING, State.RUNNING, State.FINISHED]] * 4
    finals = [i for i in rec.of("p") if i.state in FINAL]
    assert [i.exit_code for i in finals] == [1] * 4
    assert [i.restarts for i in finals] == [0, 1, 2, 3]
    assert all(i.restart_in is not None for i in finals[:-1])
    assert finals[-1].restart_in is None
    assert info.restarts == 3
    assert info.exit_code == 1


async def test_no_restart_after_success() -> None:
    result, rec, _ = await supervise_recorded({}, "p", PY, EXIT_0, retry_times=3)
    assert result == 0
    assert split_runs(rec.states("p")) == [[State.STARTING, State.RUNNING, State.FINISHED]]
    assert rec.of("p")[-1].restart_in is None


async def test_retry_until_success(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    result, rec, info = await supervise_recorded({}, "p", PY, FAIL_UNTIL(counter, 3), retry_times=5)
    assert result == 0
    assert len(split_runs(rec.states("p"))) == 3
    assert counter.read_text() == "3"
    assert info.restarts == 2


async def test_retry_after_signal() -> None:
    result, rec, _ = await supervise_recorded({}, "p", PY, KILL_SELF, retry_times=1)
    assert result == -signal.SIGKILL
    runs = split_runs(rec.states("p"))
    assert runs == [[State.STARTING, State.RUNNING, State.INTERRUPTED]] * 2
    assert rec.of("p")[-1].error == "signal: SIGKILL"


async def test_retry_after_fatal(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    result, rec, info = await supervise_recorded({}, "p", missing, (), retry_times=2)
    assert result == -1
    assert split_runs(rec.states("p")) == [[State.STARTING, State.FATAL]] * 3
    assert info.state is State.FATAL
    assert info.error is not None
    assert "No such file or directory" in info.error


async def test_stopped_proc_is_not_restarted() -> None:
    async with overseer() as ovr:
        ovr.add("p", PY, SLEEP_FOREVER, retry_times=3)
        with trio.fail_after(T):
            async with trio.open_nursery() as nursery:
                results: list[int] = []

                async def supervise() -> None:
                    results.append(await ovr.supervise("p"))

                nursery.start_soon(supervise)
                await ovr.wait_for_log("p", "ready")
                ovr.stop("p")
        info = ovr.status("p")
    assert results == [-signal.SIGTERM]
    assert (info.state, info.restarts) == (State.INTERRUPTED, 0)


async def test_stop_shows_retry_times_0_until_the_next_start() -> None:
    # As the contract and the Go original: stop() zeroes retry_times; the
    # next start() begins with the configured budget again.
    with trio.fail_after(T):
        async with overseer() as ovr:
            states = Recorder().watch_state(ovr)
            ovr.add("p", PY, SLEEP_FOREVER, retry_times=2)
            assert ovr.status("p").retry_times == 2
            await ovr.start("p")
            await ovr.wait_for_log("p", "ready")
            assert ovr.status("p").retry_times == 2
            ovr.stop("p")
            await ovr.wait_for_state("p", *FINAL)
            info = ovr.status("p")
            assert (info.state, info.retry_times) == (State.INTERRUPTED, 0)
            assert info.to_dict()["retryTimes"] == 0
            # the events of the stop say so too
            events = drain(states)[0]
            assert [(i.state, i.retry_times) for i in events[-2:]] == [
                (State.STOPPING, 0),
                (State.INTERRUPTED, 0),
            ]

            running = await ovr.start("p")
            assert running.retry_times == 2
            await ovr.wait_for_log("p", "ready")
            # The budget is back: a run killed from outside is restarted.
            ovr.signal("p", signal.SIGKILL)
            async for info in states:
                if info.state is State.RUNNING and info.restarts == 1:
                    assert info.retry_times == 2
                    break


async def test_stop_of_a_proc_that_is_not_running_shows_retry_times_0() -> None:
    async with overseer() as ovr:
        ovr.add("p", PY, EXIT_0, retry_times=4)
        ovr.stop("p")
        assert ovr.status("p").retry_times == 0
        with trio.fail_after(T):
            assert (await ovr.start("p")).retry_times == 4


async def test_death_by_signal_is_restarted() -> None:
    # signal() is not stop(): a proc that dies of it has failed and is restarted
    rec = Recorder()
    results: list[int] = []
    with trio.fail_after(T):
        async with trio.open_nursery() as outer, overseer() as ovr:
            outer.start_soon(rec.pump, rec.watch_state(ovr))
            ovr.add("p", PY, SLEEP_FOREVER, retry_times=1)
            async with trio.open_nursery() as nursery:

                async def supervise() -> None:
                    results.append(await ovr.supervise("p"))

                nursery.start_soon(supervise)
                await ovr.wait_for_log("p", "ready")
                ovr.signal("p", signal.SIGTERM)
                await ovr.wait_for_state("p", State.STARTING)  # the restart
                await ovr.wait_for_log("p", "ready")
                ovr.stop("p")
            assert ovr.status("p").restarts == 1
    assert results == [-signal.SIGTERM]
    assert split_runs(rec.states("p")) == [
        [State.STARTING, State.RUNNING, State.INTERRUPTED],
        [State.STARTING, State.RUNNING, State.STOPPING, State.INTERRUPTED],
    ]


async def test_stop_during_delay_start_cancels_the_start() -> None:
    rec = Recorder()
    with trio.fail_after(T):
        async with trio.open_nursery() as outer, overseer() as ovr:
            outer.start_soon(rec.pump, rec.watch_state(ovr))
            ovr.add("p", PY, EXIT_0, delay_start=30)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ovr.supervise, "p")
                await trio.testing.wait_all_tasks_blocked()
                stopped = trio.current_time()
                ovr.stop("p")
            assert trio.current_time() - stopped < 5  # not the 30 s delay
    assert State.STARTING not in rec.states("p")


async def test_block_exit_during_delay_start() -> None:
    with trio.fail_after(T):
        start = trio.current_time()
        async with overseer() as ovr:
            ovr.add("p", PY, EXIT_0, delay_start=30)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ovr.start, "p")
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
        assert trio.current_time() - start < 5
    assert ovr.status("p").pid == 0


async def test_delay_start_honoured() -> None:
    async with overseer() as ovr:
        ovr.add("p", PY, EXIT_0, delay_start=0.3)
        added = time.time()
        with trio.fail_after(T):
            await ovr.supervise("p")
        info = ovr.status("p")
    assert 0.3 <= info.start_time - added < 0.3 + 10


@pytest.mark.parametrize(("delay", "backoff_max"), [(0.0, 30.0), (0.03, 30.0), (0.0, 0.06)])
async def test_backoff_between_restarts(delay: float, backoff_max: float) -> None:
    base, retries = 0.05, 4
    result, rec, _ = await supervise_recorded(
        {"backoff_base": base, "backoff_max": backoff_max},
        "p", PY, EXIT_1, retry_times=retries, delay_start=delay,
    )  # fmt: skip
    assert result == 1
    finals = [(t, i) for t, i in zip(rec.times, rec.items, strict=True) if i.state in FINAL]
    runnings = [t for t, i in zip(rec.times, rec.items, strict=True) if i.state is State.RUNNING]
    assert len(finals) == len(runnings) == retries + 1
    for k in range(1, retries + 1):
        d = min(backoff_max, base * 2 ** (k - 1))
        stopped_at, info = finals[k - 1]
        assert info.restart_in is not None
        assert delay + d / 2 - 1e-9 <= info.restart_in <= delay + d + 1e-9, (k, info.restart_in)
        gap = runnings[k] - stopped_at  # measured at receipt: a few ms of noise either way
        assert info.restart_in - 0.03 <= gap <= info.restart_in + 5, (k, gap, info.restart_in)
    assert finals[-1][1].restart_in is None


async def test_stop_during_backoff_cancels_restart() -> None:
    rec = Recorder()
    results: list[int] = []
    with trio.fail_after(T):
        async with trio.open_nursery() as outer, overseer(backoff_base=10.0) as ovr:
            states = rec.watch_state(ovr)
            ovr.add("p", PY, EXIT_1, retry_times=3)
            async with trio.open_nursery() as nursery:

                async def supervise() -> None:
                    results.append(await ovr.supervise("p"))

                nursery.start_soon(supervise)
                async for info in states:
                    rec.items.append(info)
                    if info.state in FINAL:
                        break
                assert info.restart_in is not None
                assert info.restart_in >= 5
                stopped = trio.current_time()
                ovr.stop("p")
            # supervise() has returned
            assert trio.current_time() - stopped < 2
            assert results == [1]
            # the cancelled restart never happened: the last run's outcome stays
            info = ovr.status("p")
            assert (info.state, info.exit_code, info.restarts) == (State.FINISHED, 1, 0)
            outer.start_soon(rec.pump, states)
    assert rec.states("p").count(State.STARTING) == 1


# --- start / stop / signal ---------------------------------------------------------------


async def test_start_returns_running_info() -> None:
    async with overseer() as ovr:
        ovr.add("p", PY, SLEEP_FOREVER)
        with trio.fail_after(T):
            info = await ovr.start("p")
            assert info.id == "p"
            assert info.state is State.RUNNING
            assert info.pid > 0
            assert pid_alive(info.pid)
            assert ovr.status("p").state is State.RUNNING
            ovr.stop("p")
            end = await ovr.wait_for_state("p", *FINAL)
    assert end.state is State.INTERRUPTED
    assert end.error == "signal: SIGTERM"
    assert end.exit_code == -signal.SIGTERM
    assert not pid_alive(info.pid)


async def test_start_of_unstartable_returns_fatal(tmp_path: Path) -> None:
    async with overseer() as ovr:
        ovr.add("p", str(tmp_path / "missing"))
        with trio.fail_after(T):
            info = await ovr.start("p")
    assert info.state is State.FATAL
    assert info.exit_code == -1
    assert info.error is not None
    assert "No such file or directory" in info.error


async def test_start_needs_the_block() -> None:
    ovr = Overseer(handle_signals=False)
    ovr.add("p", PY, EXIT_0)
    with pytest.raises(OverseerNotOpenError, match=r"use 'async with open_overseer\(\) as ovr:'"):
        await ovr.start("p")
    async with overseer() as ovr:
        ovr.add("p", PY, EXIT_0)
    with pytest.raises(OverseerNotOpenError) as info:
        await ovr.start("p")  # the block has ended
    assert isinstance(info.value, OverseerError)
    assert isinstance(info.value, RuntimeError)
    assert "'await ovr.supervise('p')'" in str(info.value)
    assert ovr.status("p").state is State.INITIAL


async def test_stop_idle_proc_is_noop() -> None:
    async with overseer() as ovr:
        ovr.add("p", PY, EXIT_0)
        ovr.stop("p")
        assert ovr.status("p").state is State.INITIAL
        with trio.fail_after(T):
            assert await ovr.supervise("p") == 0


async def test_signal() -> None:
    async with overseer() as ovr:
        ovr.add("p", PY, PRINT_SIGNALS)
        ovr.signal("p", signal.SIGUSR1)  # not running: no-op
        with trio.fail_after(T):
            await ovr.start("p")
            await ovr.wait_for_log("p", "^ready$")
            ovr.signal("p", signal.SIGUSR1)
            await ovr.wait_for_log("p", "^got SIGUSR1$")
            assert ovr.status("p").state is State.RUNNING
            ovr.stop("p")
            end = await ovr.wait_for_state("p", *FINAL)
    assert end.error == "signal: SIGTERM"


@pytest.mark.parametrize("kill", [False, True])
async def test_stop_all(kill: bool) -> None:
    ids = ["a", "b", "c"]
    async with overseer(stop_timeout=60 if kill else 1.0) as ovr:
        for id in ids:
            ovr.add(id, PY, IGNORE_SIGTERM if kill else SLEEP_FOREVER)
        with trio.fail_after(T):
            pids = [(await ovr.start(id)).pid for id in ids]
            for id in ids:
                await ovr.wait_for_log(id, "ready")
            ovr.stop_all(kill)
            for id in ids:
                await ovr.wait_for_state(id, *FINAL)
        expected = "signal: SIGKILL" if kill else "signal: SIGTERM"
        assert [ovr.status(id).error for id in ids] == [expected] * 3
    assert not any(map(pid_alive, pids))


async def test_overseer_stop_timeout_applies_and_can_be_overridden() -> None:
    async with overseer(stop_timeout=0.4) as ovr:
        ovr.add("default", PY, IGNORE_SIGTERM)
        ovr.add("own", PY, IGNORE_SIGTERM, stop_timeout=60)
        with trio.fail_after(T):
            for id in ("default", "own"):
                await ovr.start(id)
                await ovr.wait_for_log(id, "ready")
            start = trio.current_time()
            ovr.stop("default")
            ovr.stop("own")
            end = await ovr.wait_for_state("default", *FINAL)
            elapsed = trio.current_time() - start
            assert end.error == "signal: SIGKILL"
            assert 0.35 <= elapsed < 10
            assert ovr.status("own").state is State.STOPPING  # still within its 60 s
            ovr.stop_all(kill=True)
            end = await ovr.wait_for_state("own", *FINAL)
            assert end.error == "signal: SIGKILL"


# --- watch_state ------------------------------------------------------------------------


async def test_watch_state_paths(tmp_path: Path) -> None:
    rec = Recorder()
    with trio.fail_after(T):
        async with trio.open_nursery() as nursery, overseer() as ovr:
            nursery.start_soon(rec.pump, rec.watch_state(ovr))
            ovr.add("ok", PY, EXIT_0)
            ovr.add("fail", PY, EXIT_42)
            ovr.add("fatal", str(tmp_path / "missing"))
            ovr.add("stopped", PY, SLEEP_FOREVER)
            await ovr.start("stopped")
            await ovr.supervise("ok")
            await ovr.supervise("fail")
            await ovr.supervise("fatal")
            ovr.stop("stopped")
            await ovr.wait_for_state("stopped", *FINAL)
    assert split_runs(rec.states("ok")) == [[State.STARTING, State.RUNNING, State.FINISHED]]
    assert split_runs(rec.states("fail")) == [[State.STARTING, State.RUNNING, State.FINISHED]]
    assert split_runs(rec.states("fatal")) == [[State.STARTING, State.FATAL]]
    assert split_runs(rec.states("stopped")) == [
        [State.STARTING, State.RUNNING, State.STOPPING, State.INTERRUPTED]
    ]
    assert rec.of("fail")[-1].exit_code == 42
    assert rec.of("stopped")[-1].error == "signal: SIGTERM"
    running = next(i for i in rec.of("ok") if i.state is State.RUNNING)
    assert running.pid > 0
    assert running.start_time > 0


async def test_watch_state_cut_off_when_buffer_full(caplog: pytest.LogCaptureFixture) -> None:
    slow_send, slow_recv = trio.open_memory_channel[ProcessInfo](1)
    rec = Recorder()
    with trio.fail_after(T):
        async with trio.open_nursery() as nursery, overseer() as ovr:
            ovr.watch_state(slow_send)
            nursery.start_soon(rec.pump, rec.watch_state(ovr))
            ovr.add("p", PY, EXIT_0)
            await ovr.supervise("p")
    got, closed = drain(slow_recv)
    assert closed, "a subscriber that fell behind must see its channel closed"
    assert got == rec.items[:1]
    assert len(rec.items) >= 3
    assert any(r.name == "trio_overseer" and r.levelno == logging.WARNING for r in caplog.records)


async def test_zero_buffer_refused() -> None:
    async with overseer() as ovr:
        send_s, _ = trio.open_memory_channel[ProcessInfo](0)
        with pytest.raises(ValueError, match="zero-size channel buffer"):
            ovr.watch_state(send_s)
        send_l, _ = trio.open_memory_channel[LogMsg](0)
        with pytest.raises(ValueError, match="zero-size channel buffer"):
            ovr.watch_logs(send_l)
        with pytest.raises(ValueError, match="zero-size channel buffer"):
            ovr.watch_logs(send_l, batched=True)


async def test_closed_receivers_dropped_silently(caplog: pytest.LogCaptureFixture) -> None:
    async with overseer() as ovr:
        state_send, state_recv = trio.open_memory_channel[ProcessInfo](100)
        log_send, log_recv = trio.open_memory_channel[LogMsg](100)
        ovr.watch_state(state_send)
        ovr.watch_logs(log_send)
        state_recv.close()
        log_recv.close()
        ovr.add("p", PY, PRINT_LINES(50))
        with trio.fail_after(T):
            assert await ovr.supervise("p") == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_unwatch() -> None:
    async with overseer() as ovr:
        state_send, state_recv = trio.open_memory_channel[ProcessInfo](math.inf)
        log_send, log_recv = trio.open_memory_channel[LogMsg](math.inf)
        ovr.watch_state(state_send)
        ovr.watch_logs(log_send)
        ovr.add("p", PY, PRINT_LINES(3))
        with trio.fail_after(T):
            await ovr.supervise("p")
        ovr.unwatch_state(state_send)
        ovr.unwatch_logs(log_send)
        states_before, _ = drain(state_recv)
        logs_before, _ = drain(log_recv)
        with trio.fail_after(T):
            await ovr.supervise("p")
        states_after, _ = drain(state_recv)
        logs_after, _ = drain(log_recv)
    assert len(states_before) >= 3
    assert [m.text for m in logs_before] == ["0", "1", "2"]
    assert states_after == []
    assert logs_after == []


async def test_channels_closed_when_block_exits() -> None:
    states: list[ProcessInfo] = []
    logs: list[LogMsg] = []

    async def consume(recv: trio.MemoryReceiveChannel[Any], into: list[Any]) -> None:
        async for item in recv:
            into.append(item)

    with trio.fail_after(T):
        async with trio.open_nursery() as nursery, overseer() as ovr:
            s_send, s_recv = trio.open_memory_channel[ProcessInfo](math.inf)
            l_send, l_recv = trio.open_memory_channel[LogMsg](math.inf)
            ovr.watch_state(s_send)
            ovr.watch_logs(l_send)
            nursery.start_soon(consume, s_recv, states)
            nursery.start_soon(consume, l_recv, logs)
            ovr.add("p", PY, SLEEP_FOREVER)
            await ovr.start("p")
            await ovr.wait_for_log("p", "ready")
            # leaving the block stops "p"; its final state is the last event
    assert states[-1].state is State.INTERRUPTED
    assert [m.text for m in logs] == ["ready"]


# --- subscribe_states / subscribe_logs ---------------------------------------------------


async def test_subscribe_watches_on_entry_and_closes_on_exit() -> None:
    with trio.fail_after(T):
        async with overseer() as ovr:
            ovr.add("p", PY, PRINT_LINES(3))
            async with ovr.subscribe_states() as states, ovr.subscribe_logs() as logs:
                assert await ovr.supervise("p") == 0
            # Left the subscriptions: every message is still there, then the end.
            got_states, states_ended = drain(states)
            got_logs, logs_ended = drain(logs)
            assert split_runs([i.state for i in got_states]) == [
                [State.STARTING, State.RUNNING, State.FINISHED]
            ]
            assert [m.text for m in got_logs] == ["0", "1", "2"]
            assert states_ended
            assert logs_ended
            # Unwatched: a later run reaches a new subscriber only.
            async with ovr.subscribe_logs(10) as again:
                assert await ovr.supervise("p") == 0
            assert [m.text for m in drain(again)[0]] == ["0", "1", "2"]


async def test_subscribe_logs_batched() -> None:
    with trio.fail_after(T):
        async with overseer() as ovr:
            ovr.add("p", PY, PRINT_LINES(500))
            async with ovr.subscribe_logs(batched=True) as batches:
                assert await ovr.supervise("p") == 0
    got, ended = drain(batches)
    assert ended
    assert all(len(b) for b in got)
    msgs = [m for b in got for m in b]
    assert all(isinstance(m, LogMsg) for m in msgs)
    assert [m.text for m in msgs] == [str(i) for i in range(500)]


async def test_subscription_ends_when_the_block_exits() -> None:
    # The natural use: a consumer task outside the block, its loop ended by
    # the block's exit.
    seen: list[ProcessInfo] = []

    async def consume(ovr: Overseer, task_status: trio.TaskStatus[None]) -> None:
        async with ovr.subscribe_states() as rx:
            task_status.started()
            async for info in rx:
                seen.append(info)

    with trio.fail_after(T):
        async with trio.open_nursery() as nursery, overseer() as ovr:
            await nursery.start(consume, ovr)
            ovr.add("p", PY, SLEEP_FOREVER)
            await ovr.start("p")
    assert [i.state for i in seen] == [
        State.STARTING,
        State.RUNNING,
        State.STOPPING,
        State.INTERRUPTED,
    ]


async def test_subscription_cut_off_as_watch(caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(T):
        async with overseer() as ovr:
            ovr.add("p", PY, PRINT_LINES(50))
            async with ovr.subscribe_states(buffer=1) as states, ovr.subscribe_logs(5) as logs:
                assert await ovr.supervise("p") == 0
                got_states, states_cut = drain(states)
                got_logs, logs_cut = drain(logs)
    assert states_cut
    assert [i.state for i in got_states] == [State.STARTING]
    assert logs_cut
    assert [m.text for m in got_logs] == ["0", "1", "2", "3", "4"]
    assert "cut off" in caplog.text


@pytest.mark.parametrize("buffer", [0, -1, 2.5, math.nan, True, "10", None])
async def test_subscription_bad_buffer(buffer: Any) -> None:
    async with overseer() as ovr:
        with pytest.raises(ValueError, match="subscription buffer must be"):
            async with ovr.subscribe_states(buffer):
                pass  # pragma: no cover
        with pytest.raises(ValueError, match="subscription buffer must be"):
            async with ovr.subscribe_logs(buffer, batched=True):
                pass  # pragma: no cover


# --- watch_logs --------------------------------------------------------------------------


async def run_with_logs(n: int, batched: bool) -> list[Any]:
    rec = Recorder()
    send, recv = trio.open_memory_channel[Any](math.inf)
    with trio.fail_after(T):
        async with trio.open_nursery() as nursery, overseer() as ovr:
            ovr.watch_logs(send, batched=batched)
            nursery.start_soon(rec.pump, recv)
            ovr.add("a", PY, PRINT_BOTH(n))
            ovr.add("b", PY, PRINT_BOTH(n))
            await ovr.supervise_all()
    return rec.items


def check_logs(msgs: list[LogMsg], n: int) -> None:
    assert all(isinstance(m, LogMsg) for m in msgs)
    for id in ("a", "b"):
        out = [m for m in msgs if m.id == id and m.type == STDOUT]
        err = [m for m in msgs if m.id == id and m.type == STDERR]
        assert [m.text for m in out] == [f"out {i}" for i in range(n)]
        assert [m.text for m in err] == [f"err {i}" for i in range(n)]
        for stream in (out, err):
            stamps = [m.ts for m in stream]
            assert stamps == sorted(stamps)
            assert stamps[0] > 1e9
    assert len(msgs) == 4 * n


async def test_watch_logs_every_line_in_order() -> None:
    check_logs(await run_with_logs(300, batched=False), 300)


async def test_watch_logs_batched() -> None:
    batches = await run_with_logs(300, batched=True)
    assert all(isinstance(b, LogBatch) and len(b) == len(b.lines) > 0 for b in batches)
    check_logs([m for b in batches for m in b], 300)


#: Both streams, in many writes: CRLF, a lone CR, a character split across
#: writes, an invalid byte, a line longer than the 16 KiB limit, a blank
#: line, and a last line without a newline.
MESSY_OUTPUT = python(
    """
    import os
    chunks = [
        b"plain\\r\\n", b"caf\\xc3", b"\\xa9\\n", b"bad \\xff byte\\n", b"lone\\rcr\\n",
        "\\u00e9".encode() * 20000 + b"\\n", b"\\n", *(b"%d\\n" % i for i in range(500)),
        b"no newline",
    ]
    for i, chunk in enumerate(chunks):
        os.write(1, chunk)
        os.write(2, b"err %d\\n" % i)
    """
)


async def test_batches_iterate_to_the_per_line_messages() -> None:
    # One run, two subscribers: iterating each batch yields exactly the
    # LogMsg objects that per-line delivery sends, in the same order.
    each_send, each_recv = trio.open_memory_channel[LogMsg](math.inf)
    batch_send, batch_recv = trio.open_memory_channel[LogBatch](math.inf)
    with trio.fail_after(T):
        async with overseer() as ovr:
            ovr.watch_logs(each_send)
            ovr.watch_logs(batch_send, batched=True)
            ovr.add("messy", PY, MESSY_OUTPUT)
            assert await ovr.supervise("messy") == 0
    each = [each_recv.receive_nowait() for _ in range(each_recv.statistics().current_buffer_used)]
    batches = [
        batch_recv.receive_nowait() for _ in range(batch_recv.statistics().current_buffer_used)
    ]
    assert [msg for batch in batches for msg in batch] == each
    assert sum(map(len, batches)) == len(each)
    out = [m.text for m in each if m.type == STDOUT]
    assert out[:4] == ["plain", "caf\u00e9", "bad \ufffd byte", "lone\rcr"]
    long = out[4 : out.index("")]
    assert "".join(long) == "\u00e9" * 20000
    assert max(len(t.encode()) for t in long) <= 16384
    assert out[-501:] == [*map(str, range(500)), "no newline"]
    assert [m.text for m in each if m.type == STDERR] == [f"err {i}" for i in range(508)]


FLOOD = python(
    """
    import sys
    line = "x" * 99 + "\\n"
    while True:
        sys.stdout.write(line * 100)
    """
)
TICK = python(
    """
    import sys, time
    for i in range(10**9):
        print(i, flush=True)
        time.sleep(0.005)
    """
)


async def test_holding_one_procs_output_leaves_the_others_flowing() -> None:
    counts = {"flood": 0, "tick": 0}
    moved = trio.Event()

    async def count(recv: trio.MemoryReceiveChannel[LogBatch]) -> None:
        nonlocal moved
        async for batch in recv:
            counts[batch.id] += len(batch)
            moved.set()

    async def ticks(n: int) -> None:
        """Until the ticker printed `n` more lines."""
        nonlocal moved
        want = counts["tick"] + n
        while counts["tick"] < want:
            moved = trio.Event()
            await moved.wait()

    send, recv = trio.open_memory_channel[LogBatch](math.inf)
    with trio.fail_after(T):
        async with trio.open_nursery() as nursery, overseer() as ovr:
            nursery.start_soon(count, recv)
            ovr.watch_logs(send, batched=True)
            ovr.add("flood", PY, FLOOD)
            ovr.add("tick", PY, TICK)
            await ovr.start("flood")
            await ovr.start("tick")
            while not counts["flood"]:  # flowing
                moved = trio.Event()
                await moved.wait()
            ovr._hold_output(True, "flood")
            await ticks(3)  # the flood's read in progress, if any, is done by now
            held_at = counts["flood"]
            await ticks(10)
            assert counts["flood"] == held_at  # not read: blocked on its full pipe
            ovr._hold_output(False, "flood")
            while counts["flood"] == held_at:
                moved = trio.Event()
                await moved.wait()
            ovr.stop_all()


async def test_slow_log_subscriber_is_cut_off(caplog: pytest.LogCaptureFixture) -> None:
    n = 2000
    slow_send, slow_recv = trio.open_memory_channel[LogMsg](5)
    rec = Recorder()
    fast_send, fast_recv = trio.open_memory_channel[LogMsg](math.inf)
    with trio.fail_after(T):
        async with trio.open_nursery() as nursery, overseer() as ovr:
            ovr.watch_logs(slow_send)
            ovr.watch_logs(fast_send)
            nursery.start_soon(rec.pump, fast_recv)
            ovr.add("p", PY, PRINT_LINES(n))
            # the slow subscriber is never read: the proc must not wait for it
            assert await ovr.supervise("p") == 0
    assert [m.text for m in rec.items] == [str(i) for i in range(n)]
    got, closed = drain(slow_recv)
    assert closed, "the slow subscriber was silently skipped, not cut off"
    assert [m.text for m in got] == ["0", "1", "2", "3", "4"]
    with pytest.raises(trio.ClosedResourceError):
        slow_send.send_nowait(got[0])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.name for r in warnings] == ["trio_overseer"]


async def test_lines_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with overseer() as ovr:
        ovr.add("talker", PY, PRINT_BOTH(3))
        with trio.fail_after(T):
            await ovr.supervise("talker")
    messages = [r.getMessage() for r in caplog.records if r.name == "trio_overseer.proc.talker"]
    for text in ("out 0", "out 1", "out 2", "err 0", "err 1", "err 2"):
        assert [m for m in messages if text in m], (text, messages)
    outs = [next(i for i, m in enumerate(messages) if f"out {k}" in m) for k in range(3)]
    assert outs == sorted(outs)


# --- readiness helpers ---------------------------------------------------------------


async def test_wait_for_state_already_there() -> None:
    async with overseer() as ovr:
        ovr.add("p", PY, EXIT_0)
        with trio.fail_after(1):
            info = await ovr.wait_for_state("p", State.INITIAL)
        assert info.state is State.INITIAL
        with trio.fail_after(T):
            await ovr.supervise("p")
        with trio.fail_after(1):
            info = await ovr.wait_for_state("p", State.INTERRUPTED, State.FINISHED)
        assert info.state is State.FINISHED
        assert info.id == "p"


@pytest.mark.parametrize("transient", [State.STARTING, State.RUNNING])
async def test_wait_for_state_catches_transient_states(transient: State) -> None:
    got: list[ProcessInfo] = []
    async with overseer() as ovr:
        ovr.add("p", PY, EXIT_0)

        async def waiter() -> None:
            got.append(await ovr.wait_for_state("p", transient))

        with trio.fail_after(T):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                await ovr.supervise("p")
    assert [info.state for info in got] == [transient]


async def test_wait_for_state_catches_stopping() -> None:
    got: list[ProcessInfo] = []
    async with overseer() as ovr:
        ovr.add("p", PY, SLEEP_FOREVER)

        async def waiter() -> None:
            got.append(await ovr.wait_for_state("p", State.STOPPING))

        with trio.fail_after(T):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await ovr.start("p")
                ovr.stop("p")
                await ovr.wait_for_state("p", *FINAL)
    assert [info.state for info in got] == [State.STOPPING]


async def test_wait_for_state_timeout() -> None:
    async with overseer() as ovr:
        ovr.add("p", PY, SLEEP_FOREVER)
        with trio.fail_after(T):
            await ovr.start("p")
            start = trio.current_time()
            with pytest.raises(TimeoutError):
                await ovr.wait_for_state("p", State.FINISHED, timeout=0.2)
            assert trio.current_time() - start >= 0.19
            ovr.stop("p")


async def test_wait_for_log() -> None:
    async with overseer() as ovr:
        ovr.add("p", PY, PRINT_THEN_SLEEP("first line", "second line"))
        ovr.add("sig", PY, PRINT_SIGNALS)
        with trio.fail_after(T):
            await ovr.start("p")
            await ovr.start("sig")
            ready = await ovr.wait_for_log("p", "^ready$")
            assert (ready.id, ready.type, ready.text) == ("p", STDOUT, "ready")
            # lines printed before the call still match
            first = await ovr.wait_for_log("p", "first")
            assert first.text == "first line"
            second = await ovr.wait_for_log("p", re.compile(r"sec.nd"))
            assert second.text == "second line"
            # and future lines too
            await ovr.wait_for_log("sig", "ready")
            async with trio.open_nursery() as nursery:
                got: list[LogMsg] = []

                async def waiter() -> None:
                    got.append(await ovr.wait_for_log("sig", "SIGUSR1"))

                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                ovr.signal("sig", signal.SIGUSR1)
            assert got[0].text == "got SIGUSR1"
            assert got[0].id == "sig"
            with pytest.raises(TimeoutError):
                await ovr.wait_for_log("p", "never printed", timeout=0.2)
            ovr.stop_all()


async def test_wait_for_log_sees_recent_tail() -> None:
    lines = ["marker line", *(f"filler {i}" for i in range(150))]
    async with overseer() as ovr:
        ovr.add("p", PY, PRINT_THEN_SLEEP(*lines))
        with trio.fail_after(T):
            await ovr.start("p")
            await ovr.wait_for_log("p", "^ready$")
            msg = await ovr.wait_for_log("p", "^marker")
            assert msg.text == "marker line"
            ovr.stop("p")


async def test_lines_published_before_final_state() -> None:
    n = 5000
    async with overseer() as ovr:
        send, recv = trio.open_memory_channel[LogMsg](math.inf)
        ovr.watch_logs(send)
        ovr.add("p", PY, PRINT_LINES(n))
        with trio.fail_after(T):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ovr.supervise, "p")
                await ovr.wait_for_state("p", State.FINISHED)
                # no checkpoint since the final state was announced
                got, _ = drain(recv)
    assert [m.text for m in got] == [str(i) for i in range(n)]


async def test_wait_for_log_on_stderr() -> None:
    async with overseer() as ovr:
        ovr.add("p", PY, PRINT_BOTH(2))
        with trio.fail_after(T):
            async with trio.open_nursery() as nursery:
                got: list[LogMsg] = []

                async def waiter() -> None:
                    got.append(await ovr.wait_for_log("p", "^err 1$"))

                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                await ovr.supervise("p")
    assert got[0].type == STDERR


# --- many procs, many overseers --------------------------------------------------------


async def test_many_concurrent_procs() -> None:
    n = 120
    rec = Recorder()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, overseer() as ovr:
            nursery.start_soon(rec.pump, rec.watch_state(ovr))
            for i in range(n):
                ovr.add(f"p{i:03}", PY, exit_with(i % 7))
            await ovr.supervise_all()
            infos = [ovr.status(f"p{i:03}") for i in range(n)]
    assert [i.exit_code for i in infos] == [i % 7 for i in range(n)]
    assert all(i.state is State.FINISHED for i in infos)
    assert len({i.pid for i in infos}) == n
    for i in range(n):
        assert split_runs(rec.states(f"p{i:03}")) == [
            [State.STARTING, State.RUNNING, State.FINISHED]
        ]


async def test_several_overseers_at_once() -> None:
    async def one(code: int, seen: dict[int, list[ProcessInfo]]) -> None:
        rec = Recorder()
        async with trio.open_nursery() as nursery, overseer() as ovr:
            nursery.start_soon(rec.pump, rec.watch_state(ovr))
            ovr.add("same-id", PY, exit_with(code))
            ovr.add("sleeper", PY, SLEEP_FOREVER)
            await ovr.start("sleeper")
            assert await ovr.supervise("same-id") == code
            ovr.stop("sleeper")
            await ovr.wait_for_state("sleeper", *FINAL)
        seen[code] = rec.items

    seen: dict[int, list[ProcessInfo]] = {}
    with trio.fail_after(T):
        async with trio.open_nursery() as nursery:
            for code in (3, 4, 5):
                nursery.start_soon(one, code, seen)
    for code, infos in seen.items():
        finals = [i for i in infos if i.id == "same-id" and i.state in FINAL]
        assert [i.exit_code for i in finals] == [code]
        assert len([i for i in infos if i.id == "sleeper" and i.state in FINAL]) == 1


# --- supervise_all and Overseer without a block -------------------------------------------


async def test_supervise_all_without_block(tmp_path: Path) -> None:
    ovr = Overseer(handle_signals=False, backoff_base=0.01)
    assert not ovr.is_running()
    assert not ovr.is_stopping()
    ovr.add("ok", PY, EXIT_0)
    ovr.add("fail", PY, EXIT_42)
    ovr.add("flaky", PY, FAIL_UNTIL(tmp_path / "count", 2), retry_times=1)
    with trio.fail_after(T):
        await ovr.supervise_all()
    assert [ovr.status(i).exit_code for i in ("ok", "fail", "flaky")] == [0, 42, 0]
    assert ovr.status("flaky").restarts == 1
    assert not ovr.is_running()
    first_pid = ovr.status("ok").pid
    with trio.fail_after(T):
        await ovr.supervise_all()  # again
        assert await ovr.supervise("fail") == 42
    assert ovr.status("ok").pid != first_pid
    assert ovr.status("ok").state is State.FINISHED


def watchdogs_of(ovr: Overseer) -> list[int]:
    """The watchdog processes of `ovr` (they carry its token on their command line)."""
    token = ovr._lifetime.token
    return [pid for pid in _procfs.pids() if token in _procfs.cmdline(pid) and pid_alive(pid)]


async def test_nothing_outlives_supervise_without_a_block() -> None:
    # The one shutdown path ends a supervise() without a block as it ends the
    # block: the watchdog is dismissed with the last supervision, and comes
    # back with the next one.
    ovr = Overseer(handle_signals=False)
    with trio.fail_after(T):
        for id in ("first", "second"):
            ovr.add(id, PY, SLEEP_FOREVER)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ovr.supervise, id)
                await ovr.wait_for_log(id, "ready")
                assert len(watchdogs_of(ovr)) == 1
                ovr.stop(id)
            for pid in watchdogs_of(ovr):  # it exits once told goodbye
                await wait_pid_gone(pid)
            assert not ovr.is_running()


async def test_is_running_while_supervising() -> None:
    ovr = Overseer(handle_signals=False)
    ovr.add("p", PY, SLEEP_FOREVER)
    with trio.fail_after(T):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ovr.supervise_all)
            await ovr.wait_for_state("p", State.RUNNING)
            assert ovr.is_running()
            ovr.stop_all()
    assert not ovr.is_running()
    assert ovr.status("p").state is State.INTERRUPTED


async def test_supervise_all_waits_for_started_procs() -> None:
    events: list[str] = []
    async with overseer() as ovr:
        ovr.add("long", PY, SLEEP_FOREVER)
        with trio.fail_after(T):
            await ovr.start("long")
            ovr.add("quick", PY, EXIT_0)

            async def supervise_all() -> None:
                await ovr.supervise_all()
                events.append("supervise_all returned")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(supervise_all)
                await ovr.wait_for_state("quick", State.FINISHED)
                # give a wrong early return the chance to show (not a sync point)
                await trio.sleep(0.2)
                events.append("stopping long")
                ovr.stop("long")
    assert events == ["stopping long", "supervise_all returned"]
    assert ovr.status("long").state is State.INTERRUPTED


async def test_default_handle_signals_in_main_thread() -> None:
    async with open_overseer(stop_timeout=1.0) as ovr:
        ovr.add("p", PY, EXIT_0)
        with trio.fail_after(T):
            assert await ovr.supervise("p") == 0


# --- leaving the block ---------------------------------------------------------------


async def start_stubborn(ovr: Overseer) -> list[int]:
    """Start a SIGTERM-ignoring and a plain sleeper; return their pids once ready."""
    ovr.add("stubborn", PY, IGNORE_SIGTERM)
    ovr.add("plain", PY, SLEEP_FOREVER)
    pids = [(await ovr.start("stubborn")).pid, (await ovr.start("plain")).pid]
    await ovr.wait_for_log("stubborn", "ready")
    await ovr.wait_for_log("plain", "ready")
    return pids


def check_all_stopped(ovr: Overseer, pids: list[int]) -> None:
    assert not any(map(pid_alive, pids))
    assert ovr.status("stubborn").error == "signal: SIGKILL"
    assert ovr.status("plain").error == "signal: SIGTERM"
    assert ovr.status("plain").state is State.INTERRUPTED


async def test_block_exit_normal_stops_everything() -> None:
    with trio.fail_after(T):
        async with overseer(stop_timeout=0.3) as ovr:
            pids = await start_stubborn(ovr)
    check_all_stopped(ovr, pids)


@pytest.mark.parametrize("error", [ValueError("boom"), KeyboardInterrupt()], ids=repr)
async def test_block_exit_by_exception_stops_everything(error: BaseException) -> None:
    # The block gives the body's exception back as it was raised, not in a
    # group (its nursery would wrap it), with its own traceback.
    pids: list[int] = []
    # The whole block in pytest.raises: what leaves the block is the point.
    with trio.fail_after(T), pytest.raises(type(error)) as info:  # noqa: PT012
        async with overseer(stop_timeout=0.3) as ovr:
            pids = await start_stubborn(ovr)
            raise error
    assert info.value is error
    assert info.traceback[-1].name == "test_block_exit_by_exception_stops_everything"
    check_all_stopped(ovr, pids)


async def test_block_exit_by_cancellation_stops_everything() -> None:
    with trio.fail_after(T):
        with trio.move_on_after(T) as scope:
            async with overseer(stop_timeout=0.3) as ovr:
                pids = await start_stubborn(ovr)
                scope.deadline = trio.current_time() + 0.05
                await trio.sleep_forever()
        assert scope.cancelled_caught
    check_all_stopped(ovr, pids)


async def test_block_exit_stops_a_supervise_running_outside_it() -> None:
    # The block owns its procs: leaving it ends a supervise() that runs in a
    # task of an outer nursery too (it then returns the run's exit code).
    with trio.fail_after(T):
        async with trio.open_nursery() as outside:
            async with overseer(stop_timeout=0.3) as ovr:
                ovr.add("p", PY, SLEEP_FOREVER)
                outside.start_soon(ovr.supervise, "p")
                await ovr.wait_for_log("p", "ready")
            assert ovr.status("p").state is State.INTERRUPTED
            assert not ovr.is_running()


async def test_block_exit_cancels_pending_restart() -> None:
    with trio.fail_after(T):
        start = trio.current_time()
        async with overseer(backoff_base=30.0) as ovr:
            ovr.add("p", PY, EXIT_1, retry_times=3)
            await ovr.start("p")
            info = await ovr.wait_for_state("p", *FINAL)
        assert trio.current_time() - start < 10  # did not wait the 15..30 s backoff
    assert info.exit_code == 1
    assert ovr.status("p").restarts == 0


async def test_backoff_never_overflows() -> None:
    # 2.0 ** 1024 overflows a float: the delay of the 1025th restart must still
    # be computed (once capped by backoff_max, the exponent no longer matters).
    retries = 1100
    async with overseer(backoff_max=0.0) as ovr:
        ovr.add("p", "false", retry_times=retries)
        with trio.fail_after(120):
            assert await ovr.supervise("p") == 1
        info = ovr.status("p")
    assert (info.state, info.restarts, info.restart_in) == (State.FINISHED, retries, None)
