"""The ``trio-overseer`` tool, driven for real in a subprocess (``python -m trio_overseer``).

Every test runs the tool with ``cwd=tmp_path`` and waits for specific output
lines or control-socket answers, never on a sleep.  Independent runs go
concurrently to keep the suite fast.  The conftest guard fails any test
after which a process of it (tagged through the environment) survived.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shlex
import signal
import socket
import stat
import sys
import tempfile
from pathlib import Path

import pytest
import trio
from cli_children import (
    IGNORE_SIGTERM,
    PRINT_SIGNALS,
    PY,
    SLEEP_FOREVER,
    T,
    ask,
    client,
    exit_with,
    pid_alive,
    pids_in,
    py,
    request,
    run,
    run_tool,
    write_text,
    write_yaml,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the tests watch processes through /proc"
)

HEAD = r"\d\d:\d\d:\d\d "  # the time prefix of every human line
SOCK = ".trio-overseer.sock"


def line_re(id: str, width: int, text: str, *, mark: str = " ") -> str:
    """The regex of a human output line of `id` (ids padded to `width`)."""
    return rf"^{HEAD}{re.escape(id.ljust(width))} {re.escape(mark)}\| {text}$"


def has_line(out: str, id: str, width: int, text: str, *, mark: str = " ") -> bool:
    return re.search(line_re(id, width, text, mark=mark), out, re.MULTILINE) is not None


# --- config formats ----------------------------------------------------------------


async def test_yaml_prefixes_markers_and_state_lines(tmp_path: Path) -> None:
    write_yaml(
        tmp_path,
        {
            "app": {"cmd": exit_with(0, out="hello", err="oops")},
            "longer-id": {"cmd": exit_with(0, out="done")},
        },
    )
    code, out, err = await run(tmp_path, "start")
    assert code == 0, err
    width = len("longer-id")
    assert has_line(out, "app", width, "hello")
    assert has_line(out, "app", width, "oops", mark="!")
    assert has_line(out, "longer-id", width, "done")
    assert has_line(out, "app", width, r"running \(pid \d+\)")
    assert has_line(out, "app", width, "exited 0")
    assert has_line(out, "longer-id", width, "exited 0")
    assert "\x1b" not in out  # piped: no colour
    # The last line of a run comes before its final state.
    lines = out.splitlines()
    assert lines.index(next(x for x in lines if x.endswith("| done"))) < lines.index(
        next(x for x in lines if re.search(r"longer-id +\| exited 0", x))
    )
    assert not (tmp_path / SOCK).exists()  # removed on exit


async def test_toml_config_with_env_and_cwd(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    code = "import os; print(os.environ['GREETING'], os.path.basename(os.getcwd()))"
    write_text(
        tmp_path,
        "overseer.toml",
        f"""
        [procs.greeter]
        cmd = {json.dumps(py(code))}
        cwd = "sub"
        env = {{ GREETING = "hi from toml" }}
        """,
    )
    rc, out, err = await run(tmp_path, "start", "-c", "overseer.toml")
    assert rc == 0, err
    assert has_line(out, "greeter", 7, "hi from toml sub")


async def test_procfile_with_dotenv(tmp_path: Path) -> None:
    code = "import os; print(os.environ['GREETING'])"
    write_text(tmp_path, "Procfile", f"greet: {shlex.join([PY, '-c', code])}\n")
    write_text(tmp_path, ".env", 'GREETING="hello from dotenv"\n')
    rc, out, err = await run(tmp_path, "start")  # found by default
    assert rc == 0, err
    assert has_line(out, "greet", 5, "hello from dotenv")


async def test_default_config_file_order(tmp_path: Path) -> None:
    write_yaml(tmp_path, {"from_overseer_yml": {"cmd": "true"}})
    write_yaml(tmp_path, {"from_config_yml": {"cmd": "true"}}, name="config.yml")
    write_text(tmp_path, "Procfile", "from_procfile: true\n")
    found = []
    for name in ("overseer.yml", "Procfile", "config.yml"):
        rc, out, err = await client(tmp_path, "check")
        assert rc == 0, err
        found.append(out.split()[0])
        (tmp_path / name).unlink()
    assert found == ["overseer.yml:", "Procfile:", "config.yml:"]
    rc, out, err = await client(tmp_path, "check")
    assert rc == 2
    assert "no config file found" in err


async def test_check_shows_each_parsed_command(tmp_path: Path) -> None:
    write_yaml(
        tmp_path,
        {"web": {"cmd": "python3 -m http.server 8000", "retry": 2}, "db": {"cmd": ["pg", "x y"]}},
    )
    rc, out, err = await client(tmp_path, "check", "-c", "overseer.yml")
    assert rc == 0, err
    assert out.splitlines() == [
        "overseer.yml: 2 procs, valid",
        "  web  python3 -m http.server 8000  [retry=2]",
        "  db   pg 'x y'",
    ]


CONFIG_ERRORS = [
    pytest.param(
        "overseer.yml",
        "web: [unclosed\n",
        ["overseer.yml", "line", "invalid YAML"],
        id="yaml-syntax",
    ),
    pytest.param(
        "overseer.yml",
        "web:\n  cmd: x\n  retyr: 3\n",
        ["overseer.yml", "proc 'web'", "field 'retyr'", "did you mean 'retry'"],
        id="unknown-field",
    ),
    pytest.param(
        "overseer.yml",
        "web:\n  cmd: x\n  retry: -1\n",
        ["proc 'web'", "field 'retry'"],
        id="bad-value",
    ),
    pytest.param(
        "overseer.yml", "web:\n  group: g\n", ["proc 'web'", "field 'cmd'", "missing"], id="no-cmd"
    ),
    pytest.param(
        "overseer.yml",
        "web:\n  cmd: x\n  stop_signal: SIGFOO\n",
        ["proc 'web'", "field 'stop_signal'"],
        id="bad-signal",
    ),
    pytest.param(
        "overseer.toml",
        "[procs.web]\ncmd = 1\n",
        ["overseer.toml", "proc 'web'", "field 'cmd'"],
        id="toml",
    ),
    pytest.param("Procfile", "web python\n", ["Procfile", "line 1"], id="procfile"),
]


@pytest.mark.parametrize(("name", "text", "expected"), CONFIG_ERRORS)
async def test_config_error_refuses_to_start(
    tmp_path: Path, name: str, text: str, expected: list[str]
) -> None:
    write_text(tmp_path, name, text)
    rc, out, err = await run(tmp_path, "start", "-c", name)
    assert (rc, out) == (2, ""), err
    for part in expected:
        assert part in err, (part, err)
    assert "nothing was started" in err


async def test_check_gives_the_same_diagnosis(tmp_path: Path) -> None:
    write_text(tmp_path, "overseer.yml", "web:\n  cmd: x\n  retyr: 3\ndb:\n  cmd: [1]\n")
    results: dict[str, tuple[int, str, str]] = {}

    async def go(command: str) -> None:
        results[command] = await run(tmp_path, command)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(go, "start")
        nursery.start_soon(go, "check")
    (start_rc, _, start_err), (check_rc, check_out, check_err) = results["start"], results["check"]
    assert (start_rc, check_rc, check_out) == (2, 2, "")
    problems = check_err.splitlines()
    assert len(problems) == 2
    assert "proc 'web': field 'retyr'" in problems[0]
    assert "proc 'db': field 'cmd'" in problems[1]
    assert start_err.splitlines()[:2] == problems


async def test_missing_config_file(tmp_path: Path) -> None:
    rc, out, err = await run(tmp_path, "start")
    assert (rc, out) == (2, "")
    assert "no config file found" in err
    rc, out, err = await run(tmp_path, "start", "-c", "nope.yml")
    assert (rc, out) == (2, "")
    assert "nope.yml" in err
    assert "cannot read" in err


# --- exit status, --only, --json -----------------------------------------------------


async def test_failures_exit_1_with_restart_and_fatal_lines(tmp_path: Path) -> None:
    write_yaml(
        tmp_path,
        {
            "ok": {"cmd": exit_with(0)},
            "bad": {"cmd": exit_with(3, err="boom"), "retry": 1},
            "missing": {"cmd": [str(tmp_path / "no-such-program")]},
        },
    )
    rc, out, err = await run(tmp_path, "start")
    assert rc == 1, err
    assert has_line(out, "bad", 7, r"exited 3, restart 1/1 in \d+\.\d+ s")
    assert has_line(out, "bad", 7, "exited 3, gave up after 1 restart")  # the budget is spent
    assert has_line(out, "bad", 7, "boom", mark="!")
    assert has_line(out, "missing", 7, "fatal: cannot start .*no-such-program.*")
    assert "cannot start" not in err  # said once, in the output: the library's log is hidden
    assert len(pids_in(out.splitlines())) == 3  # ok, bad, bad again


async def test_only_runs_a_subset(tmp_path: Path) -> None:
    write_yaml(
        tmp_path,
        {name: {"cmd": exit_with(0, out=f"I am {name}")} for name in ("a", "b", "c")},
    )
    rc, out, err = await run(tmp_path, "start", "--only", "c,a")
    assert rc == 0, err
    assert has_line(out, "a", 1, "I am a")
    assert has_line(out, "c", 1, "I am c")
    assert "I am b" not in out
    rc, out, err = await run(tmp_path, "start", "--only", "a,zz")
    assert (rc, out) == (2, "")
    assert "no proc 'zz' in overseer.yml" in err
    assert "known: a, b, c" in err


async def test_json_lines(tmp_path: Path) -> None:
    write_yaml(
        tmp_path,
        {
            "a": {"cmd": exit_with(0, out='hello "world" é', err="oops")},
            "b": {"cmd": exit_with(1), "retry": 1},
        },
    )
    rc, out, err = await run(tmp_path, "start", "--json")
    assert rc == 1, err
    records = [json.loads(line) for line in out.splitlines()]
    assert {r["kind"] for r in records} == {"state", "log"}
    logs = [r for r in records if r["kind"] == "log"]
    assert [(r["id"], r["stream"], r["text"]) for r in logs if r["id"] == "a"] in (
        [("a", "stdout", 'hello "world" é'), ("a", "stderr", "oops")],
        [("a", "stderr", "oops"), ("a", "stdout", 'hello "world" é')],
    )
    assert all(isinstance(r["ts"], float) for r in logs)
    states = [r for r in records if r["kind"] == "state"]
    keys = {"id", "group", "cmd", "dir", "PID", "state", "exitCode", "error", "startTime"}
    keys |= {"delayStart", "retryTimes", "restarts", "restartIn", "ts"}
    assert all(keys <= set(r) for r in states)
    a_states = [r["state"] for r in states if r["id"] == "a"]
    assert a_states == ["starting", "running", "finished"]
    b_final = [r for r in states if r["id"] == "b" and r["state"] == "finished"]
    assert [(r["exitCode"], r["restarts"], r["restartIn"] is not None) for r in b_final] == [
        (1, 0, True),
        (1, 1, False),
    ]


async def test_many_lines_arrive_whole_and_in_order(tmp_path: Path) -> None:
    n = 50_000
    code = f"import sys; sys.stdout.write(''.join('line %d\\n' % i for i in range({n})))"
    write_yaml(tmp_path, {"chatty": {"cmd": py(code)}})
    rc, out, err = await run(tmp_path, "start", "--json")
    assert rc == 0, err
    texts = [r["text"] for r in map(json.loads, out.splitlines()) if r["kind"] == "log"]
    assert texts == [f"line {i}" for i in range(n)]


# --- colour -------------------------------------------------------------------------


async def run_on_pty(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run the tool with its stdout on a pseudo-terminal; what it wrote there."""
    master, slave = pty.openpty()
    try:
        async with run_tool(tmp_path, *args, env=env, stdout=slave) as tool:
            os.close(slave)
            slave = -1
            chunks = []
            stream = trio.lowlevel.FdStream(os.dup(master))
            async with stream:
                with trio.fail_after(T):
                    while True:
                        try:
                            data = await stream.receive_some()
                        except trio.BrokenResourceError:  # EIO: the other side is closed
                            break
                        if not data:
                            break
                        chunks.append(data)
            assert await tool.wait() == 0, tool.err.text
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    return b"".join(chunks).decode()


async def test_colour_on_a_terminal_unless_disabled(tmp_path: Path) -> None:
    write_yaml(tmp_path, {"a": {"cmd": exit_with(0, out="hi")}, "b": {"cmd": exit_with(0)}})
    outputs: dict[str, str] = {}

    async def go(name: str, args: list[str], env: dict[str, str]) -> None:
        outputs[name] = await run_on_pty(tmp_path, "start", "--no-socket", *args, env=env)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(go, "tty", [], {})
        nursery.start_soon(go, "NO_COLOR", [], {"NO_COLOR": "1"})
        nursery.start_soon(go, "--no-color", ["--no-color"], {})
    assert "\x1b[36ma  " in outputs["tty"]  # the first proc's colour: cyan
    assert "\x1b[33mb  " in outputs["tty"]  # the second's: yellow
    assert "hi" in outputs["tty"]
    for name in ("NO_COLOR", "--no-color"):
        assert "\x1b" not in outputs[name], name
        assert re.search(r"a +\| hi", outputs[name]), outputs[name]


# --- signals --------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_signal_stops_gracefully_then_kills(tmp_path: Path, sig: signal.Signals) -> None:
    write_yaml(
        tmp_path,
        {
            "stubborn": {"cmd": IGNORE_SIGTERM, "stop_timeout": 0.5},
            "plain": {"cmd": SLEEP_FOREVER},
        },
    )
    async with run_tool(tmp_path, "start") as tool:
        await tool.out.wait_for(r"stubborn +\| ready")
        await tool.out.wait_for(r"plain +\| ready")
        pids = pids_in(tool.out.lines)
        tool.send_signal(sig)
        rc = await tool.wait()
    assert rc == 130
    assert len(pids) == 2
    assert not any(map(pid_alive, pids))
    assert has_line(tool.out.text, "stubborn", 8, r"stopped \(signal: SIGKILL\)")
    assert has_line(tool.out.text, "plain", 8, r"stopped \(signal: SIGTERM\)")
    assert f"{sig.name} received: stopping every proc" in tool.err.text
    assert not (tmp_path / SOCK).exists()


async def test_second_ctrl_c_kills_at_once(tmp_path: Path) -> None:
    write_yaml(tmp_path, {"stubborn": {"cmd": IGNORE_SIGTERM, "stop_timeout": 60}})
    async with run_tool(tmp_path, "start") as tool:
        await tool.out.wait_for(r"stubborn +\| ready")
        tool.send_signal(signal.SIGINT)
        await tool.out.wait_for(r"stubborn +\| stopping")
        tool.send_signal(signal.SIGINT)
        rc = await tool.wait(guard=10)  # far less than the 60 s stop_timeout
    assert rc == 130
    assert not any(map(pid_alive, pids_in(tool.out.lines)))
    assert "received again: killing every proc" in tool.err.text


# --- the control socket ------------------------------------------------------------------


async def test_control_commands(tmp_path: Path) -> None:
    write_yaml(
        tmp_path,
        {
            "web": {"cmd": SLEEP_FOREVER, "stop_timeout": 5},
            "worker": {"cmd": PRINT_SIGNALS},
            "once": {"cmd": exit_with(0, out="once done")},
        },
    )
    sock = tmp_path / SOCK
    async with run_tool(tmp_path, "start") as tool:
        await tool.out.wait_for(r"web +\| ready")
        await tool.out.wait_for(r"worker +\| ready")
        await tool.out.wait_for(r"once +\| exited 0")
        [web_pid] = pids_in([line for line in tool.out.lines if " web " in line])

        info = os.stat(sock)
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o600

        rc, out, err = await client(tmp_path, "status")
        assert rc == 0, err
        table = out.splitlines()
        assert table[0].split() == ["ID", "GROUP", "STATE", "PID", "UPTIME", "RESTARTS", "EXIT"]
        assert table[1].split()[:4] == ["web", "-", "running", str(web_pid)]
        assert table[3].split() == ["once", "-", "finished", "-", "-", "0", "0"]

        rc, out, err = await client(tmp_path, "status", "--json")
        assert rc == 0, err
        rows = [json.loads(line) for line in out.splitlines()]
        assert [(r["id"], r["state"]) for r in rows] == [
            ("web", "running"),
            ("worker", "running"),
            ("once", "finished"),
        ]
        assert rows[0]["PID"] == web_pid
        assert rows[0]["uptime"] >= 0

        rc, out, err = await client(tmp_path, "signal", "worker", "USR1")
        assert (rc, err) == (0, "")
        assert out.startswith("worker: sent SIGUSR1")
        await tool.out.wait_for(r"worker +\| got SIGUSR1")
        rc, out, err = await client(tmp_path, "signal", "worker", "NOPE")
        assert rc == 2
        assert "unknown signal" in err
        rc, out, err = await client(tmp_path, "signal", "once", "TERM")
        assert rc == 1
        assert "not running" in err

        rc, out, err = await client(tmp_path, "logs", "web")
        assert rc == 0, err
        assert re.fullmatch(rf"{HEAD}web +\| ready\n", out), out
        rc, out, err = await client(tmp_path, "logs", "-n", "1", "worker")
        assert re.fullmatch(rf"{HEAD}worker +\| got SIGUSR1\n", out), out
        rc, out, err = await client(tmp_path, "logs", "--json")
        assert {(r["id"], r["text"]) for r in map(json.loads, out.splitlines())} == {
            ("web", "ready"),
            ("worker", "ready"),
            ("worker", "got SIGUSR1"),
            ("once", "once done"),
        }

        async with run_tool(tmp_path, "logs", "-f", "worker") as follower:
            await follower.out.wait_for(r"worker +\| got SIGUSR1")
            await client(tmp_path, "signal", "worker", "SIGUSR2")
            await follower.out.wait_for(r"worker +\| got SIGUSR2")

            rc, out, err = await client(tmp_path, "restart", "web")
            assert rc == 0, err
            new_pid = int(re.fullmatch(r"web: running \(pid (\d+)\)\n", out)[1])  # type: ignore[index]
            assert new_pid != web_pid
            assert not pid_alive(web_pid)
            await tool.out.wait_for(r"web +\| stopped \(signal: SIGTERM\)")
            await tool.out.wait_for(rf"web +\| running \(pid {new_pid}\)")

            rc, out, err = await client(tmp_path, "restart", "once")  # it had finished
            assert rc == 0, err
            await tool.out.wait_for(lambda line: tool.out.text.count("| once done") == 2)

            rc, out, err = await client(tmp_path, "stop", "web")
            assert (rc, out) == (0, "web: stopped (signal: SIGTERM)\n"), err
            assert not pid_alive(new_pid)
            rc, out, err = await client(tmp_path, "stop", "nosuch")
            assert rc == 1
            assert "no proc 'nosuch'" in err

            rc, out, err = await client(tmp_path, "stop", "--all")
            assert rc == 0, err
            assert "worker: stopped (signal: SIGTERM)" in out.splitlines()
            # Stopped on request or exited 0: success.
            assert await tool.wait() == 0
            assert await follower.wait() == 0  # `logs -f` ends with the instance
        assert not sock.exists()
    rc, out, err = await client(tmp_path, "status")
    assert rc == 1
    assert "no trio-overseer is running here" in err


async def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(os.fspath(tmp_path / SOCK))
    stale.close()  # the file stays, nobody listens: as after a crash
    write_yaml(tmp_path, {"web": {"cmd": SLEEP_FOREVER}})
    async with run_tool(tmp_path, "start") as tool:
        await tool.out.wait_for(r"web +\| ready")
        reply = await request(tmp_path / SOCK, {"cmd": "status"})
        assert reply["procs"][0]["state"] == "running"
        assert "stale control socket" in tool.err.text
        reply = await request(tmp_path / SOCK, {"cmd": "stop", "all": True})
        assert reply["ok"]
        assert await tool.wait() == 0


async def test_live_socket_is_not_stolen(tmp_path: Path) -> None:
    write_yaml(tmp_path, {"web": {"cmd": SLEEP_FOREVER}})
    (tmp_path / "plain-file").write_text("")
    sock = tmp_path / SOCK
    async with run_tool(tmp_path, "start") as first:
        await first.out.wait_for(r"web +\| ready")
        inode = os.stat(sock).st_ino
        rc, out, err = await run(tmp_path, "start")
        assert (rc, out) == (2, "")
        assert "another trio-overseer is running" in err
        rc, out, err = await run(tmp_path, "start", "--socket", "plain-file")
        assert (rc, out) == (2, "")
        assert "is not a socket" in err
        assert os.stat(sock).st_ino == inode
        reply = await request(sock, {"cmd": "status"})
        assert reply["procs"][0]["state"] == "running"
        assert pids_in(first.out.lines) == [reply["procs"][0]["PID"]]


async def test_bad_requests_get_errors_and_disturb_nothing(tmp_path: Path) -> None:
    chatty = py(
        """
        import time
        print("ready", flush=True)
        while True:
            print("x" * 100 + "\\n" * 200, end="", flush=True)
            time.sleep(0.002)
        """
    )
    write_yaml(tmp_path, {"web": {"cmd": SLEEP_FOREVER}, "chatty": {"cmd": chatty}})
    sock = tmp_path / SOCK
    async with run_tool(tmp_path, "start", "--no-color") as tool:
        await tool.out.wait_for(r"web +\| ready")
        [before] = (await request(sock, {"cmd": "status"}))["procs"][:1]

        async def error_of(raw: bytes) -> str:
            answers = await ask(sock, raw)
            assert len(answers) == 1, answers
            assert answers[0]["ok"] is False, answers
            return str(answers[0]["error"])

        assert "not a line of JSON" in await error_of(b"not json\n")
        assert "not a line of JSON" in await error_of(b"\xff\xfe\x00\n")
        assert "expected a JSON object" in await error_of(b"[1, 2]\n")
        assert "unknown command 'nope'" in await error_of(b'{"cmd": "nope"}\n')
        assert "needs a proc id" in await error_of(b'{"cmd": "stop"}\n')
        assert "signal name or number" in await error_of(
            b'{"cmd": "signal", "id": "web", "signal": 1.5}\n'
        )
        assert "no proc 'zz'" in await error_of(b'{"cmd": "restart", "id": "zz"}\n')
        assert "too long" in await error_of(b"x" * (70 * 1024))  # and no newline
        assert "too long" in await error_of(b"{" + b" " * (70 * 1024) + b"}\n")
        # After an error the connection serves the next request.
        answers = await ask(sock, b'garbage\n{"cmd": "status"}\n', replies=2)
        assert [a["ok"] for a in answers] == [False, True]

        # A client that never reads a `logs -f` of a chatty proc, and one
        # that never sends anything, hold up nobody.
        with (
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stuck,
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent,
        ):
            stuck.connect(os.fspath(sock))
            silent.connect(os.fspath(sock))
            stuck.sendall(b'{"cmd": "logs", "id": "chatty", "follow": true}\n')
            seen = len(tool.out.lines)
            for _ in range(3):
                reply = await request(sock, {"cmd": "status"})
                assert reply["procs"][0]["PID"] == before["PID"]
            await tool.out.wait_for(lambda _: len(tool.out.lines) > seen + 5000)

        after = (await request(sock, {"cmd": "status"}))["procs"][0]
        assert (after["state"], after["PID"]) == ("running", before["PID"])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another user")
async def test_other_users_are_refused(tmp_path: Path) -> None:
    write_yaml(tmp_path, {"web": {"cmd": SLEEP_FOREVER}})
    public = Path(tempfile.mkdtemp(prefix="trio-overseer-test-"))
    try:
        public.chmod(0o755)
        sock = public / "control.sock"
        async with run_tool(tmp_path, "start", "--socket", os.fspath(sock)) as tool:
            await tool.out.wait_for(r"web +\| ready")
            sock.chmod(0o666)  # past the file mode: the peer check must refuse
            code = f"""
                import os, socket
                os.setgid(65534); os.setuid(65534)
                s = socket.socket(socket.AF_UNIX)
                s.connect({os.fspath(sock)!r})
                # Refused at once, before any request is read.
                print(s.makefile().readline(), end="")
            """
            result = await trio.run_process(py(code), capture_stdout=True, check=True)
            reply = json.loads(result.stdout)
            assert reply["ok"] is False
            assert "permission denied" in reply["error"]
            assert (await request(sock, {"cmd": "status"}))["procs"][0]["state"] == "running"
    finally:
        for path in public.iterdir():
            path.unlink()
        public.rmdir()


async def test_python_dash_m_and_console_script_agree(tmp_path: Path) -> None:
    script = Path(PY).with_name("trio-overseer")
    if not script.exists():
        pytest.skip("console script not installed")
    write_yaml(tmp_path, {"a": {"cmd": exit_with(0)}})
    with trio.fail_after(T):
        result = await trio.run_process(
            [script, "check"], cwd=tmp_path, capture_stdout=True, check=False
        )
    assert result.returncode == 0
    assert result.stdout.decode().startswith("overseer.yml: 1 proc, valid")
    rc, _, err = await client(tmp_path)
    assert rc == 2
    assert "usage" in err
