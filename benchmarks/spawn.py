"""spawn: start and reap N ``/bin/true``, one at a time and 50 at a time.

Candidate: ``Overseer.supervise`` inside an ``open_overseer`` block (one
``add`` + ``supervise`` per process, so each process is registered, started,
its output pipes read, its exit awaited and its state published).  An extra
row does the same with a bare ``Overseer()`` (no block), where every
``supervise`` that ends the last supervision also shuts the Overseer's
machinery down.  Baseline: ``trio.run_process`` with its
output captured (the same job by hand: spawn, read stdout/stderr, reap); an
extra row shows ``trio.run_process`` with output to /dev/null.

Each is measured twice: on the machine as it is, and beside a CPU hog (a
process spinning on one core for the whole measurement: a busy machine,
where a spawn that blocks the event loop costs the most).

Metric: spawns per second (higher is better), plus the parent's CPU per
spawn (user + system of the whole parent process, all threads, from
``getrusage(RUSAGE_SELF)``).  Checks: every exit code is 0, no survivors,
no zombie.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from benchmarks._common import Check, cpu_seconds, tagged_env
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
    for conc in (1, 50):  # the same beside a CPU hog: a busy machine
        mode = "sequential" if conc == 1 else f"{conc} at a time"
        p = {"n": n, "conc": conc, "busy": True}
        variants += [
            Variant(
                f"ovr{conc}busy",
                f"trio_overseer supervise in a block, {mode}, beside a CPU hog",
                "candidate",
                "m_ovr",
                p,
            ),
            Variant(
                f"trio{conc}busy",
                f"trio.run_process captured, {mode}, beside a CPU hog",
                "baseline",
                "m_trio",
                p,
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
    for conc, busy in ((1, ""), (50, ""), (1, "busy"), (50, "busy")):
        mode = "sequential" if conc == 1 else f"{conc} at a time"
        if busy:
            mode += ", beside a CPU hog"
        ovr, trio = f"ovr{conc}{busy}", f"trio{conc}{busy}"
        targets += [
            Target(f"{mode}: throughput / run_process captured", ovr, trio, ">=", 1.0),
            Target(
                f"{mode}: throughput / run_process captured", ovr, trio, ">=", 1.5, stretch=True
            ),
            Target(
                f"{mode}: parent CPU per spawn / run_process captured",
                ovr,
                trio,
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


@contextlib.contextmanager
def _cpu_hog(busy: bool) -> Iterator[None]:
    """A process spinning on one core meanwhile (when `busy`): a busy machine."""
    if not busy:
        yield
        return
    hog = subprocess.Popen(
        [sys.executable, "-c", "print('spinning', flush=True)\nwhile True: pass"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        env=tagged_env(),
    )
    try:
        assert hog.stdout is not None
        hog.stdout.readline()  # it runs
        yield
    finally:
        hog.kill()
        hog.wait()
        if hog.stdout is not None:
            hog.stdout.close()


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
    # The package imports its modules on first use: do it before the clock.
    Overseer, open_overseer = trio_overseer.Overseer, trio_overseer.open_overseer

    async def run(ovr: Any) -> None:
        async def one(i: int) -> None:
            ovr.add(f"t{i}", TRUE)
            codes.append(await ovr.supervise(f"t{i}"))

        await _workers(n, conc, one)

    async def main() -> None:
        if bare:
            await run(Overseer())
        else:
            async with open_overseer() as ovr:
                await run(ovr)

    with _cpu_hog(p.get("busy", False)):
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

    with _cpu_hog(p.get("busy", False)):
        t0, c0 = time.perf_counter(), cpu_seconds()
        trio.run(_workers, n, conc, one)
        dt, dc = time.perf_counter() - t0, cpu_seconds() - c0
    check.expect(len(codes) == n, f"{len(codes)} of {n} runs returned")
    check.expect(all(c == 0 for c in codes), f"exit codes {sorted(set(codes))}, expected 0")
    check.no_survivors()
    return check.result(n / dt, cpu_us=dc / n * 1e6)
