"""``pty: true`` in config files: YAML and TOML, ``check``, and ``start`` with
its stdout on a pipe and on a terminal (the procs' terminals take its size)."""

from __future__ import annotations

import fcntl
import os
import struct
import sys
import termios
import textwrap
from pathlib import Path

import pytest
import trio
from cli_children import INSTALLED, PY, Lines, T, client, run, run_tool, write_text, write_yaml

from trio_overseer._cli._config import ConfigError, describe, load_config

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the CLI tests run on Linux"
)


PTY_YAML = """
web:
  cmd: python3 -m http.server
  pty: true
worker:
  cmd: celery worker
  pty: false
plain:
  cmd: z
"""

PTY_TOML = """
[procs.web]
cmd = "python3 -m http.server"
pty = true

[procs.worker]
cmd = "celery worker"
pty = false

[procs.plain]
cmd = "z"
"""


#: Reports its terminal, writes to stderr too, then prints a line it keeps in
#: its buffer on a pipe (no -u, no PYTHONUNBUFFERED) and waits for `go`.
def report_and_wait(go: Path) -> list[str]:
    code = textwrap.dedent(
        f"""
        import os, sys, time
        print("isatty", sys.stdout.isatty(), sys.stderr.isatty())
        print("size", *os.get_terminal_size(1))
        print("to stderr", file=sys.stderr)
        print("first")
        while not os.path.exists({str(go)!r}):
            time.sleep(0.01)
        print("second")
        """
    )
    return [PY, "-S", "-c", code]


def buffered_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


@pytest.mark.parametrize(("name", "text"), [("a.yml", PTY_YAML), ("a.toml", PTY_TOML)])
def test_pty_key(tmp_path: Path, name: str, text: str) -> None:
    web, worker, plain = load_config(write_text(tmp_path, name, text))
    assert (web.pty, worker.pty, plain.pty) == (True, False, False)
    assert describe(web) == "python3 -m http.server  [pty]"
    assert describe(worker) == "celery worker"


@pytest.mark.parametrize("value", ["1", '"true"', "[80, 24]", "on-demand"])
def test_pty_key_errors(tmp_path: Path, value: str) -> None:
    path = write_text(tmp_path, "overseer.yml", f"web:\n  cmd: x\n  pty: {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}: proc 'web': field 'pty': expected true or false"), problem


async def test_check_shows_and_refuses_the_pty_key(tmp_path: Path) -> None:
    write_text(tmp_path, "overseer.toml", PTY_TOML)
    rc, out, err = await client(tmp_path, "check", tool=INSTALLED)
    assert rc == 0, err
    assert "  web     python3 -m http.server  [pty]" in out.splitlines(), out
    write_text(tmp_path, "bad.yml", "web:\n  cmd: x\n  pty: sometimes\n")
    rc, out, err = await client(tmp_path, "check", "-c", "bad.yml", tool=INSTALLED)
    assert rc == 2
    assert "Traceback" not in err
    assert "bad.yml: proc 'web': field 'pty': expected true or false, got 'sometimes'" in err


async def test_start_on_a_pipe(tmp_path: Path) -> None:
    # The CLI's stdout is a pipe: the proc gets 80x24; its stderr is merged
    # (no "!" mark); a line it buffers on a pipe is printed at once.
    go = tmp_path / "go"
    write_yaml(tmp_path, {"tty": {"cmd": report_and_wait(go), "pty": True}})
    async with run_tool(
        tmp_path, "start", "--no-timestamp", "--no-color", env=buffered_env(), tool=INSTALLED
    ) as tool:
        await tool.out.wait_for(r"^tty  \| first$")  # while it still runs
        go.touch()
        assert await tool.wait() == 0, tool.err.text
    lines = tool.out.lines
    for line in ("isatty True True", "size 80 24", "to stderr", "first", "second"):
        assert f"tty  | {line}" in lines, tool.out.text


async def test_start_on_a_terminal_gives_its_size(tmp_path: Path) -> None:
    # The CLI's stdout is a terminal of 100x30: the proc's is as high, and as
    # wide as what the prefix "HH:MM:SS tty  | " (16 columns) leaves.
    go = tmp_path / "go"
    go.touch()
    write_yaml(tmp_path, {"tty": {"cmd": report_and_wait(go), "pty": True}})
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    out = Lines()
    try:
        async with (
            trio.open_nursery() as nursery,
            run_tool(
                tmp_path, "start", "--no-color", stdout=slave, env=buffered_env(), tool=INSTALLED
            ) as tool,
        ):
            os.close(slave)
            slave = -1
            nursery.start_soon(_pump_pty, trio.lowlevel.FdStream(master), out)
            master = -1  # the stream owns it
            with trio.fail_after(T):
                assert await tool.wait() == 0, tool.err.text
                await out.wait_closed()
    finally:
        for fd in (master, slave):
            if fd >= 0:
                os.close(fd)
    assert any(line.endswith(" tty  | size 84 30") for line in out.lines), out.lines
    assert any(line.endswith(" tty  | isatty True True") for line in out.lines), out.lines


async def _pump_pty(stream: trio.lowlevel.FdStream, out: Lines) -> None:
    """Lines of a pty's master until no slave is left (EIO)."""
    buffer = b""
    async with stream:
        while True:
            try:
                data = await stream.receive_some()
            except trio.BrokenResourceError:  # EIO: the tool and its procs are gone
                break
            if not data:
                break
            buffer += data
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                out.add(raw.decode(errors="replace").rstrip("\r"))
    if buffer:
        out.add(buffer.decode(errors="replace"))
    out.close()


async def test_a_procfile_has_no_pty_option(tmp_path: Path) -> None:
    # A Procfile line is `name: command`, as honcho and foreman read it:
    # there is no place for options, and its procs run on pipes.
    write_text(tmp_path, "Procfile", "web: python3 -c 'import sys; print(sys.stdout.isatty())'\n")
    rc, out, err = await run(tmp_path, "start", "--no-timestamp", "--no-color", tool=INSTALLED)
    assert rc == 0, err
    assert "web  | False" in out.splitlines(), out
