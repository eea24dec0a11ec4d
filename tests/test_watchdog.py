"""The watchdog: after a SIGKILL of the Overseer's process, every registered
process group and every tagged process is killed (issue 10, item 1).

The victims here clear their environment (``env -i``): the tag cannot find
them, only their process group can.  So the conftest guard cannot see them
either: each test follows its victim by pid (a unique ``sleep`` argument
names it, so no other test's process is ever mistaken for it) and kills it
by pid in its teardown if it survived.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from children import PY, python, until
from cli_children import INSTALLED, T, run_tool, write_yaml

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the tests follow processes with pidfds"
)


@pytest.fixture
def victims() -> Iterator[list[int]]:
    """Pids to kill at teardown if they are still alive (they carry no tag)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def unique_sleep() -> list[str]:
    """``sleep`` for a bit more than 1000 s, the fraction unique to this test."""
    return ["sleep", f"{1000 + random.random() * 1000:.6f}"]


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [arg.decode() for arg in f.read().split(b"\0")[:-1]]
    except FileNotFoundError:
        return []


async def wait_gone(pid: int, what: list[str]) -> None:
    """Wait (on a pidfd: no polling) until `pid`, running `what`, has exited."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if cmdline(pid)[-len(what) :] != what:  # it is ours (the pidfd pins it)
            return
        with trio.fail_after(T):
            await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)


async def test_cli_killed_takes_a_proc_without_tag_along(
    tmp_path: Path, victims: list[int]
) -> None:
    sleep = unique_sleep()
    write_yaml(tmp_path, {"bare": {"cmd": ["env", "-i", *sleep]}})
    async with run_tool(tmp_path, "start", "--no-socket", tool=INSTALLED) as tool:
        line = await tool.out.wait_for(r"bare +\| running \(pid \d+\)")
        pid = int(re.findall(r"pid (\d+)", line)[0])
        victims.append(pid)
        await until(lambda: cmdline(pid)[-2:] == sleep, "env execs sleep (same pid)")
        tool.send_signal(signal.SIGKILL)
        assert await tool.wait() == -signal.SIGKILL
        await wait_gone(pid, sleep)


async def test_killed_overseer_takes_an_in_group_child_without_tag_along(
    tmp_path: Path, victims: list[int]
) -> None:
    sleep = unique_sleep()
    # The proc's child stays in its process group but re-execs with an empty
    # environment: no tag.
    leader = python(
        f"""
        import subprocess, time
        child = subprocess.Popen(["env", "-i", *{sleep!r}])
        print("child", child.pid, flush=True)
        time.sleep(3600)
        """
    )
    program = textwrap.dedent(
        f"""
        import trio, trio_overseer
        async def main():
            async with trio_overseer.open_overseer() as ovr:
                ovr.add("p", {PY!r}, {leader!r})
                async with ovr.subscribe_logs() as lines:
                    await ovr.start("p")
                    async for msg in lines:
                        print(msg.text, flush=True)
        trio.run(main)
        """
    )
    with trio.fail_after(T):
        proc = await trio.lowlevel.open_process(
            [PY, "-c", program], stdout=subprocess.PIPE, cwd=tmp_path
        )
    try:
        assert proc.stdout is not None
        received = b""
        with trio.fail_after(T):
            while b"\n" not in received:
                received += await proc.stdout.receive_some()
        pid = int(received.split()[1])
        victims.append(pid)
        await until(lambda: cmdline(pid)[-2:] == sleep, "the child execs sleep")
        proc.kill()
        with trio.fail_after(T):
            await proc.wait()
        await wait_gone(pid, sleep)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
