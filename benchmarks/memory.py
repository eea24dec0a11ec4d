"""memory: the parent's resident memory with 1000 supervised sleepers.

Candidate: ``open_overseer`` + ``start()`` of 1000 ``sleep`` children;
baseline: a raw Trio nursery holding 1000 ``run_process`` sleepers (output
captured, own process groups).  Each runs in its own worker process (which
imports only what its side needs) and reads its own VmRSS from
``/proc/self/status`` once all are running; the RSS before the first spawn
(interpreter and imports) gives the cost per proc.  The soft limit of open
files is raised to the hard limit (each proc holds 2 pipes and a pidfd).

The two run at the same time.  The RSS of helper processes
(trio_overseer's watchdog, if any) is reported beside it.  Checks: all
running at the measurement, all gone afterwards, no survivor.
"""

from __future__ import annotations

from typing import Any

from benchmarks._common import (
    Check,
    helper_pids,
    measure,
    proc_rss_kib,
    raise_nofile,
    rss_kib,
    start_raw_sleeper,
    start_sleepers,
    states,
)
from benchmarks._spec import Bench, Target, Variant


def plan(quick: bool) -> Bench:
    n = 300 if quick else 1000
    p = {"n": n}
    return Bench(
        name="memory",
        title=f"parent RSS with {n} supervised sleepers",
        unit="MiB",
        higher_is_better=False,
        variants=[
            Variant("ovr", "trio_overseer open_overseer + start()", "candidate", "m_ovr", p),
            Variant("trio", "raw Trio nursery of run_process", "baseline", "m_trio", p),
        ],
        targets=[Target("RSS / raw Trio", "ovr", "trio", "<=", 1.3)],
        rounds=1 if quick else 3,
        parallel=True,
        extras={
            "per_proc_kib": ("per proc", "KiB"),
            "base_mib": ("before spawning", "MiB"),
            "helper_mib": ("helper processes", "MiB"),
        },
    )


def _result(check: Check, base: int, rss: int, n: int) -> dict[str, Any]:
    helper = sum(map(proc_rss_kib, helper_pids()))
    return check.result(
        rss / 1024, per_proc_kib=(rss - base) / n, base_mib=base / 1024, helper_mib=helper / 1024
    )


def m_ovr(p: dict[str, Any]) -> dict[str, Any]:
    import trio_overseer
    from trio_overseer import State

    raise_nofile()
    n = p["n"]

    async def main(check: Check) -> dict[str, Any]:
        base = rss_kib()
        async with trio_overseer.open_overseer() as ovr:
            ids = await start_sleepers(ovr, n)
            rss = rss_kib()
            check.expect(states(ovr, ids) == {State.RUNNING}, f"states: {states(ovr, ids)}")
            return _result(check, base, rss, n)  # while the watchdog (a helper) lives

    return measure(main)


def m_trio(p: dict[str, Any]) -> dict[str, Any]:
    import trio

    raise_nofile()
    n = p["n"]

    async def main(check: Check) -> dict[str, Any]:
        base = rss_kib()
        procs: list[Any] = []
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                procs.append(await start_raw_sleeper(nursery))
            rss = rss_kib()
            check.expect(all(proc.returncode is None for proc in procs), "a sleeper ended")
            result = _result(check, base, rss, n)
            nursery.cancel_scope.cancel()
        return result

    return measure(main)
