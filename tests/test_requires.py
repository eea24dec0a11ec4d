"""Dependencies on real processes: ``add(..., requires=...)`` gates each start on
the readiness of what the proc requires, stops in the reverse order, refuses
cycles and unknown ids, and keeps the dependents of a failed requirement
from running (the graph itself is tested in test_requires_graph.py)."""

from __future__ import annotations

import math
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import children
import pytest
import trio
from children import EXIT_0, EXIT_1, FINAL, PY, SLEEP_FOREVER, T, add_refuses, python

from trio_overseer import (
    Overseer,
    OverseerError,
    ProcessInfo,
    RequirementError,
    State,
)
from trio_overseer.testing import free_port

overseer = partial(children.overseer, stop_timeout=2.0)


def SERVER(port: int, delay: float = 0.3) -> list[str]:
    """Listens on `port` only after `delay` seconds (a slow start), then serves forever."""
    return python(
        f"""
        import socket, time
        time.sleep({delay})
        server = socket.create_server(("127.0.0.1", {port}))
        print("listening")
        while True:
            server.accept()[0].close()
        """
    )


def CLIENT(port: int) -> list[str]:
    """Connects to `port` the moment it starts: exit 0 if it could, 1 if refused."""
    return python(
        f"""
        import socket, sys
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
        except OSError as exc:
            print("refused:", exc)
            sys.exit(1)
        print("connected")
        """
    )


async def drain(states: trio.MemoryReceiveChannel[ProcessInfo]) -> list[ProcessInfo]:
    return [info async for info in states]


def first(events: list[ProcessInfo], id: str, state: State) -> int:
    """The index of the first event of `id` in `state`."""
    return next(i for i, e in enumerate(events) if e.id == id and e.state is state)


# --- start order and readiness gating ---------------------------------------------------


@pytest.mark.parametrize("attempt", range(3))
async def test_a_client_of_its_requirements_port_never_fails(attempt: int) -> None:
    port = free_port()
    with trio.fail_after(T):
        async with overseer() as ovr:
            ovr.add("server", PY, SERVER(port), ready_port=port, ready_timeout=10)
            ovr.add("client", PY, CLIENT(port), requires=["server"])
            async with ovr.subscribe_states() as states, trio.open_nursery() as nursery:
                nursery.start_soon(ovr.supervise, "client")
                info = await ovr.wait_for_state("client", *FINAL)
                ovr.stop("server")
            events = await drain(states)
    assert (info.state, info.exit_code) == (State.FINISHED, 0), info
    assert first(events, "client", State.STARTING) > first(events, "server", State.RUNNING)
    waiting = [e for e in events if e.id == "client" and e.waiting_for]
    assert waiting
    assert waiting[0].waiting_for == ("server",)
    assert waiting[0].state is State.INITIAL


async def test_without_requires_the_same_client_fails() -> None:
    # The control of the test above: the race is real.
    port = free_port()
    with trio.fail_after(T):
        async with overseer() as ovr:
            ovr.add("server", PY, SERVER(port, delay=1.0))
            ovr.add("client", PY, CLIENT(port))
            await ovr.start("server")
            assert await ovr.supervise("client") == 1


async def test_a_chain_starts_in_order_with_supervise_all() -> None:
    # c <- b <- a: no probes, so ready means running.
    with trio.fail_after(T):
        async with overseer() as ovr:
            ovr.add("a", PY, EXIT_0, requires=("b",))
            ovr.add("b", PY, SLEEP_FOREVER, requires=("c",))
            ovr.add("c", PY, SLEEP_FOREVER)
            async with ovr.subscribe_states() as states, trio.open_nursery() as nursery:
                nursery.start_soon(ovr.supervise_all)
                await ovr.wait_for_state("a", *FINAL)
                ovr.stop_all()
            events = await drain(states)
    assert first(events, "b", State.STARTING) > first(events, "c", State.RUNNING)
    assert first(events, "a", State.STARTING) > first(events, "b", State.RUNNING)
    assert [e.waiting_for for e in events if e.id == "a" and e.waiting_for] == [("b",)]


async def test_start_brings_its_requirements_and_returns_once_ready(tmp_path: Path) -> None:
    port = free_port()
    with trio.fail_after(T):
        async with overseer() as ovr:
            ovr.add("db", PY, SERVER(port), ready_port=port, ready_timeout=10)
            ovr.add("cache", PY, SLEEP_FOREVER, requires=["db"])
            ovr.add("api", PY, SLEEP_FOREVER, requires=["cache"], ready_line="ready")
            info = await ovr.start("api")
            assert info.state is State.RUNNING
            assert ovr.status("db").state is State.RUNNING
            assert ovr.status("cache").state is State.RUNNING
            # start() waited for api's own probe: its line was printed.
            assert await ovr.wait_for_log("api", "ready", timeout=0)


async def test_supervise_without_a_block_supervises_the_requirements_meanwhile() -> None:
    ovr = Overseer(handle_signals=False, stop_timeout=2.0)
    ovr.add("db", PY, SLEEP_FOREVER)
    ovr.add("job", PY, EXIT_0, requires=["db"])
    with trio.fail_after(T):
        assert await ovr.supervise("job") == 0
    db = ovr.status("db")
    assert db.state is State.INTERRUPTED
    assert db.pid > 0
    assert not ovr.is_running()


async def test_a_one_shot_requirement_with_a_probe_of_its_result(tmp_path: Path) -> None:
    # Without a probe a requirement is ready once it runs; a job that others
    # need done says when it is with a probe of its result.
    marker = tmp_path / "migrated"
    with trio.fail_after(T):
        async with overseer() as ovr:
            migrate = python(f"import time; time.sleep(0.2); open({str(marker)!r}, 'w').close()")
            ovr.add("migrate", PY, migrate, ready_path=marker)
            app = python(f"import os, sys; sys.exit(not os.path.exists({str(marker)!r}))")
            ovr.add("app", PY, app, requires=["migrate"])
            await ovr.supervise_all()
            assert ovr.status("app").exit_code == 0


# --- stop order --------------------------------------------------------------------------


async def test_dependents_stop_before_their_requirements() -> None:
    # db <- api1, api2 <- web: web first, then api1 and api2 together, then db.
    send, states = trio.open_memory_channel[ProcessInfo](math.inf)
    with trio.fail_after(T):
        async with overseer() as ovr:
            ovr.add("db", PY, SLEEP_FOREVER)
            ovr.add("api1", PY, SLEEP_FOREVER, requires=["db"])
            ovr.add("api2", PY, SLEEP_FOREVER, requires=["db"])
            ovr.add("web", PY, SLEEP_FOREVER, requires=["api1", "api2"])
            ovr.watch_state(send)
            await ovr.start("web")
            for id in ("db", "api1", "api2"):
                assert ovr.status(id).state is State.RUNNING
        # The block's exit stopped them all, and closed the channel.
        events = await drain(states)
    stopping = [e.id for e in events if e.state is State.STOPPING]
    ended = {e.id: i for i, e in enumerate(events) if e.state in FINAL}
    assert stopping[0] == "web"
    assert stopping[-1] == "db"
    assert set(stopping[1:3]) == {"api1", "api2"}
    assert first(events, "api1", State.STOPPING) > ended["web"]
    assert first(events, "api2", State.STOPPING) > ended["web"]
    assert first(events, "db", State.STOPPING) > max(ended["api1"], ended["api2"])
    # api1 and api2 stop together: both are stopping before either has ended.
    assert max(first(events, a, State.STOPPING) for a in ("api1", "api2")) < min(
        ended["api1"], ended["api2"]
    )


async def test_stop_all_kill_kills_every_proc_at_once() -> None:
    with trio.fail_after(T):
        async with overseer() as ovr:
            ovr.add("db", PY, SLEEP_FOREVER)
            ovr.add("api", PY, SLEEP_FOREVER, requires=["db"])
            await ovr.start("api")
            ovr.stop_all(kill=True)
            for id in ("db", "api"):
                info = await ovr.wait_for_state(id, *FINAL)
                assert info.exit_code == -signal.SIGKILL


# --- refused: cycles and unknown ids -----------------------------------------------------


async def test_a_cycle_is_refused_and_nothing_starts() -> None:
    with trio.fail_after(T):
        async with overseer() as ovr:
            ovr.add("a", PY, SLEEP_FOREVER, requires=["b"])
            ovr.add("b", PY, SLEEP_FOREVER, requires=["c"])
            ovr.add("c", PY, SLEEP_FOREVER, requires=["a"])
            ovr.add("d", PY, SLEEP_FOREVER)
            async with ovr.subscribe_states() as states:
                with pytest.raises(RequirementError) as caught:
                    await ovr.supervise_all()
                with pytest.raises(RequirementError):
                    await ovr.start("a")
                with pytest.raises(RequirementError):
                    await ovr.supervise("b")
            events = await drain(states)
    message = str(caught.value)
    assert "cycle" in message
    assert all(f"'{id}'" in message for id in "abc")
    assert "nothing was started" in message
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, OverseerError)
    assert events == []
    assert not ovr.is_running()


async def test_an_unknown_requirement_is_refused_by_name() -> None:
    with trio.fail_after(T):
        async with overseer() as ovr:
            ovr.add("db", PY, SLEEP_FOREVER)
            ovr.add("api", PY, SLEEP_FOREVER, requires=["db", "cache"])
            for start in (ovr.supervise_all, lambda: ovr.start("api")):
                with pytest.raises(RequirementError, match="proc 'api' requires 'cache'"):
                    await start()
            assert ovr.status("db").state is State.INITIAL  # not started either


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"requires": "db"}, TypeError, "requires must be a collection of proc ids"),
        ({"requires": ["db", ""]}, TypeError, "requires must hold proc ids"),
        ({"requires": ["p"]}, ValueError, "requires names the proc itself"),
        ({"requires": ["db"], "restart_with": ["x"]}, ValueError, "restart_with names 'x'"),
        ({"restart_with": "db"}, TypeError, "restart_with must be a collection"),
    ],
    ids=str,
)
def test_bad_requirements_name_the_proc_and_option(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    add_refuses(options, error, message)


# --- a failed requirement ----------------------------------------------------------------


# A requirement without ready_* probes is ready once it runs: only one that
# cannot start fails before that.  With a probe, ending first is failing too.
@pytest.mark.parametrize(
    ("db", "why"),
    [
        ({"exec": "/nonexistent/db"}, "requirement 'db' could not start: cannot start"),
        (
            {"args": EXIT_1, "retry_times": 1, "ready_line": "ready"},
            "requirement 'db' gave up after 1 restart (exit code 1)",
        ),
        (
            {"args": EXIT_1, "ready_line": "ready"},
            "requirement 'db' ended before it was ready (exit code 1)",
        ),
        (
            {"args": SLEEP_FOREVER, "ready_port": 1, "ready_timeout": 0.3},
            "requirement 'db' was not ready within 0.3 s: still waiting for TCP port",
        ),
    ],
    ids=["fatal", "gave-up", "failed", "not-ready"],
)
async def test_a_failed_requirement_keeps_its_dependents_from_running(
    db: dict[str, Any], why: str
) -> None:
    exec = db.pop("exec", PY)
    with trio.fail_after(T):
        async with overseer() as ovr:
            ovr.add("db", exec, db.pop("args", ()), **db)
            ovr.add("api", PY, SLEEP_FOREVER, requires=["db"], retry_times=5)
            ovr.add("web", PY, SLEEP_FOREVER, requires=["api"])
            async with ovr.subscribe_states() as states:
                await ovr.supervise_all()
            events = await drain(states)
    for id, reason in (("api", why), ("web", "requirement 'api' could not start: " + why)):
        info = ovr.status(id)
        assert (info.state, info.pid, info.exit_code) == (State.FATAL, 0, -1)
        assert info.error is not None, info.error
        assert info.error.startswith(reason), info.error
        assert not info.gave_up
        assert info.restart_in is None
        assert [e.state for e in events if e.id == id and not e.waiting_for] == [
            State.STARTING,
            State.FATAL,
        ]
    assert ovr.status("db").state is not State.RUNNING  # not ready in time: stopped


@asynccontextmanager
async def api_waiting_for_db() -> AsyncIterator[tuple[Overseer, Any, ProcessInfo]]:
    """Both supervised, "api" requiring "db", which waits 60 s to start: enters
    once api says it waits (yields the Overseer, the state subscription and
    that event); the body must end both procs."""
    async with overseer() as ovr:
        ovr.add("db", PY, SLEEP_FOREVER, delay_start=60)
        ovr.add("api", PY, SLEEP_FOREVER, requires=["db"])
        async with ovr.subscribe_states() as states, trio.open_nursery() as nursery:
            nursery.start_soon(ovr.supervise_all)
            async for blocked in states:
                if blocked.id == "api" and blocked.waiting_for:
                    break
            yield ovr, states, blocked


async def test_a_requirement_stopped_while_waited_for() -> None:
    with trio.fail_after(T):
        async with api_waiting_for_db() as (ovr, _, blocked):
            assert ovr.status("api").waiting_for == ("db",)
            ovr.stop("db")
            info = await ovr.wait_for_state("api", State.FATAL)
    assert (blocked.id, blocked.state, blocked.waiting_for) == ("api", State.INITIAL, ("db",))
    assert info.error == "requirement 'db' was stopped"
    assert ovr.status("api").waiting_for == ()


async def test_a_dependent_stopped_while_waiting_says_it_waits_no_more() -> None:
    with trio.fail_after(T):
        async with api_waiting_for_db() as (ovr, states, _):
            ovr.stop("api")
            async for info in states:
                if info.id == "api":
                    break
            ovr.stop_all()
    assert (info.state, info.waiting_for, info.pid) == (State.INITIAL, (), 0)
    assert ovr.status("api").waiting_for == ()


# --- restarts ------------------------------------------------------------------------------


def STARTS(counter: Path) -> list[str]:
    """Counts its runs in `counter`, prints "run N", then sleeps forever."""
    return python(
        f"""
        import time
        path = {str(counter)!r}
        try:
            n = int(open(path).read()) + 1
        except FileNotFoundError:
            n = 1
        open(path, "w").write(str(n))
        print("run", n)
        while True:
            time.sleep(3600)
        """
    )


@pytest.mark.parametrize("bound", [False, True])
async def test_restart_with(tmp_path: Path, bound: bool) -> None:
    with trio.fail_after(T):
        async with overseer() as ovr:
            ovr.add("db", PY, STARTS(tmp_path / "db"), retry_times=1)
            restart_with = ["db"] if bound else []
            ovr.add("api", PY, STARTS(tmp_path / "api"), requires=["db"], restart_with=restart_with)
            await ovr.start("api")
            await ovr.wait_for_log("api", "run 1")
            await ovr.wait_for_log("db", "run 1")  # it counted its run
            ovr.signal("db", signal.SIGKILL)  # a crash: db restarts
            await ovr.wait_for_log("db", "run 2")
            if bound:
                await ovr.wait_for_log("api", "run 2")
                assert ovr.status("api").restarts == 0  # not counted against its budget
            else:
                assert ovr.status("api").state is State.RUNNING
                assert (tmp_path / "api").read_text() == "1"
            ovr.stop_all()
            await ovr.wait_for_state("db", *FINAL)
    assert (tmp_path / "api").read_text() == ("2" if bound else "1")


async def test_a_dependent_restart_waits_for_its_requirement(tmp_path: Path) -> None:
    # api fails at once and restarts; each start waits for db to be running.
    with trio.fail_after(T):
        async with overseer() as ovr:
            ovr.add("db", PY, SLEEP_FOREVER)
            ovr.add("api", PY, EXIT_1, requires=["db"], retry_times=math.inf)
            await ovr.start("db")
            async with ovr.subscribe_states() as states, trio.open_nursery() as nursery:
                nursery.start_soon(ovr.supervise, "api")
                for _ in range(3):
                    await ovr.wait_for_state("api", State.RUNNING)
                    await ovr.wait_for_state("api", State.FINISHED)
                ovr.stop("db")
                info = await ovr.wait_for_state("api", State.FATAL)
            events = await drain(states)
    assert info.error == "requirement 'db' was stopped"
    assert not any(e.waiting_for for e in events if e.id == "api")  # db was running each time
