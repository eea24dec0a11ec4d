"""Stop escalation on real processes: a second stop(id) kills at once."""

from __future__ import annotations

import signal
from pathlib import Path

import trio
from children import FINAL, IGNORE_SIGTERM, PY, T
from cli_children import IGNORE_SIGTERM as IGNORE_SIGTERM_CMD
from cli_children import INSTALLED, client, run_tool, write_yaml

from trio_overseer import State, open_overseer


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
