"""Helpers for the command-line tests: child snippets, config files, the tool in a subprocess.

The tool runs as ``python -m trio_overseer ...`` with ``cwd=tmp_path``; its
output is read incrementally and tests wait for specific lines, never on a
sleep.  `run_tool` always ends the tool when the test is done: Ctrl+C, then
Ctrl+C again (kill every proc), then SIGKILL as a last resort.

Every process inherits ``TRIO_OVERSEER_TEST_TAG`` from the test process
(see conftest.py), whose teardown fails the test if any tagged process
survived, so a child left behind by the tool is caught too.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import children
import trio
import yaml
from children import T as T  # re-exported for the CLI tests
from children import pid_alive as pid_alive

PY = sys.executable
TOOL = [PY, "-m", "trio_overseer"]
#: The console script, as a user runs it (installed beside the interpreter).
INSTALLED = [os.path.join(os.path.dirname(PY), "trio-overseer")]


def py(code: str) -> list[str]:
    """A command that runs Python `code` (unbuffered, no site, isolated)."""
    return [PY, *children.python(code)]


SLEEP_FOREVER = [PY, *children.SLEEP_FOREVER]
IGNORE_SIGTERM = [PY, *children.IGNORE_SIGTERM]

#: Prints "got SIGUSR1"/"got SIGUSR2" and keeps running.
PRINT_SIGNALS = [PY, *children.PRINT_SIGNALS]


def exit_with(code: int, out: str = "", err: str = "") -> list[str]:
    """Print `out` to stdout and `err` to stderr (if given), then exit with `code`."""
    return py(
        f"""
        import sys
        if {out!r}:
            print({out!r})
        if {err!r}:
            print({err!r}, file=sys.stderr)
        sys.exit({code})
        """
    )


def write_yaml(
    directory: Path, procs: dict[str, dict[str, Any]], name: str = "overseer.yml"
) -> Path:
    """Write a YAML config of `procs` (id -> settings) and return its path."""
    path = directory / name
    path.write_text(yaml.safe_dump(procs, sort_keys=False), encoding="utf-8")
    return path


def write_text(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


# --- processes -------------------------------------------------------------------


def pids_in(lines: list[str]) -> list[int]:
    """The pids of every ``running (pid N)`` line."""
    return [
        int(m.group(1)) for line in lines for m in [re.search(r"running \(pid (\d+)\)", line)] if m
    ]


class Lines(children.Lines):
    """Lines of the tool's output: waits match a regex and time out."""

    async def pump(self, stream: trio.abc.ReceiveStream) -> None:
        buffer = b""
        while data := await stream.receive_some():
            buffer += data
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                self.add(raw.decode(errors="replace").rstrip("\r"))
        if buffer:
            self.add(buffer.decode(errors="replace"))
        self.close()

    async def wait_for(self, pattern: str | Callable[[str], bool], guard: float = T) -> str:
        """The first line matching the regex (or predicate); fails at EOF or timeout."""
        if isinstance(pattern, str):
            regex = pattern
            pattern = lambda line: re.search(regex, line) is not None  # noqa: E731
        with trio.fail_after(guard):
            return await super().wait_for(pattern)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class Tool:
    """A running ``trio-overseer`` subprocess and its output."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.out = Lines()
        self.err = Lines()

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def wait(self, guard: float = T) -> int:
        """Wait for the tool to exit (and its output to be read); its exit status."""
        with trio.fail_after(guard):
            code = await self.proc.wait()
            await self.out.wait_closed()
            await self.err.wait_closed()
        return code


@asynccontextmanager
async def run_tool(
    cwd: Path,
    *args: str,
    env: dict[str, str] | None = None,
    stdout: int | None = None,
    tool: list[str] = TOOL,
) -> AsyncIterator[Tool]:
    """Run ``trio-overseer *args`` in `cwd`; end it for sure when the block exits."""
    environ = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    environ.update(env or {})
    proc = await trio.lowlevel.open_process(
        [*tool, *args],
        cwd=cwd,
        env=environ,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if stdout is None else stdout,
        stderr=subprocess.PIPE,
    )
    running = Tool(proc)
    async with trio.open_nursery() as nursery:
        if proc.stdout is not None:
            nursery.start_soon(running.out.pump, proc.stdout)
        else:
            running.out.closed = True
        assert proc.stderr is not None
        nursery.start_soon(running.err.pump, proc.stderr)
        try:
            yield running
        finally:
            with trio.CancelScope(shield=True):
                await _end(proc)


async def _end(proc: trio.Process) -> None:
    """Make sure the tool is gone: it would take its procs along (SIGINT twice)."""
    for sig, grace in ((signal.SIGINT, 0.0), (signal.SIGINT, 10.0), (signal.SIGKILL, 5.0)):
        if proc.returncode is not None:
            return
        proc.send_signal(sig)
        with trio.move_on_after(grace):
            await proc.wait()
    with trio.move_on_after(5):
        await proc.wait()


async def run(
    cwd: Path, *args: str, env: dict[str, str] | None = None, tool: list[str] = TOOL
) -> tuple[int, str, str]:
    """Run the tool to its end: (exit status, stdout, stderr)."""
    async with run_tool(cwd, *args, env=env, tool=tool) as running:
        code = await running.wait()
    return code, running.out.text, running.err.text


# --- the control socket, raw -------------------------------------------------------


async def ask(path: Path, raw: bytes, *, replies: int = 1) -> list[Any]:
    """Send `raw` on the control socket at `path`; the JSON lines answered.

    Reads up to the `replies`-th line carrying ``"ok"`` (or EOF).
    """
    with trio.fail_after(T):
        stream = await trio.open_unix_socket(os.fspath(path))
        async with stream:
            await stream.send_all(raw)
            answers: list[Any] = []
            buffer = b""
            while data := await stream.receive_some():
                buffer += data
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    answers.append(json.loads(line))
                    if isinstance(answers[-1], dict) and "ok" in answers[-1]:
                        replies -= 1
                        if not replies:
                            return answers
            return answers


async def request(path: Path, message: dict[str, Any]) -> Any:
    """Send one request; the final line of its answer."""
    answers = await ask(path, json.dumps(message).encode() + b"\n")
    assert answers, "no answer"
    return answers[-1]


async def wait_for_socket(path: Path) -> None:
    """Poll, a bounded number of times, until the instance answers on `path`."""
    with trio.fail_after(T):
        while True:
            try:
                reply = await request(path, {"cmd": "status"})
            except OSError:
                await trio.sleep(0.02)
                continue
            assert reply["ok"]
            return


async def client(cwd: Path, *args: str, tool: list[str] = TOOL) -> tuple[int, str, str]:
    """Run a client command (``status``, ``stop``...) to its end."""
    with trio.fail_after(T):
        result = await trio.run_process(
            [*tool, *args], cwd=cwd, capture_stdout=True, capture_stderr=True, check=False
        )
    return result.returncode, result.stdout.decode(), result.stderr.decode()
