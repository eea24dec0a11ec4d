"""stop_timeout: ``stop_all()`` of 100 children that ignore SIGTERM, ``stop_timeout=1``.

Each child is ``sh -c 'trap "" TERM; echo ready; exec sleep 1000'`` (the
ignored SIGTERM survives the exec); the clock starts once every child has
printed ``ready`` (``wait_for_log``), runs from ``stop_all()`` until a final
state was seen for each, and should be the timeout plus little: the SIGKILL
must follow the timeout at once, for all 100 together.

Baseline: the timeout itself (no process can be faster without ignoring the
contract).  Checks: every proc killed by SIGKILL (exit code -9), no
survivor, no zombie.
"""

from __future__ import annotations

import signal
from typing import Any

from benchmarks._common import Check, measure, start_sleepers, timed_stop_all
from benchmarks._spec import Bench, Target, Variant

N = 100
TIMEOUT = 1.0
CHILD = 'trap "" TERM; echo ready; exec sleep 1000'


def plan(quick: bool) -> Bench:
    return Bench(
        name="stop_timeout",
        title=f"stop_all() of {N} children ignoring SIGTERM, stop_timeout={TIMEOUT:g}",
        unit="s",
        higher_is_better=False,
        variants=[
            Variant(
                "ovr",
                f"trio_overseer stop_all(), timeout {TIMEOUT:g} s",
                "candidate",
                "m_ovr",
                {"n": N, "timeout": TIMEOUT},
            ),
        ],
        targets=[
            Target(
                f"time to reap all (timeout {TIMEOUT:g} s + 0.1 s)",
                "ovr",
                None,
                "<=",
                TIMEOUT + 0.1,
                unit="s",
            ),
        ],
        rounds=2 if quick else 5,
    )


def m_ovr(p: dict[str, Any]) -> dict[str, Any]:
    import trio_overseer

    n, timeout = p["n"], p["timeout"]

    async def main(check: Check) -> dict[str, Any]:
        async with trio_overseer.open_overseer(stop_timeout=timeout) as ovr:
            ids = await start_sleepers(ovr, n, ("sh", "-c", CHILD))
            for id in ids:
                await ovr.wait_for_log(id, "ready", timeout=30)
            return check.result(await timed_stop_all(ovr, ids, check, -signal.SIGKILL))

    return measure(main)
