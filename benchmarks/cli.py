"""cli: the command-line tool printing ``seq N`` to /dev/null, against honcho.

``python -m trio_overseer start -c overseer.yml`` with the config
``{gen: {cmd: "seq N"}}``, and ``honcho start`` with the Procfile
``gen: seq N``, each with stdout to /dev/null; the clock runs from the
launch until the tool exits.  Honcho is about 100 times slower, so it prints
a tenth of the lines (its rate is steady: startup is a small part of its
time); the comparison is of lines per second.

Also reported: the CPU per line of the tool and its children (from
``RUSAGE_CHILDREN``), steadier than the wall clock on a busy machine.

Checks: exit code 0, no survivor, and (in each variant's first round) a
second, untimed run of the same size into a file in which every number 1..N
appears, in order, as the text of a line (so a tool that drops lines under
load cannot score).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import Check, children_cpu_seconds, first_round, skip, tagged_env
from benchmarks._peers import cli_available, find_tool
from benchmarks._spec import Bench, Target, Variant


def plan(quick: bool) -> Bench:
    n = 200_000 if quick else 2_000_000
    return Bench(
        name="cli",
        title="the CLI printing seq N to /dev/null, vs honcho",
        unit="lines/s",
        higher_is_better=True,
        variants=[
            Variant(
                "cli",
                f"trio-overseer start, {n:,} lines",
                "candidate",
                "m_tool",
                {"n": n, "tool": "cli"},
            ),
            Variant(
                "honcho",
                f"honcho start, {n // 10:,} lines",
                "peer",
                "m_tool",
                {"n": n // 10, "tool": "honcho"},
            ),
        ],
        targets=[Target("lines/s: trio-overseer / honcho", "cli", "honcho", ">=", 20.0)],
        rounds=1 if quick else 3,
        timeout=600.0,
        extras={"cpu_ns": ("CPU/line, tool + its children", "ns")},
    )


def _argv(tool: str, d: Path, n: int) -> list[str] | None:
    if tool == "cli":
        (d / "overseer.yml").write_text(json.dumps({"gen": {"cmd": f"seq {n}"}}) + "\n")
        return [sys.executable, "-m", "trio_overseer", "start", "-c", str(d / "overseer.yml")]
    exe = find_tool("honcho")
    if exe is None:
        return None
    (d / "Procfile").write_text(f"gen: seq {n}\n")
    return [exe, "start", "-f", str(d / "Procfile")]


def _verify(path: Path, n: int) -> str | None:
    """None when the numbers 1..n are the texts of lines of `path`, in order."""
    want = 1
    with open(path, "rb") as f:
        for line in f:
            _, sep, text = line.rpartition(b"| ")
            if sep and text.rstrip(b"\r\n") == b"%d" % want:
                want += 1
    return None if want == n + 1 else f"line {want:,} of {n:,} missing from the output"


def m_tool(p: dict[str, Any]) -> dict[str, Any]:
    n, tool = p["n"], p["tool"]
    if tool == "cli" and (why := cli_available()):
        return skip(why)
    check = Check()
    with tempfile.TemporaryDirectory(prefix="ovr-bench-") as tmp:
        d = Path(tmp)
        argv = _argv(tool, d, n)
        if argv is None:
            return skip(f"{tool} is not installed (pip install -e '.[benchmarks]')")
        env = tagged_env({"NO_COLOR": "1"})
        c0 = children_cpu_seconds()
        t0 = time.perf_counter()
        r = subprocess.run(
            argv,
            cwd=d,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=300,
        )
        elapsed = time.perf_counter() - t0
        cpu = children_cpu_seconds() - c0
        check.expect(r.returncode == 0, f"exit code {r.returncode}: {r.stderr[-200:]!r}")
        if first_round():  # once per variant: the same run into a file, every line checked
            out = d / "out.txt"
            with open(out, "wb") as f:
                r = subprocess.run(
                    argv,
                    cwd=d,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=f,
                    stderr=subprocess.STDOUT,
                    timeout=300,
                )
            check.expect(r.returncode == 0, f"verification run: exit code {r.returncode}")
            if problem := _verify(out, n):
                check.expect(False, problem)
    check.no_survivors()
    return check.result(n / elapsed, cpu_ns=cpu / n * 1e9)
