"""The stdout of ``trio-overseer start``: stuck, stopped, full or closed (issue 10, items 4, 5, 10).

The installed command runs in a subprocess whose stdout is a pipe the test
reads, or does not read, at will.  A full pipe is seen by polling a write end
of it (no event tells), never guessed from a sleep.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import pytest
import trio
from children import until
from cli_children import INSTALLED as TOOL
from cli_children import SLEEP_FOREVER, T, ask, py, request, wait_for_socket, write_yaml

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the tests watch pipes and processes on Linux"
)

SOCK = ".trio-overseer.sock"
LINE = re.compile(r"^\d\d:\d\d:\d\d (\S+) +\| (.*)$")


def COUNT(n: int, flag: Path | None = None) -> list[str]:
    """Print lines ``n 000000 ...`` to ``n-1``, then exit 0.

    With `flag`, stdout is non-blocking, and once a write has waited for
    half a second (its pipe stays full: nobody reads it) the file `flag` is
    created.
    """
    return py(
        f"""
        import os, select, sys
        flag = {os.fspath(flag) if flag else None!r}
        if flag:
            os.set_blocking(1, False)
        pad = "x" * 60
        for i in range({n}):
            data = memoryview(("n %06d %s\\n" % (i, pad)).encode())
            while data:
                try:
                    data = data[os.write(1, data):]
                except BlockingIOError:
                    if not select.select([], [1], [], 0.5)[1] and not os.path.exists(flag):
                        open(flag, "w").close()
        """
    )


class Tool:
    """The tool with a raw stdout pipe the test reads when it wants."""

    def __init__(self, proc: trio.Process, read_fd: int, probe: int) -> None:
        self.proc = proc
        self.fd = read_fd
        self.probe: int | None = probe  # a write end of the pipe, to see whether it is full
        self.data = bytearray()
        self.err = b""

    def full(self) -> bool:
        """Whether the tool's stdout takes no more (a write would block)."""
        assert self.probe is not None
        return not select.select([], [self.probe], [], 0)[1]

    def close_probe(self) -> None:
        if self.probe is not None:
            os.close(self.probe)
            self.probe = None

    async def read_some(self, limit: int = 1 << 16) -> bytes:
        await trio.lowlevel.wait_readable(self.fd)
        chunk = os.read(self.fd, limit)
        self.data += chunk
        return chunk

    async def read_to_end(self) -> None:
        self.close_probe()  # or the pipe never ends
        with trio.fail_after(T):
            while await self.read_some():
                pass

    def lines(self, id: str) -> list[str]:
        found = []
        for raw in bytes(self.data).decode().splitlines():
            match = LINE.match(raw)
            assert match is not None, f"torn or unknown line: {raw!r}"
            if match[1] == id and match[2].startswith("n "):
                found.append(match[2])
        return found


@asynccontextmanager
async def tool_on_pipe(
    cwd: Path, *args: str, env: dict[str, str] | None = None, merge_stderr: bool = False
) -> AsyncIterator[Tool]:
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    try:
        proc = await trio.lowlevel.open_process(
            [*TOOL, *args],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd if merge_stderr else subprocess.PIPE,
            # A group of its own under ours: not orphaned, so SIGTSTP stops it.
            process_group=0,
        )
        probe = os.dup(write_fd)
    finally:
        os.close(write_fd)
    tool = Tool(proc, read_fd, probe)
    try:
        async with trio.open_nursery() as nursery:

            async def errors(stream: trio.abc.ReceiveStream) -> None:
                while chunk := await stream.receive_some():
                    tool.err += chunk

            if proc.stderr is not None:
                nursery.start_soon(errors, proc.stderr)
            try:
                yield tool
            finally:
                with trio.CancelScope(shield=True):
                    await _end(proc, read_fd)
    finally:
        tool.close_probe()
        os.close(read_fd)


async def _end(proc: trio.Process, read_fd: int) -> None:
    """End the tool for sure (SIGCONT first: it may be stopped); its procs go with it."""
    for sig, grace in ((signal.SIGINT, 2.0), (signal.SIGINT, 10.0), (signal.SIGKILL, 5.0)):
        if proc.returncode is not None:
            return
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(sig)
        with trio.move_on_after(grace):
            while proc.returncode is None:  # keep its stdout flowing meanwhile
                with trio.move_on_after(0.05):
                    await trio.lowlevel.wait_readable(read_fd)
                with suppress(BlockingIOError):
                    os.read(read_fd, 1 << 20)
                if proc.poll() is not None:
                    break
    with trio.move_on_after(5):
        await proc.wait()


def expect_all(lines: list[str], n: int) -> None:
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == list(range(n)), f"{len(numbers)} of {n} lines, first gap near " + str(
        next((i for i, k in enumerate(numbers) if k != i), None)
    )
    assert all(line == f"n {i:06d} {'x' * 60}" for i, line in enumerate(lines))


# --- item 4: stopped with a full stdout ----------------------------------------------


@pytest.mark.parametrize("stop", [signal.SIGSTOP, signal.SIGTSTP])
async def test_stop_and_continue_with_a_full_stdout_loses_nothing(
    tmp_path: Path, stop: signal.Signals
) -> None:
    n = 100_000
    write_yaml(tmp_path, {"count": {"cmd": COUNT(n)}})
    # Unbuffered, a TextIOWrapper ignores the count of a partial write: a
    # write cut short by the stop lost the rest of its lines.
    unbuffered = {"PYTHONUNBUFFERED": "1"}
    async with tool_on_pipe(tmp_path, "start", "--no-socket", env=unbuffered) as tool:
        for _ in range(8):
            await until(tool.full, "stdout is full")
            tool.proc.send_signal(stop)
            await until(lambda: _stopped(tool.proc.pid), "the tool is stopped")
            await tool.read_some(20_000)  # room for part of the blocked write
            tool.proc.send_signal(signal.SIGCONT)
            await tool.read_some(20_000)
        await tool.read_to_end()
        assert await tool.proc.wait() == 0, tool.err
    expect_all(tool.lines("count"), n)


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0] == "T"


# --- item 5: a stdout nobody reads -----------------------------------------------------


async def test_stuck_stdout_holds_the_procs_back_and_nothing_else(tmp_path: Path) -> None:
    n = 200_000
    flag = tmp_path / "held"
    write_yaml(tmp_path, {"count": {"cmd": COUNT(n, flag)}, "idle": {"cmd": SLEEP_FOREVER}})
    sock = tmp_path / SOCK
    async with tool_on_pipe(tmp_path, "start") as tool:
        await wait_for_socket(sock)
        # Nobody reads: the CLI's stdout fills, and then the proc's own pipe.
        await until(tool.full, "stdout is full")
        await until(flag.exists, "the proc is held back")
        # Control requests, restarts and stops are served meanwhile.
        with trio.fail_after(5):
            rows = (await request(sock, {"cmd": "status"}))["procs"]
            assert [r["state"] for r in rows] == ["running", "running"]
            idle_pid = rows[1]["PID"]
            reply = await request(sock, {"cmd": "restart", "id": "idle"})
            assert reply["ok"], reply
            assert reply["proc"]["PID"] not in (0, idle_pid), reply
            reply = await request(sock, {"cmd": "stop", "id": "idle"})
            assert reply["ok"], reply
            assert reply["proc"]["state"] == "interrupted", reply
        # Reading again, every line arrives, whole and in order.
        await tool.read_to_end()
        assert await tool.proc.wait() == 0, tool.err
    expect_all(tool.lines("count"), n)


async def test_sigterm_ends_an_instance_whose_stdout_nobody_reads(tmp_path: Path) -> None:
    flag = tmp_path / "held"
    write_yaml(tmp_path, {"count": {"cmd": COUNT(10**9, flag)}})
    async with tool_on_pipe(tmp_path, "start", "--no-socket") as tool:
        await until(flag.exists, "the proc is held back")
        tool.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(T):
            assert await tool.proc.wait() == 130
    err = tool.err.decode()
    assert "SIGTERM received: stopping every proc" in err
    assert re.search(r"stdout took nothing for 2 s: dropped the last \d+ characters", err), err
    assert "Traceback" not in err


async def test_sigterm_ends_an_instance_whose_stdout_and_stderr_nobody_reads(
    tmp_path: Path,
) -> None:
    flag = tmp_path / "held"
    write_yaml(tmp_path, {"count": {"cmd": COUNT(10**9, flag)}})
    async with tool_on_pipe(tmp_path, "start", "--no-socket", merge_stderr=True) as tool:
        await until(flag.exists, "the proc is held back")
        tool.proc.send_signal(signal.SIGTERM)  # its message cannot be written: never blocks
        with trio.fail_after(T):
            assert await tool.proc.wait() == 130


# --- item 10: stdout that cannot be written ----------------------------------------------


async def test_stdout_dev_full_gives_a_clear_message(tmp_path: Path) -> None:
    write_yaml(tmp_path, {"hello": {"cmd": py("print('hello')")}, "idle": {"cmd": SLEEP_FOREVER}})
    with open("/dev/full", "wb") as full, trio.fail_after(T):
        result = await trio.run_process(
            [*TOOL, "start", "--no-socket"], cwd=tmp_path, stdout=full, capture_stderr=True,
            check=False,
        )  # fmt: skip
    err = result.stderr.decode()
    assert result.returncode == 141, err
    assert "cannot write to stdout (No space left on device): stopping every proc" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", [["start", "--no-socket"], ["check"], ["status"]])
async def test_closed_stdout_gives_a_clear_message(tmp_path: Path, command: list[str]) -> None:
    write_yaml(tmp_path, {"idle": {"cmd": SLEEP_FOREVER}})
    with trio.fail_after(T):
        result = await trio.run_process(
            ["sh", "-c", 'exec "$@" >&-', "sh", *TOOL, *command],
            cwd=tmp_path, capture_stderr=True, check=False,
        )  # fmt: skip
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert "stdout is closed" in err
    assert "Traceback" not in err


async def test_status_to_dev_full_gives_a_clear_message(tmp_path: Path) -> None:
    write_yaml(tmp_path, {"idle": {"cmd": SLEEP_FOREVER}})
    sock = tmp_path / SOCK
    async with tool_on_pipe(tmp_path, "start") as tool:
        await wait_for_socket(sock)
        for command in (["status"], ["check"]):
            with open("/dev/full", "wb") as full, trio.fail_after(T):
                result = await trio.run_process(
                    [*TOOL, *command], cwd=tmp_path, stdout=full, capture_stderr=True,
                    check=False,
                )  # fmt: skip
            err = result.stderr.decode()
            assert result.returncode == 1, err
            assert "cannot write to stdout: No space left on device" in err
            assert "Traceback" not in err
            assert "Exception ignored" not in err
        await ask(sock, b'{"cmd": "stop", "all": true}\n')
        await tool.read_to_end()
