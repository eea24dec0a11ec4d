"""Stop escalation on real processes: ladders (`stop_signals=`), and a second
stop(id) that kills at once."""

from __future__ import annotations

import math
import re
import signal
from pathlib import Path
from typing import Any

import pytest
import trio
from children import EXIT_0, FINAL, IGNORE_SIGTERM, PY, Lines, T, python
from cli_children import IGNORE_SIGTERM as IGNORE_SIGTERM_CMD
from cli_children import INSTALLED, client, run_tool, write_yaml

from trio_overseer import Cmd, LogMsg, Overseer, State, open_overseer


async def test_a_second_stop_kills_at_once() -> None:
    with trio.fail_after(T):
        async with open_overseer(handle_signals=False) as ovr:
            ovr.add("stubborn", PY, IGNORE_SIGTERM, stop_timeout=60)
            await ovr.start("stubborn")
            await ovr.wait_for_log("stubborn", "ready")
            ovr.stop("stubborn")
            await ovr.wait_for_state("stubborn", State.STOPPING)
            start = trio.current_time()
            ovr.stop("stubborn")  # again: no 60 s grace left
            info = await ovr.wait_for_state("stubborn", *FINAL)
            assert trio.current_time() - start < 30
    assert (info.state, info.exit_code) == (State.INTERRUPTED, -signal.SIGKILL)


async def test_a_second_stop_in_the_cli_kills_at_once(tmp_path: Path) -> None:
    write_yaml(tmp_path, {"stubborn": {"cmd": IGNORE_SIGTERM_CMD, "stop_timeout": 60}})
    async with run_tool(tmp_path, "start", "--no-color") as tool:
        await tool.out.wait_for(r"stubborn +\| ready")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client, tmp_path, "stop", "stubborn")  # waits for the end
            await tool.out.wait_for(r"stubborn +\| stopping")
            rc, _out, err = await client(tmp_path, "stop", "stubborn", tool=INSTALLED)
        assert rc == 0, err
        await tool.out.wait_for(r"stubborn +\| stopped \(signal: SIGKILL\)")
        assert await tool.wait() == 0  # stopped on request


# --- the ladder -------------------------------------------------------------------------


#: Prints each signal it gets ("got SIGINT"...) and keeps running, but for SIGTERM
#: when `die_on_term`; its child (same group, same handlers) does the same.
def PRINTS_SIGNALS(die_on_term: bool = False) -> list[str]:
    return python(
        f"""
        import os, signal, sys, time
        def say(*words):  # one write per line: the two processes share the pipe
            os.write(1, (" ".join(map(str, words)) + "\\n").encode())
        def on_signal(signum, frame):
            say(os.getpid(), "got", signal.Signals(signum).name)
            if {die_on_term} and signum == signal.SIGTERM:
                sys.exit(0)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP):
            signal.signal(sig, on_signal)
        if os.fork() == 0:
            say("child", os.getpid())
        else:
            say("leader", os.getpid())
        while True:
            time.sleep(3600)
        """
    )


def got(lines: list[str], pid: str) -> list[str]:
    return [line.split()[-1] for line in lines if line.startswith(f"{pid} got")]


LADDER: list[tuple[int | str, float]] = [(signal.SIGINT, 0.5), ("SIGUSR1", 0.5), ("hup", 0.5)]


@pytest.mark.parametrize("how", ["stop", "block exit"])
async def test_the_ladder_signals_the_whole_group_step_by_step(how: str) -> None:
    lines: list[str] = []
    send, logs = trio.open_memory_channel[LogMsg](math.inf)
    with trio.fail_after(T):
        async with open_overseer(handle_signals=False) as ovr:
            ovr.watch_logs(send)  # until the block's exit has stopped everything
            ovr.add("p", PY, PRINTS_SIGNALS(), stop_signals=LADDER)
            info = await ovr.start("p")
            assert (info.retry_times, ovr.status("p").pid) == (0, info.pid)
            await ovr.wait_for_log("p", "^leader")
            await ovr.wait_for_log("p", "^child")
            if how == "stop":
                ovr.stop("p")
                info = await ovr.wait_for_state("p", *FINAL)
        async for msg in logs:
            lines.append(msg.text)
    leader = next(line.split()[1] for line in lines if line.startswith("leader"))
    child = next(line.split()[1] for line in lines if line.startswith("child"))
    for pid in (leader, child):  # each step reached every member of the group, in order
        assert got(lines, pid) == ["SIGINT", "SIGUSR1", "SIGHUP"], lines
    if how == "stop":
        assert (info.state, info.exit_code) == (State.INTERRUPTED, -signal.SIGKILL)


async def test_the_ladder_stops_at_the_step_that_works() -> None:
    with trio.fail_after(T):
        async with open_overseer(handle_signals=False) as ovr:
            ladder = [(signal.SIGINT, 0.3), (signal.SIGTERM, 30), (signal.SIGHUP, 30)]
            cmd = ovr.add("p", PY, PRINTS_SIGNALS(True), stop_signals=ladder, buffered=True)
            await ovr.start("p")
            await ovr.wait_for_log("p", "^child")
            start = trio.current_time()
            ovr.stop("p")
            info = await ovr.wait_for_state("p", *FINAL)
            assert trio.current_time() - start < 20  # not the 30 s of the second step
            lines = cmd.status().stdout
    assert (info.state, info.exit_code) == (State.FINISHED, 0)  # it exited on SIGTERM
    assert not any("SIGHUP" in line for line in lines)


async def test_a_second_stop_skips_the_rest_of_the_ladder() -> None:
    with trio.fail_after(T):
        async with open_overseer(handle_signals=False) as ovr:
            ovr.add("p", PY, PRINTS_SIGNALS(), stop_signals=[(signal.SIGINT, 60)])
            await ovr.start("p")
            await ovr.wait_for_log("p", "^child")
            ovr.stop("p")
            await ovr.wait_for_log("p", "got SIGINT")
            ovr.stop("p")
            info = await ovr.wait_for_state("p", *FINAL)
    assert info.exit_code == -signal.SIGKILL


async def test_a_cmd_takes_a_ladder() -> None:
    cmd = Cmd(PY, PRINTS_SIGNALS(), stop_signals=[("INT", 0.2), ("TERM", 0.2)], streaming=True)
    assert (cmd.stop_signal, cmd.stop_timeout) == (signal.SIGINT, 0.4)
    assert cmd.clone().stop_signals == ((signal.SIGINT, 0.2), (signal.SIGTERM, 0.2))
    seen = Lines()
    with trio.fail_after(T):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(seen.pump_channel, cmd.stdout)
            await nursery.start(cmd.run)
            await seen.wait_for(lambda line: line.startswith("child"))
            cmd.stop()
            status = await cmd.wait()
    assert status.exit == -signal.SIGKILL
    assert [line.split()[-1] for line in seen.lines if " got " in line].count("SIGTERM") == 2


@pytest.mark.parametrize(
    ("ladder", "message"),
    [
        ([], "expected a list of (signal, seconds) steps"),
        ("SIGTERM", "expected a list of (signal, seconds) steps"),
        ([("SIGTERM",)], "step 1: expected a (signal, seconds) pair"),
        ([("SIGINT", 1), ("SIGKILL", 1)], "step 2: SIGKILL always comes last"),
        ([("SIGNOPE", 1)], "step 1: unknown signal name 'SIGNOPE'"),
        ([("INT", -1)], "step 1: expected a finite number of seconds >= 0"),
        ([("INT", math.inf)], "step 1: expected a finite number of seconds >= 0"),
        ([("INT", True)], "step 1: expected a finite number of seconds >= 0"),
    ],
    ids=str,
)
def test_bad_ladders_name_the_proc_and_option(ladder: object, message: str) -> None:
    ovr = Overseer(handle_signals=False)
    with pytest.raises(ValueError, match=f"^proc 'p': stop_signals: {re.escape(message)}"):
        ovr.add("p", PY, EXIT_0, stop_signals=ladder)  # type: ignore[arg-type]
    assert not ovr.has_proc("p")


@pytest.mark.parametrize("other", [{"stop_timeout": 3}, {"stop_signal": signal.SIGINT}])
def test_a_ladder_and_a_single_stop_signal_are_refused_together(other: dict[str, Any]) -> None:
    ovr = Overseer(handle_signals=False)
    with pytest.raises(ValueError, match=r"^proc 'p': stop_signals is the whole stop"):
        ovr.add("p", PY, EXIT_0, stop_signals=[("INT", 1)], **other)
