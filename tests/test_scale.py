"""Scale: a thousand procs restarting at once, ten subscribers, nothing lost, nothing leaked."""

from __future__ import annotations

import collections
import contextlib
import gc
import math
import os
import resource
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import trio
from children import describe, my_zombies, tagged_pids

from trio_overseer import ProcessInfo, State, open_overseer

N = 1000
RETRIES = 2
RUNS = 1 + RETRIES
WATCHERS = 10
BUDGET = 60  # seconds, on 2 cores
SH = shutil.which("sh") or "/bin/sh"  # far cheaper than a Python child


def GATED_EXIT_1(gate: Path, go: Path) -> list[str]:
    """Exit 1; the first run only once it read a line from the FIFO `gate`."""
    return ["-c", f"[ -e '{go}' ] || read line < '{gate}'; exit 1"]


def fd_count() -> int:
    # Collect first: a bare Overseer dropped by an earlier test closes its
    # watchdog pipe only when it is garbage collected.
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


@contextlib.contextmanager
def raised_fd_limit() -> Iterator[None]:
    """Soft RLIMIT_NOFILE up to the hard limit (each running proc holds ~3 fds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_thousand_procs_restarting_with_ten_watchers(tag: str, tmp_path: Path) -> None:
    """Every proc's first run is held at a gate until all N run at once; then each
    exits 1 and is restarted twice.  Ten subscribers see every one of the events."""
    ids = [f"p{i:04d}" for i in range(N)]
    seen: list[dict[str, list[ProcessInfo]]] = [
        collections.defaultdict(list) for _ in range(WATCHERS)
    ]
    closed = [False] * WATCHERS
    gate, go = tmp_path / "gate", tmp_path / "go"
    os.mkfifo(gate)

    async def consume(index: int, recv: trio.MemoryReceiveChannel[ProcessInfo]) -> None:
        async with recv:
            async for info in recv:
                seen[index][info.id].append(info)
        closed[index] = True

    with raised_fd_limit():
        fds = fd_count()
        began = time.monotonic()
        # Read-write: opens at once, and keeps the FIFO's buffer alive.
        gate_fd = os.open(gate, os.O_RDWR)
        try:
            with trio.fail_after(BUDGET):
                # The Overseer's block exits first: it closes every subscriber
                # channel, so the consumers end.
                async with (
                    trio.open_nursery() as consumers,
                    open_overseer(
                        handle_signals=False, backoff_base=0.005, backoff_max=0.05, seed=1
                    ) as ovr,
                ):
                    for index in range(WATCHERS):
                        # Half unbounded, half bounded by exactly the total: never cut off.
                        size = math.inf if index % 2 else N * RUNS * 3
                        send, recv = trio.open_memory_channel[ProcessInfo](size)
                        ovr.watch_state(send)
                        consumers.start_soon(consume, index, recv)
                    for id in ids:
                        ovr.add(id, SH, GATED_EXIT_1(gate, go), retry_times=RETRIES)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(ovr.supervise_all)
                        for id in ids:
                            await ovr.wait_for_state(id, State.RUNNING)
                        running = sum(ovr.status(id).state is State.RUNNING for id in ids)
                        peak_fds = fd_count()
                        go.touch()  # later runs pass the gate at once
                        os.write(gate_fd, b"\n" * N)  # one line for each first run
                    assert not ovr.is_running()
        finally:
            os.close(gate_fd)
        elapsed = time.monotonic() - began
        survivors = tagged_pids(tag)
        assert not survivors, "; ".join(map(describe, survivors))
        assert not my_zombies()
        assert fd_count() == fds, f"{fds} fds before, {fd_count()} after"

    assert running == N
    assert peak_fds >= fds + 3 * N, (fds, peak_fds)  # two pipes and a pidfd each
    assert all(closed)
    for index, by_id in enumerate(seen):
        total = sum(map(len, by_id.values()))
        assert total == N * RUNS * 3, f"subscriber {index} saw {total} events"
        assert sorted(by_id) == ids
        for id, infos in by_id.items():
            states = [info.state for info in infos]
            assert states == [State.STARTING, State.RUNNING, State.FINISHED] * RUNS, (id, states)
            assert [info.restarts for info in infos] == [r for r in range(RUNS) for _ in "abc"]
            finals = infos[2::3]
            assert [info.exit_code for info in finals] == [1] * RUNS
            assert [info.restart_in is not None for info in finals] == [True] * RETRIES + [False]
    print(f"{N} procs at once x {RUNS} runs, {WATCHERS} watchers: {elapsed:.1f} s")
