"""Procfiles and ``.env`` files run as honcho and foreman run them.

Each test writes a Procfile, a ``.env`` and a small child script (`SEEN`,
which prints as JSON what it saw: argv, PORT, cwd, pid, environment) to a
temporary directory and drives the installed ``trio-overseer`` there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from cli_children import INSTALLED, PY, T, client, pid_alive, run, run_tool, write_text

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the tests watch processes through /proc"
)

#: Prints one line "SEEN {json}" and, with --wait, waits for SIGTERM (then exits
#: by it: default handling) after printing "ready".  With SEEN_BARRIER=DIR:N in
#: its environment, it then waits (up to 10 s) until N children have printed,
#: so that a tool that stops every proc when one ends (honcho) sees them all.
SEEN = """
import json, os, sys, time
args = sys.argv[1:]
print("SEEN " + json.dumps({
    "argv": args, "port": os.environ.get("PORT"), "cwd": os.getcwd(), "pid": os.getpid(),
    "env": dict(os.environ),
}), flush=True)
if "--wait" in args:
    print("ready", flush=True)
    time.sleep(3600)
barrier = os.environ.get("SEEN_BARRIER")
if barrier:
    where, count = barrier.rsplit(":", 1)
    open(os.path.join(where, str(os.getpid())), "w").close()
    deadline = time.monotonic() + 10
    while len(os.listdir(where)) < int(count) and time.monotonic() < deadline:
        time.sleep(0.01)
"""


def project(tmp_path: Path, procfile: str, dotenv: str | None = None) -> Path:
    """Write seen.py, the Procfile (``$SEEN`` stands for the child) and the .env."""
    (tmp_path / "seen.py").write_text(SEEN)
    seen = f"{shlex.quote(PY)} {shlex.quote(str(tmp_path / 'seen.py'))}"
    write_text(tmp_path, "Procfile", procfile.replace("$SEEN", seen))
    if dotenv is not None:
        write_text(tmp_path, ".env", dotenv)
    return tmp_path


def seen(out: str) -> dict[str, dict[str, Any]]:
    """Proc id -> what its child printed, from the tool's output."""
    found = {}
    for line in out.splitlines():
        match = re.match(r"^(?:\d\d:\d\d:\d\d )?(\S+) +\| SEEN (.*)$", line)
        if match:
            found[match[1]] = json.loads(match[2])
    return found


async def start(cwd: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    return await run(cwd, "start", "--no-socket", *args, env=env, tool=INSTALLED)


async def test_procfile_lines_run_through_the_shell(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    project(
        tmp_path,
        """
        web: $SEEN --port=$PORT --bind=0.0.0.0:${PORT:-9999}
        worker: cd src && REMAP_SIGTERM=SIGQUIT $SEEN "quoted arg" $GREETING
        quiet: $SEEN >/dev/null 2>&1; echo "quiet done, default ${UNSET:-5000}"
        """,
        """
        GREETING=hello
        """,
    )
    rc, out, err = await start(tmp_path)
    assert rc == 0, err
    procs = seen(out)
    assert procs["web"]["argv"] == ["--port=5000", "--bind=0.0.0.0:5000"]
    assert procs["web"]["cwd"] == str(tmp_path)
    assert procs["worker"]["argv"] == ["quoted arg", "hello"]
    assert procs["worker"]["cwd"] == str(tmp_path / "src")
    assert procs["worker"]["env"]["REMAP_SIGTERM"] == "SIGQUIT"
    assert procs["worker"]["port"] == "5100"
    assert "quiet" not in procs
    assert re.search(r"quiet +\| quiet done, default 5000$", out, re.MULTILINE)
    assert err == ""


async def test_exec_keeps_the_shell_out_of_the_way(tmp_path: Path) -> None:
    project(tmp_path, "web: $SEEN --wait\npiped: $SEEN --wait | cat\n")
    async with run_tool(tmp_path, "start", tool=INSTALLED) as tool:
        await tool.out.wait_for(r"web +\| ready")
        await tool.out.wait_for(r"piped +\| ready")
        web_pid = int(re.search(r"web +\| running \(pid (\d+)\)", tool.out.text)[1])  # type: ignore[index]
        piped_pid = int(re.search(r"piped +\| running \(pid (\d+)\)", tool.out.text)[1])  # type: ignore[index]
        procs = seen(tool.out.text)
        # `exec` made the program the proc itself; a pipeline keeps its shell.
        assert procs["web"]["pid"] == web_pid
        assert procs["piped"]["pid"] != piped_pid
        child = procs["piped"]["pid"]
        rc, out, err = await client(tmp_path, "stop", "web", tool=INSTALLED)
        assert rc == 0, err
        assert out == "web: stopped (signal: SIGTERM)\n"  # its own end, not the shell's 143
        rc, out, err = await client(tmp_path, "stop", "piped", tool=INSTALLED)
        assert rc == 0, err
        # The whole group got the signal: the program behind the shell too.
        assert not pid_alive(child)
        assert await tool.wait() == 0


async def test_dotenv_as_the_ecosystem_writes_it(tmp_path: Path) -> None:
    project(
        tmp_path,
        "web: $SEEN\n",
        r"""
        # comment
        export 'QUOTED'=one
        'KEY'="two words"
        SINGLE='it\'s'
        MULTI="line 1
        line 2"
        BARE
        a: b
        uglyKey[%$=1
        -foo=x
        héllo=1
        URL=${HOST}/db
        LAST=ok # comment
        """,
    )
    rc, out, err = await start(tmp_path)
    assert rc == 0, err
    env = seen(out)["web"]["env"]
    assert {k: env.get(k) for k in ("QUOTED", "KEY", "SINGLE", "MULTI", "URL", "LAST")} == {
        "QUOTED": "one",
        "KEY": "two words",
        "SINGLE": "it's",
        "MULTI": "line 1\nline 2",
        "URL": "${HOST}/db",
        "LAST": "ok",
    }
    assert "BARE" not in env
    warnings = err.splitlines()
    assert [re.sub(r": (cannot read|invalid).*", "", w) for w in warnings] == [
        f"trio-overseer: warning: .env: line {n}" for n in (8, 9, 10, 11)
    ]
    rc, out, err = await client(tmp_path, "check", tool=INSTALLED)
    assert rc == 0, err
    assert "4 warnings:" in out
    for n in (8, 9, 10, 11):
        assert f"  .env: line {n}: " in out
    assert "URL: ${HOST} is kept as written, as honcho and foreman do" in out
    assert "each command is a shell line run by /bin/sh -c" in out


async def test_invalid_procfile_lines_are_skipped(tmp_path: Path) -> None:
    project(tmp_path, "+foo: x\nweb: $SEEN\nnot a line\n")
    rc, out, err = await start(tmp_path)
    assert rc == 0, err
    assert list(seen(out)) == ["web"]
    assert err.splitlines() == [
        "trio-overseer: warning: Procfile: line 1: invalid process name '+foo' (letters, "
        "digits, '_' and '-'), got '+foo: x'; skipped",
        "trio-overseer: warning: Procfile: line 3: expected 'name: command', "
        "got 'not a line'; skipped",
    ]
    write_text(tmp_path, "Procfile", "+foo: x\n")
    rc, out, err = await start(tmp_path)
    assert (rc, out) == (2, "")
    assert "Procfile: no procs defined" in err
    assert "warning: Procfile: line 1" in err


async def test_port_per_type_and_instance(tmp_path: Path) -> None:
    project(tmp_path, "web: $SEEN\nworker: $SEEN\nclock: $SEEN\n")
    results: dict[str, dict[str, dict[str, Any]]] = {}

    async def go(name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        rc, out, err = await start(tmp_path, *args, env=env)
        assert rc == 0, (name, err)
        results[name] = seen(out)

    write_text(tmp_path, ".env.port", "PORT=7000\n")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(go, "default", [])
        nursery.start_soon(go, "-p", ["-p", "6000"])
        nursery.start_soon(go, "environ", [], {"PORT": "8000"})
        nursery.start_soon(go, "dotenv", ["-e", ".env.port"], {"PORT": "8000"})
        nursery.start_soon(go, "scaled", ["-m", "web=2,clock=0", "worker"])
        nursery.start_soon(go, "-c", ["-c", "all=2"])

    def ports(name: str) -> dict[str, str]:
        return {id: info["port"] for id, info in results[name].items()}

    assert ports("default") == {"web": "5000", "worker": "5100", "clock": "5200"}
    assert ports("-p") == {"web": "6000", "worker": "6100", "clock": "6200"}
    assert ports("environ") == {"web": "8000", "worker": "8100", "clock": "8200"}
    assert ports("dotenv") == {"web": "7000", "worker": "7100", "clock": "7200"}
    # Selected by name: the PORT of each type does not depend on the selection.
    assert ports("scaled") == {"worker": "5100"}
    assert ports("-c") == {
        "web.1": "5000",
        "web.2": "5001",
        "worker.1": "5100",
        "worker.2": "5101",
        "clock.1": "5200",
        "clock.2": "5201",
    }


async def test_discovery_skips_an_applications_config_yml(tmp_path: Path) -> None:
    project(tmp_path, "web: $SEEN\n")
    write_text(tmp_path, "config.yml", "database:\n  host: db.example.com\n  port: 5432\n")
    rc, out, err = await start(tmp_path)
    assert rc == 0, err
    assert list(seen(out)) == ["web"]
    rc, out, err = await client(tmp_path, "check", tool=INSTALLED)
    assert rc == 0, err
    assert out.startswith("Procfile: 1 proc, valid\n")
    (tmp_path / "Procfile").unlink()
    rc, out, err = await client(tmp_path, "check", tool=INSTALLED)
    assert rc == 2
    assert "config.yml is not a procs file" in err


async def test_env_files_option(tmp_path: Path) -> None:
    project(tmp_path, "web: $SEEN\n", "A=from-env\nB=from-env\n")
    write_text(tmp_path, ".env.local", "B=from-local\n")
    rc, out, err = await start(tmp_path, "-e", ".env,.env.local")
    assert rc == 0, err
    env = seen(out)["web"]["env"]
    assert (env["A"], env["B"]) == ("from-env", "from-local")
    rc, out, err = await start(tmp_path, "-e", ".env,.env.missing")
    assert (rc, out) == (2, "")
    assert ".env.missing: cannot read env file: No such file or directory" in err


async def test_root_directory(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    project(app, "web: $SEEN\n", "A=1\n")
    rc, out, err = await start(tmp_path, "-d", "app")
    assert rc == 0, err
    web = seen(out)["web"]
    assert (web["cwd"], web["env"]["A"]) == (str(app), "1")
    rc, out, err = await start(tmp_path, "-d", "nowhere")
    assert (rc, out) == (2, "")
    assert "-d nowhere: No such file or directory" in err


async def test_yaml_shell_and_continuations(tmp_path: Path) -> None:
    (tmp_path / "seen.py").write_text(SEEN)
    write_text(
        tmp_path,
        "overseer.yml",
        f"""
        split:
          cmd: |
            {PY} seen.py one \\
              two
        shell:
          cmd: cd / && {PY} {tmp_path / "seen.py"} "$HOME" $PORT
          shell: true
        """,
    )
    rc, out, err = await start(tmp_path, env={"HOME": "/home/x y"})
    assert rc == 0, err
    procs = seen(out)
    assert procs["split"]["argv"] == ["one", "two"]
    assert procs["shell"]["argv"] == ["/home/x y", "5100"]
    assert procs["shell"]["cwd"] == "/"


@pytest.mark.skipif(importlib.util.find_spec("honcho") is None, reason="honcho not installed")
async def test_same_as_honcho(tmp_path: Path) -> None:
    """honcho runs the same Procfile and .env: the children see the same."""
    (tmp_path / "src").mkdir()
    project(
        tmp_path,
        """
        web: $SEEN --port=$PORT ${PORT:-1}
        worker: cd src && MODE=x $SEEN "a b" $GREETING
        """,
        """
        GREETING=hello
        QUOTED="a b"
        """,
    )
    (tmp_path / "barrier").mkdir()
    rc, out, err = await start(tmp_path)
    assert rc == 0, err
    ours = seen(out)
    with trio.fail_after(T):
        result = await trio.run_process(
            [PY, "-m", "honcho", "start"],
            cwd=tmp_path,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={
                **{k: v for k, v in os.environ.items() if k != "PORT"},
                "SEEN_BARRIER": f"{tmp_path / 'barrier'}:2",
            },
        )
    theirs = seen(result.stdout.decode())
    assert set(theirs) == {"web.1", "worker.1"}, result.stdout
    for id in ("web", "worker"):
        mine, honcho = ours[id], theirs[f"{id}.1"]
        assert (mine["argv"], mine["port"], mine["cwd"]) == (
            honcho["argv"],
            honcho["port"],
            honcho["cwd"],
        )
        for name in ("GREETING", "QUOTED", "MODE"):
            assert mine["env"].get(name) == honcho["env"].get(name), name
    # What honcho adds and we do not: its process name.
    assert theirs["web.1"]["env"]["HONCHO_PROCESS_NAME"] == "web.1"
