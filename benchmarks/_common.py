"""What every benchmark shares: the tag, the survivor scan, CPU and memory readings.

Every measurement runs in a fresh worker process whose environment carries a
unique tag (``TRIO_OVERSEER_BENCH_TAG=<hex>``); every child and grandchild
inherits it (peers are given it in their config as well), so after the
measurement a scan of ``/proc/*/environ`` finds any process that was left
behind, whoever started it.

This module imports nothing heavy (no trio, and of trio_overseer only the
lazy package and its pure `_procfs`, which reads /proc for the library too),
so that the memory benchmark's baseline process does not pay for the
candidate's imports.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from trio_overseer import _procfs

TAG_VAR = "TRIO_OVERSEER_BENCH_TAG"
RESULT_MARK = "BENCH-RESULT "
ROUND_VAR = "TRIO_OVERSEER_BENCH_ROUND"  # 1 for the first round of a variant


def first_round() -> bool:
    """Whether this measurement is its variant's first (for once-per-variant checks)."""
    return os.environ.get(ROUND_VAR, "1") == "1"


def tag() -> str:
    """The tag of the current measurement (set by the runner)."""
    return os.environ.get(TAG_VAR, "")


def tagged_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of this process's environment (which holds the tag) plus `extra`."""
    env = dict(os.environ)
    if extra:
        env.update(extra)
    return env


# -- /proc scanning (through the library's one reader of /proc) ---------------


def tagged_pids(value: str, exclude: Iterable[int] = ()) -> list[int]:
    """Live (not zombie) processes whose environment holds the tag `value`."""
    if not value:
        return []
    found = _procfs.tagged(TAG_VAR, [value.encode()], exact=True, exclude=set(exclude))
    return [pid for pid in found.get(value.encode(), []) if _procfs.alive(pid)]


def my_zombies() -> list[int]:
    """Children of this process that exited and were never reaped."""
    return _procfs.zombies_of(os.getpid())


def describe(pid: int) -> str:
    return _procfs.describe(pid, 80)


def kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait up to `timeout` s for `pids` to disappear (or turn zombie); return the rest."""
    left = list(pids)
    deadline = time.monotonic() + timeout
    while left:
        left = [pid for pid in left if _procfs.alive(pid)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return left


class SleeperCounter:
    """Counts the tagged processes named `comm` (e.g. ``sleep``), cheaply and repeatedly.

    Used to tell, from outside, when a supervisor (ours or a peer) has all
    its children: a pid found tagged and running `comm` stays counted while
    it exists; other pids are looked at again on every scan (they may exec).
    """

    def __init__(self, value: str, comm: bytes = b"sleep") -> None:
        self._needle = f"{TAG_VAR}={value}\0".encode()
        self._comm = comm + b"\n"
        self._found: set[int] = set()

    def count(self) -> int:
        live = set()
        for pid in _procfs.pids():
            if pid in self._found:
                live.add(pid)
                continue
            if _procfs.read(pid, "comm") != self._comm:
                continue
            if self._needle in (_procfs.read(pid, "environ") or b""):
                live.add(pid)
        self._found = live
        return len(live)


# -- readings ------------------------------------------------------------------


def cpu_seconds() -> float:
    """User + system CPU of this process (all its threads) so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def children_cpu_seconds() -> float:
    """User + system CPU of this process's reaped children (and theirs) so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def rss_kib() -> int:
    """Current resident set size (VmRSS) of this process, KiB."""
    return proc_rss_kib("self")


def raise_nofile() -> None:
    """Raise the soft limit of open files to the hard limit (1000 procs need ~3000 fds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- results -------------------------------------------------------------------


class Check:
    """Collects what went wrong in a measurement; a non-empty list fails the row."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def expect(self, ok: bool, what: str) -> None:
        if not ok:
            self.problems.append(what)

    def no_survivors(self, grace: float = 0.5) -> None:
        """Every tagged process but this one is gone; none of our children is a zombie."""
        left = wait_gone(tagged_pids(tag()), grace)
        if left:
            self.problems.append(
                f"{len(left)} survivor(s): " + "; ".join(describe(p) for p in left[:3])
            )
            kill_all(left)
            wait_gone(left, 5.0)
        zombies = my_zombies()
        if zombies:
            self.problems.append(f"{len(zombies)} unreaped child(ren) (zombies)")

    def result(self, value: float | None, **extra: Any) -> dict[str, Any]:
        return {"value": value, "problems": self.problems, "extra": extra}


def measure(main: Callable[[Check], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """The frame of a measurement: ``main(check)`` runs in a fresh Trio run and
    returns its result (``check.result(...)``); then nothing it started may be
    left (`Check.no_survivors`)."""
    import trio

    check = Check()
    result = trio.run(main, check)
    check.no_survivors()
    return result


async def start_sleepers(ovr: Any, n: int, argv: Sequence[str] = ("sleep", "1000")) -> list[str]:
    """Add and start `n` procs ``s0`` .. running `argv`; their ids."""
    ids = [f"s{i}" for i in range(n)]
    for id in ids:
        ovr.add(id, argv[0], list(argv[1:]))
        await ovr.start(id)
    return ids


def states(ovr: Any, ids: Iterable[str]) -> set[Any]:
    """The states the procs `ids` are in."""
    return {ovr.status(id).state for id in ids}


def skip(note: str) -> dict[str, Any]:
    """The result of a measurement that cannot run here (a missing peer, no CLI)."""
    return {"skip": note}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- helper processes (e.g. a supervisor's watchdog) ----------------------------


def helper_pids(skip_comm: bytes = b"sleep") -> list[int]:
    """Tagged live processes other than this one that are not the workload (`skip_comm`)."""
    return [p for p in tagged_pids(tag()) if (_procfs.read(p, "comm") or b"").strip() != skip_comm]


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU of another process (clock-tick resolution), 0.0 if gone."""
    stat = _procfs.stat(pid)
    return stat.cpu_ticks / os.sysconf("SC_CLK_TCK") if stat is not None else 0.0


def proc_rss_kib(pid: int | str) -> int:
    """The resident set size (VmRSS) of `pid` (or ``"self"``), KiB; 0 if gone."""
    return int(_procfs.status_value(pid, "VmRSS") or 0)


async def start_raw_sleeper(nursery: Any, seconds: str = "1000") -> Any:
    """The raw-Trio baseline of one supervised sleeper: ``run_process`` in its own
    process group, output captured, as trio_overseer does it."""
    import functools
    import subprocess

    import trio

    return await nursery.start(
        functools.partial(
            trio.run_process,
            ["sleep", seconds],
            check=False,
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            process_group=0,
        )
    )


async def timed_stop_all(ovr: Any, ids: list[str], check: Check, exit_code: int) -> float:
    """``stop_all()`` until every proc reached a final state; check they were
    interrupted with `exit_code`; return the seconds it took."""
    from trio_overseer import State

    final = (State.INTERRUPTED, State.FINISHED, State.FATAL)
    t0 = time.perf_counter()
    ovr.stop_all()
    for id in ids:
        await ovr.wait_for_state(id, *final, timeout=30)
    elapsed = time.perf_counter() - t0
    infos = [ovr.status(id) for id in ids]
    check.expect(
        all(i.state is State.INTERRUPTED for i in infos),
        f"states {sorted({i.state.value for i in infos})}",
    )
    check.expect(
        all(i.exit_code == exit_code for i in infos),
        f"exit codes {sorted({i.exit_code for i in infos})}",
    )
    return elapsed
