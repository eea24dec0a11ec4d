"""idle: 100 supervised sleepers, the parent's CPU over an idle window.

Candidate: ``open_overseer`` + ``start()`` of 100 ``sleep`` children;
baseline: a raw Trio nursery holding 100 ``run_process`` sleepers (output
captured, own process groups).  Each runs in its own worker process; after
all are running and a 0.5 s settle, the worker reads its own
``getrusage(RUSAGE_SELF)`` (user + system, every thread), sleeps for the
window (20 s, 5 s with ``--quick``) and reads it again.  A supervisor that
polls shows up here; one that waits on events costs nothing.

The two run at the same time (each measures only its own CPU).  The CPU of
helper processes (trio_overseer's watchdog, if any) over the window is
reported beside it.  Checks: every sleeper still running at the end of the
window, all interrupted and gone afterwards, no survivor.
"""

from __future__ import annotations

from typing import Any

from benchmarks._common import (
    Check,
    cpu_seconds,
    helper_pids,
    measure,
    proc_cpu_seconds,
    start_raw_sleeper,
    start_sleepers,
    states,
)
from benchmarks._spec import Bench, Target, Variant

N = 100
SETTLE = 0.5


def plan(quick: bool) -> Bench:
    window = 5.0 if quick else 20.0
    p = {"n": N, "window": window}
    return Bench(
        name="idle",
        title=f"{N} supervised sleepers, parent CPU over {window:g} s idle",
        unit="ms",
        higher_is_better=False,
        variants=[
            Variant("ovr", "trio_overseer open_overseer + start()", "candidate", "m_ovr", p),
            Variant("trio", "raw Trio nursery of run_process", "baseline", "m_trio", p),
        ],
        targets=[
            Target(f"parent CPU over {window:g} s", "ovr", None, "<=", 2.0, unit="ms"),
            Target("parent CPU / raw Trio", "ovr", "trio", "info", 0.0),
        ],
        rounds=1 if quick else 3,
        parallel=True,
        extras={"helper_ms": ("helper processes' CPU", "ms")},
    )


async def _window(window: float) -> tuple[float, float]:
    """(parent CPU ms, helper CPU ms) over `window` seconds of sleep."""
    import trio

    await trio.sleep(SETTLE)
    helpers = helper_pids()
    h0 = sum(map(proc_cpu_seconds, helpers))
    c0 = cpu_seconds()
    await trio.sleep(window)
    c1 = cpu_seconds()
    h1 = sum(map(proc_cpu_seconds, helpers))
    return (c1 - c0) * 1e3, (h1 - h0) * 1e3


def m_ovr(p: dict[str, Any]) -> dict[str, Any]:
    import trio_overseer
    from trio_overseer import State

    n, window = p["n"], p["window"]

    async def main(check: Check) -> dict[str, Any]:
        async with trio_overseer.open_overseer() as ovr:
            ids = await start_sleepers(ovr, n)
            ms, helper = await _window(window)
            check.expect(states(ovr, ids) == {State.RUNNING}, f"at the end: {states(ovr, ids)}")
        ends = states(ovr, ids)
        check.expect(ends == {State.INTERRUPTED}, f"after the block: {ends}")
        return check.result(ms, helper_ms=helper)

    return measure(main)


def m_trio(p: dict[str, Any]) -> dict[str, Any]:
    import trio

    n, window = p["n"], p["window"]

    async def main(check: Check) -> dict[str, Any]:
        procs: list[Any] = []
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                procs.append(await start_raw_sleeper(nursery))
            ms, helper = await _window(window)
            check.expect(all(proc.returncode is None for proc in procs), "a sleeper ended")
            nursery.cancel_scope.cancel()
        codes = {proc.returncode for proc in procs}
        check.expect(codes == {-15}, "a sleeper did not end by SIGTERM")
        return check.result(ms, helper_ms=helper)

    return measure(main)
