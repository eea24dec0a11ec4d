"""start: 100 sleepers, from nothing until every one is running.

In-process (timed inside one Trio program, after imports):

* ``open_overseer`` + ``add`` + ``await ovr.start(id)`` for each, in turn;
* ``add`` each, ``supervise_all()`` in a nursery, ``wait_for_state(id, RUNNING)``
  for each;
* baseline: a Trio nursery, ``await nursery.start(trio.run_process, ...)`` for
  each in turn (own process group, stdout/stderr captured, like the Overseer).

From launch (the only fair way to time other supervisors): start a supervisor
process whose config holds 100 ``sleep`` programs and time until 100 tagged
``sleep`` processes exist (a /proc scan every 5 ms); then SIGTERM it and check
no child survived.  Rows: a trio_overseer script, the trio_overseer CLI (when
it exists), a raw Trio script, supervisord, circus, honcho.

Checks: every proc running at the end of the window, all gone afterwards, no
survivor, no zombie.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks._common import Check, measure, start_raw_sleeper, start_sleepers, states
from benchmarks._peers import SLEEP_SECONDS, launch_until_children
from benchmarks._spec import Bench, Target, Variant

N = 100


def plan(quick: bool) -> Bench:
    p = {"n": N}
    outside = 1 if quick else 3
    variants = [
        Variant(
            "ovr_start", "trio_overseer open_overseer + start() each", "candidate", "m_ovr_start", p
        ),
        Variant(
            "ovr_all", "trio_overseer supervise_all + wait_for_state", "candidate", "m_ovr_all", p
        ),
        Variant("trio", "raw Trio nursery.start(run_process) each", "baseline", "m_trio", p),
    ]
    for key, label, role in [
        ("ovr-script", "from launch: trio_overseer script", "candidate"),
        ("cli", "from launch: trio_overseer CLI", "candidate"),
        ("trio-script", "from launch: raw Trio script", "info"),
        ("supervisord", "from launch: supervisord", "peer"),
        ("circus", "from launch: circus", "peer"),
        ("honcho", "from launch: honcho", "peer"),
    ]:
        variants.append(
            Variant(key, label, role, "m_launch", {"n": N, "which": key}, rounds=outside)
        )
    targets = [
        Target("start() each / raw Trio", "ovr_start", "trio", "<=", 1.2),
        Target("supervise_all / raw Trio", "ovr_all", "trio", "<=", 1.2),
    ]
    for subject in ("ovr-script", "cli"):
        for peer in ("supervisord", "circus", "honcho"):
            name = "script" if subject == "ovr-script" else "CLI"
            targets.append(
                Target(f"from launch: trio_overseer {name} / {peer}", subject, peer, "<", 1.0)
            )
    return Bench(
        name="start",
        title=f"start {N} sleepers until all are running",
        unit="s",
        higher_is_better=False,
        variants=variants,
        targets=targets,
        rounds=3 if quick else 5,
    )


def m_launch(p: dict[str, Any]) -> dict[str, Any]:
    return launch_until_children(p["which"], p["n"])


def m_ovr_start(p: dict[str, Any]) -> dict[str, Any]:
    import trio_overseer
    from trio_overseer import State

    n = p["n"]

    async def main(check: Check) -> dict[str, Any]:
        async with trio_overseer.open_overseer() as ovr:
            t0 = time.perf_counter()
            ids = await start_sleepers(ovr, n, ("sleep", SLEEP_SECONDS))
            elapsed = time.perf_counter() - t0
            check.expect(states(ovr, ids) == {State.RUNNING}, f"states {states(ovr, ids)}")
        ends = states(ovr, ids)
        check.expect(ends == {State.INTERRUPTED}, f"after the block: {ends}")
        return check.result(elapsed)

    return measure(main)


def m_ovr_all(p: dict[str, Any]) -> dict[str, Any]:
    import trio

    import trio_overseer
    from trio_overseer import State

    n = p["n"]

    async def main(check: Check) -> dict[str, Any]:
        ovr = trio_overseer.Overseer()
        ids = [f"s{i}" for i in range(n)]
        async with trio.open_nursery() as nursery:
            t0 = time.perf_counter()
            for id in ids:
                ovr.add(id, "sleep", [SLEEP_SECONDS])
            nursery.start_soon(ovr.supervise_all)
            for id in ids:
                await ovr.wait_for_state(id, State.RUNNING, timeout=30)
            elapsed = time.perf_counter() - t0
            ovr.stop_all()
        ends = states(ovr, ids)
        check.expect(ends == {State.INTERRUPTED}, f"after stop_all: {ends}")
        return check.result(elapsed)

    return measure(main)


def m_trio(p: dict[str, Any]) -> dict[str, Any]:
    import trio

    n = p["n"]

    async def main(check: Check) -> dict[str, Any]:
        procs: list[Any] = []
        async with trio.open_nursery() as nursery:
            t0 = time.perf_counter()
            for _ in range(n):
                procs.append(await start_raw_sleeper(nursery, SLEEP_SECONDS))
            elapsed = time.perf_counter() - t0
            check.expect(all(proc.returncode is None for proc in procs), "a sleeper ended early")
            nursery.cancel_scope.cancel()
        codes = {proc.returncode for proc in procs}
        check.expect(codes == {-15}, "a sleeper did not end by SIGTERM")
        return check.result(elapsed)

    return measure(main)
