"""cli: the command-line tool printing ``seq N``, to /dev/null (against honcho) and to a pipe.

``python -m trio_overseer start -c overseer.yml`` with the config
``{gen: {cmd: "seq N"}}``, and ``honcho start`` with the Procfile
``gen: seq N``, each with stdout to /dev/null; the clock runs from the
launch until the tool exits (its start-up included).  Honcho is about 100
times slower, so it prints a tenth of the lines (its rate is steady: startup
is a small part of its time); the comparison is of lines per second.

The pipe row: the same CLI, its stdout a pipe read by ``cat > /dev/null``,
the clock running until both have exited; baseline: ``seq N | cat >
/dev/null``, the same lines through the same pipe without the tool (what
the pipe and cat can carry).  The CLI's output is larger (each line gets a
prefix), which the ratio does not hide.

Python tools start faster with their bytecode cached: each is run once,
untimed, with its cache in a directory of the measurement (this machine may
set PYTHONDONTWRITEBYTECODE), and then timed with that cache.

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
        title="the CLI printing seq N to /dev/null (vs honcho) and to a pipe (vs cat)",
        unit="lines/s",
        higher_is_better=True,
        variants=[
            Variant(
                "cli",
                f"trio-overseer start, {n:,} lines to /dev/null",
                "candidate",
                "m_tool",
                {"n": n, "tool": "cli"},
            ),
            Variant(
                "honcho",
                f"honcho start, {n // 10:,} lines to /dev/null",
                "peer",
                "m_tool",
                {"n": n // 10, "tool": "honcho"},
            ),
            Variant(
                "cli_pipe",
                f"trio-overseer start, {n:,} lines to a pipe read by cat",
                "candidate",
                "m_tool",
                {"n": n, "tool": "cli", "pipe": True},
            ),
            Variant(
                "cat_pipe",
                f"seq | cat, {n:,} lines through the same pipe",
                "baseline",
                "m_tool",
                {"n": n, "tool": "seq", "pipe": True},
            ),
        ],
        targets=[
            Target("lines/s: trio-overseer / honcho", "cli", "honcho", ">=", 100.0),
            Target("lines/s to /dev/null", "cli", None, ">=", 5e6, unit="lines/s"),
            Target("lines/s to a pipe: trio-overseer / cat", "cli_pipe", "cat_pipe", ">=", 0.3),
        ],
        rounds=1 if quick else 3,
        timeout=600.0,
        extras={"cpu_ns": ("CPU/line, tool + its children", "ns")},
    )


def _argv(tool: str, d: Path, n: int) -> list[str] | None:
    if tool == "cli":
        (d / "overseer.yml").write_text(json.dumps({"gen": {"cmd": f"seq {n}"}}) + "\n")
        return [sys.executable, "-m", "trio_overseer", "start", "-c", str(d / "overseer.yml")]
    if tool == "seq":
        return ["seq", str(n)]
    exe = find_tool("honcho")
    if exe is None:
        return None
    (d / "Procfile").write_text(f"gen: seq {n}\n")
    return [exe, "start", "-f", str(d / "Procfile")]


def _run(argv: list[str], d: Path, env: dict[str, str], pipe: bool, out: Any) -> int:
    """Run `argv` with stdout to `out`, or into a pipe read by ``cat > out``; its exit code."""
    common: dict[str, Any] = {"cwd": d, "env": env, "stdin": subprocess.DEVNULL}
    if not pipe:
        return subprocess.run(
            argv, stdout=out, stderr=subprocess.PIPE, timeout=300, **common
        ).returncode
    tool = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, **common)
    assert tool.stdout is not None
    cat = subprocess.run(["cat"], stdin=tool.stdout, stdout=out, timeout=300, cwd=d, env=env)
    tool.stdout.close()
    return tool.wait(timeout=60) or cat.returncode


def _verify(path: Path, n: int, *, prefixed: bool = True) -> str | None:
    """None when the numbers 1..n are the texts of lines of `path`, in order."""
    want = 1
    with open(path, "rb") as f:
        for line in f:
            if prefixed:
                _, sep, text = line.rpartition(b"| ")
            else:
                sep, text = b"|", line
            if sep and text.rstrip(b"\r\n") == b"%d" % want:
                want += 1
    return None if want == n + 1 else f"line {want:,} of {n:,} missing from the output"


def m_tool(p: dict[str, Any]) -> dict[str, Any]:
    n, tool, pipe = p["n"], p["tool"], p.get("pipe", False)
    if tool == "cli" and (why := cli_available()):
        return skip(why)
    check = Check()
    with tempfile.TemporaryDirectory(prefix="ovr-bench-") as tmp:
        d = Path(tmp)
        argv = _argv(tool, d, n)
        if argv is None:
            return skip(f"{tool} is not installed (pip install -e '.[benchmarks]')")
        env = tagged_env({"NO_COLOR": "1", "PYTHONPYCACHEPREFIX": str(d / "pycache")})
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        (d / "warm").mkdir()
        warm = _argv(tool, d / "warm", 10)
        assert warm is not None
        code = _run(warm, d / "warm", env, pipe, subprocess.DEVNULL)  # bytecode, disk cache
        check.expect(code == 0, f"warm-up run: exit code {code}")
        c0 = children_cpu_seconds()
        t0 = time.perf_counter()
        code = _run(argv, d, env, pipe, subprocess.DEVNULL)
        elapsed = time.perf_counter() - t0
        cpu = children_cpu_seconds() - c0
        check.expect(code == 0, f"exit code {code}")
        if first_round():  # once per variant: the same run into a file, every line checked
            out = d / "out.txt"
            with open(out, "wb") as f:
                code = _run(argv, d, env, pipe, f)
            check.expect(code == 0, f"verification run: exit code {code}")
            if problem := _verify(out, n, prefixed=tool != "seq"):
                check.expect(False, problem)
    check.no_survivors()
    return check.result(n / elapsed, cpu_ns=cpu / n * 1e9)
