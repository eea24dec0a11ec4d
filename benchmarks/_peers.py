"""Supervisors measured from the outside: our own scripts, the CLI, and peers.

`launch_until_children` starts a supervisor process (any of them) whose
config asks for N ``sleep`` children, and times from just before the launch
until N tagged ``sleep`` processes exist (a /proc scan every 5 ms, the same
for all).  Then it sends SIGTERM, waits for the supervisor to exit, and
checks that no child survived it.

Peers (supervisord, circus, honcho) come from the ``benchmarks`` extra; when
one is not installed its row is skipped with a note.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import TAG_VAR, Check, SleeperCounter, skip, tag, tagged_env

SLEEP_SECONDS = "1000"

# A trio_overseer program: open_overseer, add N sleepers, start each, wait for SIGTERM
# (handle_signals then stops every proc and the process dies of SIGTERM).
OVR_SCRIPT = """
import sys, trio, trio_overseer
n = int(sys.argv[1])
async def main():
    async with trio_overseer.open_overseer() as ovr:
        for i in range(n):
            ovr.add(f"s{i}", "sleep", [sys.argv[2]])
        for i in range(n):
            await ovr.start(f"s{i}")
        await trio.sleep_forever()
trio.run(main)
"""

# The same by hand with Trio: a nursery of run_process sleepers, until SIGTERM.
TRIO_SCRIPT = """
import functools, signal, subprocess, sys, trio
n = int(sys.argv[1])
async def main():
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            for i in range(n):
                await nursery.start(functools.partial(
                    trio.run_process, ["sleep", sys.argv[2]], check=False,
                    stdin=subprocess.DEVNULL, capture_stdout=True, capture_stderr=True,
                    process_group=0))
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()
trio.run(main)
"""


def find_tool(name: str) -> str | None:
    """A console script of this environment (even when it is not on PATH), or on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    return shutil.which(name)


def cli_available() -> str | None:
    """None when ``python -m trio_overseer start -c FILE`` works, else why not."""
    if importlib.util.find_spec("trio_overseer.__main__") is None:
        return "the CLI (python -m trio_overseer) is not there yet"
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "overseer.yml"
        cfg.write_text('probe:\n  cmd: "echo cli-probe-ok"\n')
        try:
            r = subprocess.run(
                [sys.executable, "-m", "trio_overseer", "start", "-c", str(cfg)],
                capture_output=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return "the CLI did not exit within 30 s on a one-line config"
    if r.returncode != 0 or b"cli-probe-ok" not in r.stdout + r.stderr:
        err = (r.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        return f"the CLI does not run a config yet (exit {r.returncode}: {err[:80]})"
    return None


# -- configs --------------------------------------------------------------------------


def supervisord_argv(d: Path, procs: dict[str, str]) -> list[str] | None:
    exe = find_tool("supervisord")
    if exe is None:
        return None
    parts = [
        "[supervisord]",
        "nodaemon=true",
        f"logfile={d}/supervisord.log",
        f"pidfile={d}/supervisord.pid",
        f"childlogdir={d}",
        "loglevel=warn",
    ]
    for name, cmd in procs.items():
        parts += [
            f"[program:{name}]",
            f"command={cmd}",
            "startsecs=0",
            "autorestart=false",
            "stopasgroup=true",
            "killasgroup=true",
            "stdout_logfile=NONE",
            "stderr_logfile=NONE",
            f'environment={TAG_VAR}="{tag()}"',
        ]
    (d / "supervisord.conf").write_text("\n".join(parts) + "\n")
    return [exe, "-c", str(d / "supervisord.conf")]


def circus_argv(d: Path, procs: dict[str, str]) -> list[str] | None:
    exe = find_tool("circusd")
    if exe is None:
        return None
    parts = [
        "[circus]",
        f"endpoint = ipc://{d}/endpoint",
        f"pubsub_endpoint = ipc://{d}/pubsub",
        f"stats_endpoint = ipc://{d}/stats",
        "statsd = False",
        "check_delay = 5",
    ]
    for name, cmd in procs.items():
        parts += [
            f"[watcher:{name}]",
            f"cmd = {cmd}",
            "numprocesses = 1",
            "copy_env = True",
            "stop_children = True",
            "graceful_timeout = 5",
            f"[env:{name}]",
            f"{TAG_VAR} = {tag()}",
        ]
    (d / "circus.ini").write_text("\n".join(parts) + "\n")
    return [exe, "--log-output", str(d / "circus.log"), str(d / "circus.ini")]


def honcho_argv(d: Path, procs: dict[str, str]) -> list[str] | None:
    exe = find_tool("honcho")
    if exe is None:
        return None
    (d / "Procfile").write_text("".join(f"{name}: {cmd}\n" for name, cmd in procs.items()))
    return [exe, "start", "-f", str(d / "Procfile")]


def cli_argv(d: Path, procs: dict[str, str]) -> list[str]:
    import json  # JSON is YAML: no PyYAML needed to write the config

    cfg = {name: {"cmd": cmd} for name, cmd in procs.items()}
    (d / "overseer.yml").write_text(json.dumps(cfg, indent=1) + "\n")
    return [sys.executable, "-m", "trio_overseer", "start", "-c", str(d / "overseer.yml")]


# -- the measurement ---------------------------------------------------------------------


def launch_until_children(
    which: str, n: int, *, timeout: float = 60.0, settle: float = 1.0, stop_timeout: float = 15.0
) -> dict[str, Any]:
    """Seconds from launching supervisor `which` until its `n` sleep children all exist.

    Then, after `settle` seconds (a SIGTERM that arrives while circus or honcho
    are still setting up can be lost: they are given time to finish starting),
    SIGTERM, up to `stop_timeout` s for the supervisor to exit, and the check
    that no child survived.
    """
    check = Check()
    procs = {f"s{i}": f"sleep {SLEEP_SECONDS}" for i in range(n)}
    with tempfile.TemporaryDirectory(prefix="ovr-bench-") as tmp:
        d = Path(tmp)
        if which == "ovr-script":
            argv: list[str] | None = [sys.executable, "-c", OVR_SCRIPT, str(n), SLEEP_SECONDS]
        elif which == "trio-script":
            argv = [sys.executable, "-c", TRIO_SCRIPT, str(n), SLEEP_SECONDS]
        elif which == "cli":
            why = cli_available()
            if why:
                return skip(why)
            argv = cli_argv(d, procs)
        elif which == "supervisord":
            argv = supervisord_argv(d, procs)
        elif which == "circus":
            argv = circus_argv(d, procs)
        elif which == "honcho":
            argv = honcho_argv(d, procs)
        else:
            raise ValueError(which)
        if argv is None:
            return skip(f"{which} is not installed (pip install -e '.[benchmarks]')")
        counter = SleeperCounter(tag())
        err_path = d / "stderr.txt"
        with open(err_path, "wb") as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                argv,
                cwd=d,
                env=tagged_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
            elapsed = None
            seen = 0
            while True:
                seen = counter.count()
                if seen >= n:
                    elapsed = time.perf_counter() - t0
                    break
                if proc.poll() is not None or time.perf_counter() - t0 > timeout:
                    break
                time.sleep(0.005)
            check.expect(
                elapsed is not None,
                f"only {seen} of {n} children appeared (exit {proc.returncode}): {_tail(err_path)}",
            )
            check.expect(seen == n, f"{seen} children, expected {n}")
            if proc.poll() is None:
                time.sleep(settle)
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(stop_timeout)
                except subprocess.TimeoutExpired:
                    check.expect(False, f"{which} did not exit within {stop_timeout} s of SIGTERM")
                    with contextlib.suppress(OSError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        check.no_survivors(grace=2.0)
        return check.result(elapsed, children=seen)


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(lines[-2:])[:200]
