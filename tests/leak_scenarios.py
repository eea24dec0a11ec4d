"""Leak scenarios: a program starts misbehaving children, then ends in some way.

Used by test_leaks.py (trio_overseer must leave nothing behind), and runnable
as a script that prints, for each scenario, how many processes survive with
raw ``trio.run_process`` ("before") and with trio_overseer ("after")::

    python tests/leak_scenarios.py

Each scenario runs a program (`PROGRAM`) in a subprocess. Every process it
starts carries ``LEAK_MARK=<mark>:<kind>`` in its environment, inherited by all
descendants, so survivors are counted by scanning ``/proc/*/environ``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid

import children

#: The children: what each one does, and how many processes it makes.
KINDS: dict[str, tuple[str, int]] = {
    "sleeper": ("import time; time.sleep(600)", 1),
    "grandchild ignoring SIGTERM in the group": (
        "import os, signal, time\n"
        "if os.fork() == 0:\n"
        "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "    time.sleep(600)\n"
        "    os._exit(0)\n"
        "time.sleep(600)\n",
        2,
    ),
    "double-forked grandchild": (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(600)\n"
        "    os._exit(0)\n"
        "time.sleep(600)\n",
        2,
    ),
    "setsid grandchild": (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(600)\n"
        "    os._exit(0)\n"
        "time.sleep(600)\n",
        2,
    ),
    "child ignoring SIGTERM": (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)",
        1,
    ),
    "child closing its stdout": ("import os, time; os.close(1); os.close(2); time.sleep(600)", 1),
}

EXPECTED = sum(n for _, n in KINDS.values())

#: How the program ends: in its own body, or by a signal the test sends.
INTERNAL_WAYS = ["normal end", "exception", "cancellation", "KeyboardInterrupt"]
SIGNAL_WAYS = {"SIGTERM": signal.SIGTERM, "SIGHUP": signal.SIGHUP, "SIGINT": signal.SIGINT}
WAYS = [*INTERNAL_WAYS, *SIGNAL_WAYS, "SIGKILL"]

PROGRAM = r"""
import os, sys, time, trio
from functools import partial

MODE, WAY, MARK = sys.argv[1:4]
KINDS = eval(sys.argv[4])
EXPECTED = sum(n for _, n in KINDS.values())


def marked() -> int:
    from trio_overseer import _procfs

    return len(_procfs.tagged("LEAK_MARK", [f"{MARK}:".encode()]).get(f"{MARK}:".encode(), []))


async def all_up() -> None:
    with trio.fail_after(20):
        while marked() < EXPECTED:
            await trio.sleep(0.02)
    print("ready", flush=True)


async def end_in_body(scope: trio.CancelScope) -> None:
    if WAY == "normal end":
        return
    if WAY == "exception":
        raise RuntimeError("boom")
    if WAY == "cancellation":
        scope.cancel()
        await trio.sleep_forever()
    if WAY == "KeyboardInterrupt":
        raise KeyboardInterrupt
    await trio.sleep_forever()  # a signal from outside ends it


def env(kind: str) -> dict[str, str]:
    return {**os.environ, "LEAK_MARK": f"{MARK}:{kind}"}


async def overseer() -> None:
    from trio_overseer import open_overseer

    with trio.CancelScope() as scope:
        async with open_overseer(stop_timeout=0.5) as ovr:
            for kind, (code, _) in KINDS.items():
                ovr.add(kind, sys.executable, ["-c", code], env=env(kind), pty=MODE == "pty")
                await ovr.start(kind)
            await all_up()
            await end_in_body(scope)


async def raw() -> None:
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            for kind, (code, _) in KINDS.items():
                argv = [sys.executable, "-c", code]
                nursery.start_soon(partial(trio.run_process, argv, env=env(kind)))
            await all_up()
            await end_in_body(scope)
            nursery.cancel_scope.cancel()


try:
    trio.run(raw if MODE == "raw" else overseer)
except (RuntimeError, KeyboardInterrupt):
    pass
"""


def marked_alive(mark: str) -> list[int]:
    """Living (not zombie) processes carrying `mark`."""
    return children.marked_pids("LEAK_MARK", f"{mark}:", prefix=True)


def survivors_after(mark: str, grace: float) -> list[int]:
    """The marked processes still alive once `grace` seconds have passed with some alive."""
    deadline = time.monotonic() + grace
    while (alive := marked_alive(mark)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return alive


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def run_scenario(mode: str, way: str, *, grace: float = 2.0) -> list[int]:
    """Run one scenario; return the pids that survived it (after killing them).

    `mode`: "raw" (trio.run_process), "overseer", or "pty" (the overseer, every
    proc with ``pty=True``).
    """
    mark = uuid.uuid4().hex
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "PYTHONPATH": os.path.dirname(here)}
    proc = subprocess.Popen(
        [sys.executable, "-c", PROGRAM, mode, way, mark, repr(KINDS)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"{mode}/{way}: the program did not get ready: {line!r}")
        if way in SIGNAL_WAYS:
            proc.send_signal(SIGNAL_WAYS[way])
        elif way == "SIGKILL":
            proc.kill()
        proc.wait(timeout=30)
        return survivors_after(mark, grace)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        kill_all(marked_alive(mark))


def main() -> None:
    print(f"{EXPECTED} processes per scenario ({', '.join(KINDS)})")
    print("| the program ends by | raw trio.run_process | trio_overseer |")
    print("| --- | --- | --- |")
    for way in WAYS:
        before = len(run_scenario("raw", way, grace=6.0))
        after = len(run_scenario("overseer", way))
        print(f"| {way} | {before} survive | {after} survive |", flush=True)


if __name__ == "__main__":
    main()
