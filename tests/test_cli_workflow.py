"""The dev workflow of honcho, foreman and overmind users, driven through the installed tool.

Positional names, concurrency and ``scale:``, ``run``, exit policies,
output options, control of several procs at once, ``start ID`` and
``reload``.  Every test waits on output lines or socket answers.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import trio
from cli_children import (
    INSTALLED,
    PY,
    SLEEP_FOREVER,
    client,
    exit_with,
    pid_alive,
    pids_in,
    run,
    run_tool,
    write_text,
    write_yaml,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the tests watch processes through /proc"
)

HEAD = r"\d\d:\d\d:\d\d "


async def ctl(cwd: Path, *args: str) -> tuple[int, str, str]:
    return await client(cwd, *args, tool=INSTALLED)


def port_printer(tag: str) -> list[str]:
    """Prints "<tag> PORT=<port>", then sleeps (its stdout is unbuffered)."""
    return [
        PY,
        "-u",
        "-c",
        f"import os, time; print({tag!r}, 'PORT=' + os.environ['PORT']); time.sleep(3600)",
    ]


async def test_positional_names_scale_and_prefixes(tmp_path: Path) -> None:
    write_yaml(
        tmp_path,
        {
            "web": {"cmd": port_printer("web"), "scale": 2},
            "worker": {"cmd": port_printer("worker")},
            "clock": {"cmd": port_printer("clock")},
        },
    )
    async with run_tool(tmp_path, "start", "web", "clock", tool=INSTALLED) as tool:
        for id, text in (("web.1", "web PORT=5000"), ("web.2", "web PORT=5001")):
            await tool.out.wait_for(rf"^{HEAD}{re.escape(id)}  \| {text}$")
        await tool.out.wait_for(rf"^{HEAD}clock  \| clock PORT=5200$")
        assert "worker" not in tool.out.text
        rc, out, err = await ctl(tmp_path, "status")
        assert [row.split()[0] for row in out.splitlines()[1:]] == ["web.1", "web.2", "clock"]
        # `start NAME` while this instance runs asks it to start the proc.
        rc, out, err = await ctl(tmp_path, "start", "--only", "x", "web")
        assert rc == 0, err
        pids = dict(re.findall(r"(\S+) +\| running \(pid (\d+)\)", tool.out.text))
        assert out.splitlines() == [
            f"web.1: running (pid {pids['web.1']})",
            f"web.2: running (pid {pids['web.2']})",
        ]
        rc, out, err = await ctl(tmp_path, "stop", "web")  # a type: all its instances
        assert rc == 0, err
        assert out == "web.1: stopped (signal: SIGTERM)\nweb.2: stopped (signal: SIGTERM)\n"
        rc, out, err = await ctl(tmp_path, "start", "web.2")  # ended: starts again
        assert rc == 0, err
        await tool.out.wait_for(lambda line: tool.out.text.count("web PORT=5001") == 2)
        rc, out, err = await ctl(tmp_path, "stop", "--all")
        assert rc == 0, err
        assert await tool.wait() == 0


async def test_concurrency_options(tmp_path: Path) -> None:
    write_text(tmp_path, "Procfile", "web: echo web $PORT\nworker: echo worker $PORT\n")
    rc, out, err = await run(
        tmp_path, "start", "--no-socket", "-c", "web=2,worker=0", tool=INSTALLED
    )
    assert rc == 0, err
    assert sorted(re.findall(r"(\S+) +\| (web \d+)", out)) == [
        ("web.1", "web 5000"),
        ("web.2", "web 5001"),
    ]
    rc, out, err = await run(tmp_path, "start", "--no-socket", "-m", "all=0", tool=INSTALLED)
    assert (rc, out) == (2, "")
    assert "every proc is scaled to 0" in err
    rc, out, err = await run(tmp_path, "start", "-c", "nope=2", tool=INSTALLED)
    assert (rc, out) == (2, "")
    assert "concurrency: no proc 'nope' in Procfile (known: web, worker)" in err
    rc, out, err = await run(tmp_path, "start", "-m", "web=x", tool=INSTALLED)
    assert rc == 2
    assert "-m/--concurrency web=x: web: expected a number of instances" in err
    (tmp_path / "web=2").write_text("")
    rc, out, err = await run(tmp_path, "start", "-c", "web=2", tool=INSTALLED)
    assert rc == 2
    assert "-c web=2: ambiguous" in err


async def test_run_a_one_off_command(tmp_path: Path) -> None:
    write_text(tmp_path, "Procfile", "web: true\n")
    write_text(tmp_path, ".env", "GREETING=hello from env\n")
    code = "import os, sys; print(os.environ['GREETING']); sys.exit(7)"
    rc, out, err = await ctl(tmp_path, "run", PY, "-c", code)
    assert (rc, out, err) == (7, "hello from env\n", "")
    rc, out, err = await ctl(tmp_path, "run", "echo $GREETING && exit 3")  # one shell line
    assert (rc, out) == (3, "hello from env\n")
    rc, out, err = await ctl(tmp_path, "run", "--", "no-such-program-here")
    assert rc == 127
    assert "cannot run 'no-such-program-here'" in err
    rc, out, err = await ctl(tmp_path, "run")
    assert rc == 2
    assert "give a command" in err


async def test_exit_on_first_stops_the_rest_with_its_code(tmp_path: Path) -> None:
    write_yaml(
        tmp_path,
        {
            "web": {"cmd": SLEEP_FOREVER},
            "migrate": {"cmd": exit_with(3, out="migrated")},
        },
    )
    rc, out, err = await run(tmp_path, "start", "--exit-on-first", tool=INSTALLED)
    assert rc == 3, err
    assert re.search(r"web +\| stopped \(signal: SIGTERM\)", out)
    assert "migrate ended (exit code 3): stopping every proc (--exit-on-first)" in err
    assert not any(map(pid_alive, pids_in(out.splitlines())))
    # --can-die: these may end, the others keep running.
    write_yaml(
        tmp_path,
        {
            "web": {"cmd": SLEEP_FOREVER},
            "migrate": {"cmd": exit_with(0, out="migrated")},
            "seed": {"cmd": SLEEP_FOREVER},
        },
    )
    async with run_tool(tmp_path, "start", "--can-die", "migrate", tool=INSTALLED) as tool:
        await tool.out.wait_for(r"migrate +\| exited 0")
        await tool.out.wait_for(r"seed +\| ready")
        rc, out, err = await ctl(tmp_path, "status")
        assert [x.split()[2] for x in out.splitlines()[1:]] == ["running", "finished", "running"]
        rc, out, err = await ctl(tmp_path, "signal", "seed", "KILL")  # killed from outside
        assert rc == 0, err
        rc = await tool.wait()
    assert rc == 128 + 9
    assert "seed ended (signal: SIGKILL)" in tool.err.text
    assert re.search(r"web +\| stopped \(signal: SIGTERM\)", tool.out.text)
    rc, out, err = await run(tmp_path, "start", "--can-die", "nope", "--no-socket", tool=INSTALLED)
    assert rc == 2
    assert "--can-die: no proc 'nope'" in err
    rc, out, err = await run(tmp_path, "start", "--exit-on-first", "--keep-running", tool=INSTALLED)
    assert rc == 2
    assert "contradict" in err


async def test_keep_running_keeps_control(tmp_path: Path) -> None:
    write_yaml(tmp_path, {"job": {"cmd": exit_with(0, out="job done")}})
    async with run_tool(tmp_path, "start", "--keep-running", tool=INSTALLED) as tool:
        await tool.out.wait_for(r"job +\| exited 0")
        rc, out, err = await ctl(tmp_path, "status")
        assert rc == 0
        assert out.splitlines()[1].split()[:3] == ["job", "-", "finished"]
        rc, out, err = await ctl(tmp_path, "restart", "job")
        assert rc == 0, err
        await tool.out.wait_for(lambda line: tool.out.text.count("| job done") == 2)
        rc, out, err = await ctl(tmp_path, "stop", "--all")
        assert rc == 0, err
        assert await tool.wait() == 0


async def test_output_options(tmp_path: Path) -> None:
    write_yaml(tmp_path, {"app": {"cmd": exit_with(0, out="hello", err="oops")}})
    outputs = {}

    async def go(name: str, *args: str) -> None:
        rc, out, err = await run(tmp_path, "start", "--no-socket", *args, tool=INSTALLED)
        assert rc == 0, err
        outputs[name] = out.splitlines()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(go, "no-prefix", "--no-prefix")
        nursery.start_soon(go, "no-timestamp", "--no-timestamp")
        nursery.start_soon(go, "format", "--timestamp-format", "%Y-%m-%dT%H:%M:%S.%f")
    assert sorted(outputs["no-prefix"]) == sorted(
        [x for x in outputs["no-prefix"] if x.startswith("app: ")] + ["hello", "oops"]
    )
    assert "app: exited 0" in outputs["no-prefix"]
    assert "app  | hello" in outputs["no-timestamp"]  # the id, the stream mark, the bar
    assert "app !| oops" in outputs["no-timestamp"]
    assert any(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6} app +\| hello", line)
        for line in outputs["format"]
    )
    rc, _, err = await run(tmp_path, "start", "--timestamp-format", "hh", tool=INSTALLED)
    assert rc == 2
    assert "expected a strftime format" in err


async def test_several_ids_groups_and_patterns(tmp_path: Path) -> None:
    write_yaml(
        tmp_path,
        {
            "a": {"cmd": SLEEP_FOREVER, "group": "front"},
            "b": {"cmd": SLEEP_FOREVER, "group": "front"},
            "c": {"cmd": SLEEP_FOREVER, "group": "back"},
            "d": {"cmd": SLEEP_FOREVER, "scale": 2},
        },
    )
    async with run_tool(tmp_path, "start", tool=INSTALLED) as tool:
        for id in ("a", "b", "c", "d.1", "d.2"):
            await tool.out.wait_for(rf"{re.escape(id)} +\| ready")
        rc, out, err = await ctl(tmp_path, "signal", "--group", "front", "USR1")
        assert rc == 0, err
        assert [line.split(":")[0] for line in out.splitlines()] == ["a", "b"]
        await tool.out.wait_for(r"a +\| stopped|a +\| killed")
        rc, out, err = await ctl(tmp_path, "restart", "front:*", "d.*")
        assert rc == 0, err
        assert [line.split(":")[0] for line in out.splitlines()] == ["a", "b", "d.1", "d.2"]
        assert all("running" in line for line in out.splitlines())
        rc, out, err = await ctl(tmp_path, "stop", "c", "nope", "front:*")
        assert rc == 1
        assert "no proc 'nope'" in err
        rc, out, err = await ctl(tmp_path, "status")
        assert "running" in [x.split()[2] for x in out.splitlines() if x.startswith("c ")]
        rc, out, err = await ctl(tmp_path, "stop", "c", "-g", "front")
        assert rc == 0, err
        assert out.splitlines() == [
            "a: stopped (signal: SIGTERM)",
            "b: stopped (signal: SIGTERM)",
            "c: stopped (signal: SIGTERM)",
        ]
        rc, out, err = await ctl(tmp_path, "stop")
        assert rc == 2
        assert "give one or more proc ids" in err
        rc, out, err = await ctl(tmp_path, "stop", "--all")
        assert rc == 0, err
        assert await tool.wait() == 0


async def test_reload(tmp_path: Path) -> None:
    config = {
        "same": {"cmd": SLEEP_FOREVER},
        "changes": {"cmd": port_printer("before")},
        "goes": {"cmd": SLEEP_FOREVER},
    }
    write_yaml(tmp_path, config)
    async with run_tool(tmp_path, "start", tool=INSTALLED) as tool:
        await tool.out.wait_for(r"same +\| ready")
        await tool.out.wait_for(r"changes +\| before")
        await tool.out.wait_for(r"goes +\| ready")
        pids = dict(re.findall(r"(\S+) +\| running \(pid (\d+)\)", tool.out.text))
        # A bad file changes nothing and says why.
        write_text(tmp_path, "overseer.yml", "same:\n  cmd: x\n  retyr: 3\n")
        rc, out, err = await ctl(tmp_path, "reload")
        assert rc == 1
        assert "the config was not reloaded, nothing changed" in err
        assert "overseer.yml: proc 'same': field 'retyr'" in err
        rc, out, err = await ctl(tmp_path, "status", "--json")
        rows = {r["id"]: r for r in map(json.loads, out.splitlines())}
        assert {id: (r["state"], str(r["PID"])) for id, r in rows.items()} == {
            id: ("running", pid) for id, pid in pids.items()
        }
        # A good one: added, removed, changed; the rest untouched.
        del config["goes"]
        config["changes"] = {"cmd": port_printer("after")}
        config["new"] = {"cmd": port_printer("new")}
        write_yaml(tmp_path, config)
        rc, out, err = await ctl(tmp_path, "reload")
        assert rc == 0, err
        assert out.splitlines() == [
            "added: new",
            "removed: goes",
            "changed: changes",
            "unchanged: same",
        ]
        await tool.out.wait_for(r"changes +\| after")
        await tool.out.wait_for(r"new +\| new PORT=5200")
        assert not pid_alive(int(pids["goes"]))
        assert not pid_alive(int(pids["changes"]))
        rc, out, err = await ctl(tmp_path, "status", "--json")
        rows = {r["id"]: r for r in map(json.loads, out.splitlines())}
        assert list(rows) == ["same", "changes", "new"]
        assert str(rows["same"]["PID"]) == pids["same"]
        assert rows["same"]["state"] == "running"
        rc, out, err = await ctl(tmp_path, "stop", "--all")
        assert rc == 0, err
        assert await tool.wait() == 0


BAD_INPUT = [
    pytest.param(
        ["check"], {".env": "PORT=abc\n"}, "PORT in .env is not a number: 'abc'", id="port"
    ),
    pytest.param(
        ["check", "-e", "sub"], {}, "sub: cannot read env file: Is a directory", id="env-dir"
    ),
    pytest.param(
        ["check", "-e", "bad"], {"bad": b"\xff=1\n"}, "bad: cannot read env file", id="env-bytes"
    ),
    pytest.param(
        ["check", "-f", "o.yml"],
        {"o.yml": "web:\n  cmd: [a]\n  shell: true\n  scale: -1\n"},
        "o.yml: proc 'web': field 'scale': expected a number of instances",
        id="yaml-fields",
    ),
    pytest.param(
        ["start", "-p", "70000"], {}, "-p/--port: expected a port number", id="port-range"
    ),
    pytest.param(["start", "-p", "x"], {}, "argument -p/--port: invalid int value", id="port-int"),
    pytest.param(["start", "-d", "Procfile"], {}, "-d Procfile: Not a directory", id="root"),
    pytest.param(["start", "-e", ","], {}, "-e: expected FILE[,FILE...]", id="env-empty"),
    pytest.param(["start", "nope"], {}, "no proc 'nope' in Procfile (known: web)", id="name"),
    pytest.param(["start", "-c", "web=2", "-f", "x"], {"x": "web: true\n"}, None, id="c-and-f-ok"),
    pytest.param(["run", "-c", "a.yml", "true"], {}, "a.yml: cannot read config file", id="run"),
    pytest.param(["export", "upstart", "out"], {}, "invalid choice: 'upstart'", id="format"),
    pytest.param(["signal", "web"], {}, "give one or more proc ids", id="signal"),
]


@pytest.mark.parametrize(("args", "files", "message"), BAD_INPUT)
async def test_bad_input_is_a_clear_usage_error(
    tmp_path: Path, args: list[str], files: dict[str, str | bytes], message: str | None
) -> None:
    write_text(tmp_path, "Procfile", "web: true\n")
    (tmp_path / "sub").mkdir()
    for name, content in files.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    if message is None:  # -c web=2 with -f FILE: concurrency, not a second config file
        rc, out, err = await ctl(tmp_path, *args, "--no-socket")
        assert rc == 0, err
        assert re.search(r"web\.2 +\| exited 0", out)
        return
    rc, out, err = await ctl(tmp_path, *args)
    assert (rc, out) == (2, ""), err
    assert message in err
    assert "Traceback" not in err
