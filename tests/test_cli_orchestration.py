"""The orchestration options of issue 13 in config files: YAML and TOML keys,
what ``check`` refuses, what ``start`` prints, and what ``export`` makes of
them."""

from __future__ import annotations

import json
import math
import sys
import textwrap
from pathlib import Path

import pytest
from cli_children import INSTALLED, client, exit_with, run, write_text, write_yaml

from trio_overseer._cli._config import ConfigError, describe, load_config

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
    assert "restart=always" in out and "retry=forever" in out
    write(tmp_path, "bad.yml", "web:\n  cmd: x\n  reset_after: -1\n  restart: often\n")
    rc, out, err = await client(tmp_path, "check", "-c", "bad.yml", tool=INSTALLED)
    assert rc == 2 and "Traceback" not in err
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
    assert "odd   | exited 3" in lines and "once  | exited 1" in lines
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
    assert "Restart=always\n" in web and "StartLimitIntervalSec=0\n" in web
    assert "SuccessExitStatus=3\n" in web and "StartLimitBurst" not in web
    assert "Restart=no\n" in (units / "x-job.service").read_text()
    assert "Restart=no\n" in (units / "x-plain.service").read_text()
    rc, _, err = await client(
        tmp_path, "export", "supervisord", str(tmp_path / "sv"), "-a", "x", tool=INSTALLED
    )
    assert rc == 0, err
    conf = (tmp_path / "sv" / "x.conf").read_text()
    web_section = conf.split("[program:web]")[1].split("[program:")[0]
    assert "autorestart=true\n" in web_section and "exitcodes=0,3\n" in web_section
    assert f"startretries={2**31 - 1}\n" in web_section
    job_section = conf.split("[program:job]")[1].split("[program:")[0]
    assert "autorestart=false\n" in job_section and "exitcodes=2\n" in job_section
