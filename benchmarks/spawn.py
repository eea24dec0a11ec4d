"""spawn: start and reap N ``/bin/true``, one at a time and 50 at a time.

Candidate: ``Overseer.supervise`` inside an ``open_overseer`` block (one
``add`` + ``supervise`` per process, so each process is registered, started,
its output pipes read, its exit awaited and its state published).  An extra
row does the same with a bare ``Overseer()`` (no block), where every
``supervise`` that ends the last supervision also shuts the Overseer's
machinery down.  Baseline: ``trio.run_process`` with its
output captured (the same job by hand: spawn, read stdout/stderr, reap); an
extra row shows ``trio.run_process`` with output to /dev/null.

Metric: spawns per second (higher is better), plus the parent's CPU per
spawn (user + system of the whole parent process, all threads, from
``getrusage(RUSAGE_SELF)``).  Checks: every exit code is 0, no survivors,
no zombie.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

from benchmarks._common import Check, cpu_seconds
from benchmarks._spec import Bench, Target, Variant

TRUE = "/bin/true"


def plan(quick: bool) -> Bench:
    n = 100 if quick else 500
    variants = []
    for conc in (1, 50):
        mode = "sequential" if conc == 1 else f"{conc} at a time"
        p = {"n": n, "conc": conc}
        variants += [
            Variant(
                f"ovr{conc}", f"trio_overseer supervise in a block, {mode}", "candidate", "m_ovr", p
            ),
            Variant(f"trio{conc}", f"trio.run_process captured, {mode}", "baseline", "m_trio", p),
            Variant(
                f"devnull{conc}",
                f"trio.run_process to /dev/null, {mode}",
                "info",
                "m_trio",
                {**p, "devnull": True},
            ),
        ]
    variants.insert(
        1,
        Variant(
            "bare1",
            "trio_overseer supervise, bare Overseer(), sequential (100 procs)",
            "info",
            "m_ovr",
            {"n": 100, "conc": 1, "bare": True},  # slow: 100 are enough for its rate
            rounds=2 if quick else 3,
        ),
    )
    targets = []
    for conc in (1, 50):
        mode = "sequential" if conc == 1 else f"{conc} at a time"
        targets += [
            Target(
                f"{mode}: throughput / run_process captured", f"ovr{conc}", f"trio{conc}", ">=", 1.0
            ),
            Target(
                f"{mode}: throughput / run_process captured",
                f"ovr{conc}",
                f"trio{conc}",
                ">=",
                1.5,
                stretch=True,
            ),
            Target(
                f"{mode}: parent CPU per spawn / run_process captured",
                f"ovr{conc}",
                f"trio{conc}",
                "info",
                0.0,
                metric="cpu_us",
            ),
        ]
    return Bench(
        name="spawn",
        title=f"spawn + reap {n} {TRUE}",
        unit="/s",
        higher_is_better=True,
        variants=variants,
        targets=targets,
        rounds=2 if quick else 5,
        extras={"cpu_us": ("parent CPU/spawn", "µs")},
    )


async def _workers(n: int, conc: int, one: Any) -> None:
    import trio

    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await one(i)

    async with trio.open_nursery() as nursery:
        for _ in range(conc):
            nursery.start_soon(worker)


def m_ovr(p: dict[str, Any]) -> dict[str, Any]:
    import trio

    import trio_overseer

    n, conc, bare = p["n"], p["conc"], p.get("bare", False)
    check = Check()
    codes: list[int] = []

    async def run(ovr: trio_overseer.Overseer) -> None:
        async def one(i: int) -> None:
            ovr.add(f"t{i}", TRUE)
            codes.append(await ovr.supervise(f"t{i}"))

        await _workers(n, conc, one)

    async def main() -> None:
        if bare:
            await run(trio_overseer.Overseer())
        else:
            async with trio_overseer.open_overseer() as ovr:
                await run(ovr)

    t0, c0 = time.perf_counter(), cpu_seconds()
    trio.run(main)
    dt, dc = time.perf_counter() - t0, cpu_seconds() - c0
    check.expect(len(codes) == n, f"{len(codes)} of {n} runs returned")
    check.expect(all(c == 0 for c in codes), f"exit codes {sorted(set(codes))}, expected 0")
    check.no_survivors()
    return check.result(n / dt, cpu_us=dc / n * 1e6)


def m_trio(p: dict[str, Any]) -> dict[str, Any]:
    import trio

    n, conc = p["n"], p["conc"]
    devnull = p.get("devnull", False)
    check = Check()
    codes: list[int] = []

    async def one(i: int) -> None:
        if devnull:
            r = await trio.run_process(
                [TRUE],
                check=False,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        else:
            r = await trio.run_process(
                [TRUE],
                check=False,
                stdin=subprocess.DEVNULL,
                capture_stdout=True,
                capture_stderr=True,
            )
        codes.append(r.returncode)

    t0, c0 = time.perf_counter(), cpu_seconds()
    trio.run(_workers, n, conc, one)
    dt, dc = time.perf_counter() - t0, cpu_seconds() - c0
    check.expect(len(codes) == n, f"{len(codes)} of {n} runs returned")
    check.expect(all(c == 0 for c in codes), f"exit codes {sorted(set(codes))}, expected 0")
    check.no_survivors()
    return check.result(n / dt, cpu_us=dc / n * 1e6)
