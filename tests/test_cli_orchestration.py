"""The orchestration options of issue 13 in config files: YAML and TOML keys,
what ``check`` refuses, what ``start`` prints, and what ``export`` makes of
them."""

from __future__ import annotations

import json
import math
import re
import signal
import sys
import textwrap
from pathlib import Path

import pytest
from cli_children import (
    INSTALLED,
    PRINT_SIGNALS,
    client,
    exit_with,
    py,
    run,
    run_tool,
    write_text,
    write_yaml,
)

from trio_overseer._cli._config import ConfigError, describe, load_config
from trio_overseer._cli._project import Options, load_project
from trio_overseer.testing import free_port

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the CLI tests run on Linux"
)


def write(directory: Path, name: str, text: str) -> Path:
    return write_text(directory, name, textwrap.dedent(text))


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


# --- restart policies ---------------------------------------------------------------------

RESTART_YAML = """
web:
  cmd: x
  restart: always
  retry: forever
  success_codes: [0, 3]
  reset_after: 120
job:
  cmd: y
  restart: never
  success_codes: 2
plain:
  cmd: z
"""

RESTART_TOML = """
[procs.web]
cmd = "x"
restart = "always"
retry = "forever"
success_codes = [0, 3]
reset_after = 120

[procs.job]
cmd = "y"
restart = "never"
success_codes = 2

[procs.plain]
cmd = "z"
"""


@pytest.mark.parametrize(("name", "text"), [("a.yml", RESTART_YAML), ("a.toml", RESTART_TOML)])
def test_restart_keys(tmp_path: Path, name: str, text: str) -> None:
    web, job, plain = load_config(write(tmp_path, name, text))
    assert (web.restart, web.retry, web.success_codes, web.reset_after) == (
        "always",
        math.inf,
        (0, 3),
        120.0,
    )
    assert (job.restart, job.retry, job.success_codes) == ("never", 0, (2,))
    assert (plain.restart, plain.retry, plain.success_codes, plain.reset_after) == (
        "on-failure",
        0,
        (0,),
        None,
    )
    assert describe(web) == (
        "x  [retry=forever; restart=always; success_codes=0,3; reset_after=120s]"
    )


@pytest.mark.parametrize(
    ("settings", "field", "fragment"),
    [
        ("restart: sometimes", "restart", "expected one of on-failure, always, never"),
        ("restart: no", "restart", "got False"),  # YAML 1.1 reads `no` as false
        ("retry: always", "retry", "or 'forever' for no limit, got 'always'"),
        ("retry: -1", "retry", "non-negative integer"),
        ("success_codes: [0, 256]", "success_codes", "exit codes from 0 to 255"),
        ("success_codes: [-1]", "success_codes", "exit codes from 0 to 255"),
        ("success_codes: []", "success_codes", "at least one exit code"),
        ("success_codes: ok", "success_codes", "exit codes from 0 to 255"),
        ("reset_after: -5", "reset_after", "non-negative number of seconds"),
        ("reset_after: soon", "reset_after", "non-negative number of seconds"),
        ("restrat: always", "restrat", "did you mean 'restart'"),
    ],
)
def test_restart_key_errors(tmp_path: Path, settings: str, field: str, fragment: str) -> None:
    path = write(tmp_path, "overseer.yml", f"web:\n  cmd: x\n  {settings}\n")
    (problem,) = problems(path)
    assert problem.startswith(f"{path}: proc 'web': field '{field}': "), problem
    assert fragment in problem


async def test_check_accepts_and_refuses_the_restart_keys(tmp_path: Path) -> None:
    write(tmp_path, "overseer.toml", RESTART_TOML)
    rc, out, err = await client(tmp_path, "check", tool=INSTALLED)
    assert rc == 0, err
    assert "restart=always" in out
    assert "retry=forever" in out
    write(tmp_path, "bad.yml", "web:\n  cmd: x\n  reset_after: -1\n  restart: often\n")
    rc, out, err = await client(tmp_path, "check", "-c", "bad.yml", tool=INSTALLED)
    assert rc == 2
    assert "Traceback" not in err
    assert "bad.yml: proc 'web': field 'reset_after'" in err
    assert "bad.yml: proc 'web': field 'restart'" in err


async def test_start_prints_the_policies_and_give_up(tmp_path: Path) -> None:
    write_yaml(
        tmp_path,
        {
            "tick": {"cmd": exit_with(0, out="tick"), "restart": "always", "retry": 2},
            "odd": {"cmd": exit_with(3), "success_codes": [0, 3], "retry": 2},
            "once": {"cmd": exit_with(1), "restart": "never", "retry": 2},
        },
    )
    rc, out, err = await run(tmp_path, "start", "--no-timestamp", "--no-color")
    assert rc == 1, err  # `once` failed (and `odd`'s 3 is no exit status 0)
    lines = out.splitlines()
    assert lines.count("tick  | tick") == 3
    assert "tick  | exited 0, gave up after 2 restarts" in lines
    assert "odd   | exited 3" in lines
    assert "once  | exited 1" in lines
    assert sum("running" in line for line in lines) == 5


async def test_json_says_gave_up_and_no_limit(tmp_path: Path) -> None:
    write_yaml(
        tmp_path,
        {
            "a": {"cmd": exit_with(1), "retry": 1},
            "b": {"cmd": exit_with(0), "retry": "forever"},
        },
    )
    rc, out, err = await run(tmp_path, "start", "--json")
    assert rc == 1, err
    states = [r for r in map(json.loads, out.splitlines()) if r["kind"] == "state"]
    finals = [(r["id"], r["gaveUp"]) for r in states if r["state"] == "finished"]
    assert sorted(finals) == [("a", False), ("a", True), ("b", False)]
    assert {r["retryTimes"] for r in states if r["id"] == "b"} == {-1}


async def test_export_maps_restart_policies(tmp_path: Path) -> None:
    write(tmp_path, "overseer.yml", RESTART_YAML)
    units = tmp_path / "units"
    rc, _, err = await client(tmp_path, "export", "systemd", str(units), "-a", "x", tool=INSTALLED)
    assert rc == 0, err
    web = (units / "x-web.service").read_text()
    assert "Restart=always\n" in web
    assert "StartLimitIntervalSec=0\n" in web
    assert "SuccessExitStatus=3\n" in web
    assert "StartLimitBurst" not in web
    assert "Restart=no\n" in (units / "x-job.service").read_text()
    assert "Restart=no\n" in (units / "x-plain.service").read_text()
    rc, _, err = await client(
        tmp_path, "export", "supervisord", str(tmp_path / "sv"), "-a", "x", tool=INSTALLED
    )
    assert rc == 0, err
    conf = (tmp_path / "sv" / "x.conf").read_text()
    web_section = conf.split("[program:web]")[1].split("[program:")[0]
    assert "autorestart=true\n" in web_section
    assert "exitcodes=0,3\n" in web_section
    assert f"startretries={2**31 - 1}\n" in web_section
    job_section = conf.split("[program:job]")[1].split("[program:")[0]
    assert "autorestart=false\n" in job_section
    assert "exitcodes=2\n" in job_section


# --- dependencies and readiness -----------------------------------------------------------

DEPS_YAML = """
web:
  cmd: w
  requires: [api]
api:
  cmd: a
  requires: [db, cache]
  restart_with: db
  ready_port: $PORT
  ready_timeout: 5
db:
  cmd: d
  ready_line: "ready to accept"
  ready_path: run/db.sock
cache:
  cmd: c
  ready_url: http://127.0.0.1:6379/
"""

DEPS_TOML = """
[procs.web]
cmd = "w"
requires = ["api"]

[procs.api]
cmd = "a"
requires = ["db", "cache"]
restart_with = "db"
ready_port = "$PORT"
ready_timeout = 5

[procs.db]
cmd = "d"
ready_line = "ready to accept"
ready_path = "run/db.sock"

[procs.cache]
cmd = "c"
ready_url = "http://127.0.0.1:6379/"
"""


@pytest.mark.parametrize(("name", "text"), [("a.yml", DEPS_YAML), ("a.toml", DEPS_TOML)])
def test_requires_and_ready_keys(tmp_path: Path, name: str, text: str) -> None:
    web, api, db, cache = load_config(write(tmp_path, name, text))
    assert (web.requires, web.restart_with) == (("api",), ())
    assert (api.requires, api.restart_with) == (("db", "cache"), ("db",))
    assert (api.ready_port, api.ready_timeout) == ("$PORT", 5.0)
    assert (db.ready_line, db.ready_path) == ("ready to accept", "run/db.sock")
    assert cache.ready_url == "http://127.0.0.1:6379/"
    assert describe(api) == (
        "a  [requires=db,cache; restart_with=db; ready_port='$PORT'; ready_timeout=5s]"
    )


@pytest.mark.parametrize(
    ("text", "field", "fragment"),
    [
        ("a:\n  cmd: x\n  requires: [b]\n", "requires", "no proc 'b' in this file (known: a)"),
        ("a:\n  cmd: x\n  requires: [{b: 1}]\n", "requires", "expected a list of proc ids"),
        ("a:\n  cmd: x\n  requires: a\n", "requires", "a cycle: 'a' -> 'a'"),
        (
            "a:\n  cmd: x\n  requires: [b]\nb:\n  cmd: y\n  requires: [a]\n",
            "requires",
            "the requirements form a cycle: 'a' -> 'b' -> 'a'",
        ),
        (
            "a:\n  cmd: x\n  requires: [b]\n  restart_with: [c]\nb:\n  cmd: y\nc:\n  cmd: z\n",
            "restart_with",
            "names 'c', which 'requires' does not",
        ),
        ("a:\n  cmd: x\n  ready_port: 70000\n", "ready_port", "expected a port number"),
        ("a:\n  cmd: x\n  ready_port: PORT\n", "ready_port", "or '$PORT'"),
        ("a:\n  cmd: x\n  ready_line: '('\n", "ready_line", "not a regular expression"),
        ("a:\n  cmd: x\n  ready_url: localhost:80\n", "ready_url", "expected an http://"),
        ("a:\n  cmd: x\n  ready_timeout: 0\n", "ready_timeout", "seconds > 0"),
    ],
)
def test_requires_and_ready_key_errors(
    tmp_path: Path, text: str, field: str, fragment: str
) -> None:
    path = write(tmp_path, "overseer.yml", text)
    (problem,) = problems(path)
    assert problem.startswith(f"{path}: proc 'a': field '{field}': "), problem
    assert fragment in problem


def test_requires_name_types_and_bring_them_along(tmp_path: Path) -> None:
    write(tmp_path, "overseer.yml", "api:\n  cmd: a\n  requires: [db]\ndb:\n  cmd: d\n  scale: 2\n")
    project = load_project(Options(names=("api",)), tmp_path)
    api, db1, db2 = project.specs  # `start api` runs db too
    assert api.requires == ("db.1", "db.2")
    assert (db1.id, db2.id) == ("db.1", "db.2")
    project = load_project(Options(concurrency={"db": 0}), tmp_path)
    assert [(s.id, s.requires) for s in project.specs] == [("api", ())]  # none to wait for


async def test_check_refuses_a_cycle(tmp_path: Path) -> None:
    cyclic = DEPS_TOML.replace('cmd = "d"', 'cmd = "d"\nrequires = ["web"]')
    write(tmp_path, "overseer.toml", cyclic)
    rc, _, err = await client(tmp_path, "check", tool=INSTALLED)
    assert rc == 2
    assert "Traceback" not in err
    assert "overseer.toml: proc 'web': field 'requires': the requirements form a cycle" in err
    assert "'web' -> 'api' -> 'db' -> 'web'" in err


def SERVE(port_var: str = "PORT", delay: float = 0.5) -> list[str]:
    """Listens on $PORT after `delay` seconds; on SIGTERM prints "bye" and exits 0."""
    return py(
        f"""
        import os, signal, socket, sys, time
        def bye(*_):
            print("bye", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        time.sleep({delay})
        server = socket.create_server(("127.0.0.1", int(os.environ[{port_var!r}])))
        print("listening", flush=True)
        while True:
            server.accept()[0].close()
        """
    )


CONNECT = py(
    """
    import os, signal, socket, sys, time
    def bye(*_):
        print("bye", flush=True)
        sys.exit(0)
    signal.signal(signal.SIGTERM, bye)
    socket.create_connection(("127.0.0.1", int(os.environ["DB_PORT"])), timeout=5).close()
    print("connected", flush=True)
    while True:
        time.sleep(3600)
    """
)


async def test_start_waits_for_readiness_and_stops_in_reverse(tmp_path: Path) -> None:
    port = free_port()
    write_yaml(
        tmp_path,
        {
            "app": {"cmd": CONNECT, "requires": ["db"], "env": {"DB_PORT": str(port)}},
            "db": {"cmd": SERVE(), "env": {"PORT": str(port)}, "ready_port": "$PORT"},
        },
    )
    async with run_tool(tmp_path, "start", "--no-timestamp", "--no-color") as tool:
        await tool.out.wait_for(r"^app +\| connected")
        tool.send_signal(signal.SIGINT)
        rc = await tool.wait()
    lines = tool.out.lines
    assert rc == 130, tool.err.text
    assert "app  | waiting for db" in lines
    assert lines.index("db   | listening") < lines.index("app  | connected")
    # app stops (and ends) before db is asked to stop.
    assert lines.index("app  | bye") < lines.index("db   | stopping") < lines.index("db   | bye")
    assert lines.index("app  | exited 0") < lines.index("db   | stopping")


async def test_a_failed_requirement_in_the_cli(tmp_path: Path) -> None:
    write_yaml(
        tmp_path,
        {
            "app": {"cmd": exit_with(0, out="app ran"), "requires": ["db"]},
            "db": {"cmd": [str(tmp_path / "no-such-db")]},
        },
    )
    rc, out, err = await run(tmp_path, "start", "--no-timestamp", "--no-color", "--json")
    assert rc == 1, err
    states = [r for r in map(json.loads, out.splitlines()) if r["kind"] == "state"]
    app = [r for r in states if r["id"] == "app"]
    assert app[-1]["state"] == "fatal"
    assert app[-1]["PID"] == 0
    assert app[-1]["error"].startswith("requirement 'db' could not start: cannot start")
    assert not any(r["kind"] == "log" for r in map(json.loads, out.splitlines()))


async def test_export_maps_requirements(tmp_path: Path) -> None:
    write(tmp_path, "overseer.yml", DEPS_YAML)
    units = tmp_path / "units"
    rc, _, err = await client(tmp_path, "export", "systemd", str(units), "-a", "x", tool=INSTALLED)
    assert rc == 0, err
    api = (units / "x-api.service").read_text()
    assert "Requires=x-db.service x-cache.service\n" in api
    assert "After=network.target x-db.service x-cache.service\n" in api
    assert "PartOf=x.target x-db.service\n" in api
    assert "Requires=" not in (units / "x-db.service").read_text()
    rc, _, err = await client(
        tmp_path, "export", "supervisord", str(tmp_path / "sv"), "-a", "x", tool=INSTALLED
    )
    assert rc == 0, err
    conf = (tmp_path / "sv" / "x.conf").read_text()
    priority = dict(re.findall(r"\[program:(\w+)\][^\[]*?priority=(\d+)", conf))
    assert priority == {"web": "300", "api": "200", "db": "100", "cache": "100"}


# --- stop ladders -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("a.yml", "p:\n  cmd: x\n  stop_signals: [[SIGINT, 5], [TERM, 2.5]]\n"),
        ("a.toml", '[procs.p]\ncmd = "x"\nstop_signals = [["SIGINT", 5], ["TERM", 2.5]]\n'),
    ],
)
def test_stop_signals_key(tmp_path: Path, name: str, text: str) -> None:
    (spec,) = load_config(write(tmp_path, name, text))
    assert spec.stop_signals == ((signal.SIGINT, 5.0), (signal.SIGTERM, 2.5))
    assert (spec.stop_signal, spec.stop_timeout) == (signal.SIGINT, 7.5)
    assert describe(spec) == "x  [stop_signals=SIGINT:5s,SIGTERM:2.5s]"


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ("stop_signals: [[SIGINT, 5], [SIGKILL, 1]]", "step 2: SIGKILL always comes last"),
        ("stop_signals: [[SIGINT]]", "step 1: expected a (signal, seconds) pair"),
        ("stop_signals: [[SIGINT, -1]]", "step 1: expected a finite number of seconds >= 0"),
        ("stop_signals: []", "expected a list of (signal, seconds) steps"),
        ("stop_signals: SIGTERM", "expected a list of (signal, seconds) steps"),
        (
            "stop_signals: [[INT, 1]]\n  stop_timeout: 3",
            "give either a ladder or stop_timeout, not both",
        ),
    ],
)
def test_stop_signals_key_errors(tmp_path: Path, settings: str, fragment: str) -> None:
    path = write(tmp_path, "overseer.yml", f"p:\n  cmd: x\n  {settings}\n")
    (problem,) = problems(path)
    assert problem.startswith(f"{path}: proc 'p': field 'stop_signals': "), problem
    assert fragment in problem


async def test_the_cli_stops_with_the_ladder(tmp_path: Path) -> None:
    ladder = [["USR1", 0.3], ["SIGUSR2", 0.3]]
    write_yaml(tmp_path, {"p": {"cmd": PRINT_SIGNALS, "stop_signals": ladder}})
    async with run_tool(tmp_path, "start", "--no-timestamp", "--no-color") as tool:
        await tool.out.wait_for(r"^p +\| ready")
        rc, _, err = await client(tmp_path, "stop", "p", tool=INSTALLED)
        assert rc == 0, err
        assert await tool.wait() == 0
    lines = tool.out.lines
    assert lines.index("p  | got SIGUSR1") < lines.index("p  | got SIGUSR2")
    assert lines[-1] == "p  | stopped (signal: SIGKILL)"
