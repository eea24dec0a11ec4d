"""Profile a trio_overseer hot path: ``python -m benchmarks.profile WHAT [--n N]``.

WHAT is one of ``logs-batched``, ``logs-lines`` (``seq N`` through
``watch_logs``), ``spawn`` (N ``/bin/true`` supervised one after the other)
or ``stop`` (``stop_all()`` of N sleepers).  Only the measured part is
profiled, with pyinstrument (``pip install pyinstrument``) in
``async_mode="disabled"`` so that every Trio task shows up, not only the one
that started the profiler.  Prints the wall time, the parent's CPU per item
and the profile.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

from benchmarks._common import cpu_seconds

DEFAULT_N = {"logs-batched": 2_000_000, "logs-lines": 2_000_000, "spawn": 500, "stop": 100}


async def _logs(n: int, batched: bool, profiler: Any) -> None:
    import trio

    import trio_overseer

    async def consume(recv: Any) -> None:
        count = 0
        try:
            while True:
                msg = await recv.receive()
                count += len(msg) if batched else 1
                while True:
                    try:
                        msg = recv.receive_nowait()
                    except trio.WouldBlock:
                        break
                    count += len(msg) if batched else 1
        except trio.EndOfChannel:
            pass
        assert count == n, f"{count} lines, expected {n}"

    send, recv = trio.open_memory_channel[Any](math.inf)
    async with trio_overseer.open_overseer() as ovr:
        ovr.watch_logs(send, batched=batched)
        ovr.add("gen", "seq", [str(n)])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume, recv)
            profiler.start()
            await ovr.supervise("gen")
            send.close()
        profiler.stop()


async def _spawn(n: int, profiler: Any) -> None:
    import trio_overseer

    async with trio_overseer.open_overseer() as ovr:
        profiler.start()
        for i in range(n):
            ovr.add(f"t{i}", "/bin/true")
            await ovr.supervise(f"t{i}")
        profiler.stop()


async def _stop(n: int, profiler: Any) -> None:
    import trio

    import trio_overseer
    from trio_overseer import State

    async with trio_overseer.open_overseer() as ovr:
        ids = [f"s{i}" for i in range(n)]
        for id in ids:
            ovr.add(id, "sleep", ["1000"])
            await ovr.start(id)
        await trio.sleep(0.2)
        profiler.start()
        ovr.stop_all()
        for id in ids:
            await ovr.wait_for_state(id, State.INTERRUPTED, State.FINISHED, State.FATAL)
        profiler.stop()


class _Clock:
    """Wraps the profiler: also times the profiled part (wall and CPU)."""

    def __init__(self, profiler: Any) -> None:
        self.profiler = profiler
        self.wall = self.cpu = 0.0

    def start(self) -> None:
        self.profiler.start()
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()

    def stop(self) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, cpu_seconds() - self.cpu
        self.profiler.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("what", choices=sorted(DEFAULT_N))
    parser.add_argument("--n", type=int, help="how many lines/procs")
    parser.add_argument("--interval", type=float, default=0.0005, help="sampling interval, s")
    args = parser.parse_args(argv)
    try:
        from pyinstrument import Profiler
    except ImportError:
        print("pyinstrument is needed: pip install pyinstrument", file=sys.stderr)
        return 2
    import trio

    n = args.n or DEFAULT_N[args.what]
    clock = _Clock(Profiler(interval=args.interval, async_mode="disabled"))
    if args.what.startswith("logs"):
        trio.run(_logs, n, args.what == "logs-batched", clock)
    elif args.what == "spawn":
        trio.run(_spawn, n, clock)
    else:
        trio.run(_stop, n, clock)
    print(clock.profiler.output_text(unicode=True))
    print(
        f"{args.what}: {n:,} in {clock.wall:.3f} s wall, "
        f"{clock.cpu / n * 1e9:,.0f} ns of parent CPU each (with the profiler's overhead)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
