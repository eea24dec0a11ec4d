"""stop: ``stop_all()`` of 100 running sleepers, until every one is reaped.

Candidate: 100 sleepers started with ``open_overseer`` + ``start()``; the
clock runs from ``ovr.stop_all()`` until ``wait_for_state`` has seen a final
state for each (the final state is published after the reap).  Baseline: 100
``trio.lowlevel.open_process`` sleepers, each in its own process group;
``os.killpg(pid, SIGTERM)`` each, then ``await proc.wait()`` each.

Checks: every proc interrupted by SIGTERM (exit code -15), no survivor, no
zombie.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

from benchmarks._common import Check, measure, start_sleepers, timed_stop_all
from benchmarks._spec import Bench, Target, Variant

N = 100


def plan(quick: bool) -> Bench:
    p = {"n": N}
    return Bench(
        name="stop",
        title=f"stop_all() of {N} sleepers until all are reaped",
        unit="s",
        higher_is_better=False,
        variants=[
            Variant("ovr", "trio_overseer stop_all()", "candidate", "m_ovr", p),
            Variant("trio", "raw Trio os.killpg + wait", "baseline", "m_trio", p),
        ],
        targets=[Target("stop_all / raw Trio", "ovr", "trio", "<=", 1.5)],
        rounds=3 if quick else 7,
    )


def m_ovr(p: dict[str, Any]) -> dict[str, Any]:
    import trio_overseer

    n = p["n"]

    async def main(check: Check) -> dict[str, Any]:
        async with trio_overseer.open_overseer() as ovr:
            ids = await start_sleepers(ovr, n)
            return check.result(await timed_stop_all(ovr, ids, check, -signal.SIGTERM))

    return measure(main)


def m_trio(p: dict[str, Any]) -> dict[str, Any]:
    import trio

    n = p["n"]

    async def main(check: Check) -> dict[str, Any]:
        procs: list[Any] = []
        elapsed = None
        try:
            for _ in range(n):
                procs.append(
                    await trio.lowlevel.open_process(
                        ["sleep", "1000"],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        process_group=0,
                    )
                )
            t0 = time.perf_counter()
            for proc in procs:
                os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs:
                await proc.wait()
            elapsed = time.perf_counter() - t0
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                for stream in (proc.stdout, proc.stderr):
                    await stream.aclose()
        codes = {proc.returncode for proc in procs}
        check.expect(codes == {-signal.SIGTERM}, f"exit codes {sorted(codes)}")
        return check.result(elapsed)

    return measure(main)
