"""Fault injection: the OS refuses, children misbehave; the Overseer names the cause and goes on.

Every test runs a well-behaved proc, ``other``, next to the faulty one, and
checks at the end that ``other`` is still supervised: it answers a signal
with a line, and stops cleanly.  Faults that need lowered limits (no fds
left, no processes left) run in a subprocess, so the limits and the fd
exhaustion stay there; the scenario is a function of this module, run by
``child_main()`` in that subprocess, which prints its findings as JSON.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
from children import EXIT_0, FINAL, PRINT_SIGNALS, PY, T, tagged_env
from zoo import (
    CLOSE_STDOUT_EARLY,
    FORK_BOMB,
    MARK_VAR,
    NO_NEWLINE_FOREVER,
    SH_PRINT_SIGNALS,
    marked_pids,
    tasks_of_user,
)

from trio_overseer import (
    STDERR,
    STDOUT,
    LogBatch,
    LogMsg,
    Overseer,
    ProcessInfo,
    State,
    open_overseer,
)

TESTS = Path(__file__).parent
NOBODY = 65534


@contextlib.asynccontextmanager
async def with_other(
    exec: str = PY, args: Sequence[str] = PRINT_SIGNALS, **options: Any
) -> AsyncIterator[Overseer]:
    """An Overseer supervising ``other``, which must still be supervised at the end."""
    options.setdefault("stop_timeout", 1.0)
    async with open_overseer(handle_signals=False, **options) as ovr:
        ovr.add("other", exec, args)
        with trio.fail_after(T):
            await ovr.start("other")
            await ovr.wait_for_log("other", "^ready$")
        yield ovr
        with trio.fail_after(T):
            await still_supervised(ovr, signal.SIGUSR2)
            ovr.stop("other")
            final = await ovr.wait_for_state("other", *FINAL)
        assert (final.state, final.exit_code) == (State.INTERRUPTED, -signal.SIGTERM), final


async def still_supervised(ovr: Overseer, sig: int) -> None:
    """``other`` runs, and its line in answer to `sig` gets through."""
    assert ovr.status("other").state is State.RUNNING, ovr.status("other")
    ovr.signal("other", sig)
    await ovr.wait_for_log("other", f"^got {signal.Signals(sig).name}$")


async def start_fatal(ovr: Overseer, id: str) -> ProcessInfo:
    """Start `id`, which must not start: the info of its fatal run."""
    with trio.fail_after(T):
        info = await ovr.start(id)
    assert info.state is State.FATAL, info
    assert info.pid == 0, info
    assert info.exit_code == -1, info
    assert ovr.status(id).state is State.FATAL
    return info


# --- in a subprocess: no fds left, no processes left ----------------------------------------


def run_scenario(name: str) -> dict[str, Any]:
    """Run ``SCENARIOS[name]`` in a fresh Python; return what it found."""
    code = "import test_faults; test_faults.child_main()"  # -c: the cwd is on sys.path
    proc = subprocess.run(
        [PY, "-c", code, name], capture_output=True, text=True, timeout=120, cwd=TESTS
    )
    assert proc.returncode == 0, f"scenario {name} failed:\n{proc.stdout}\n{proc.stderr}"
    results = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert results, f"scenario {name} said nothing:\n{proc.stdout}\n{proc.stderr}"
    result: dict[str, Any] = json.loads(results[-1].removeprefix("RESULT "))
    return result


def child_main() -> None:
    """Entry point of the scenario subprocess."""
    print("RESULT " + json.dumps(trio.run(SCENARIOS[sys.argv[1]])), flush=True)


async def scenario_no_fds_left() -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
    found: dict[str, Any] = {}
    async with with_other() as ovr:
        ovr.add("victim", PY, EXIT_0)
        ovr.add("pty_victim", PY, EXIT_0, pty=True)
        ovr.add("sleeper", PY, PRINT_SIGNALS)
        ovr.add("pty_sleeper", PY, PRINT_SIGNALS, pty=True)
        with trio.fail_after(T):
            await ovr.start("sleeper")
            await ovr.wait_for_log("sleeper", "^ready$")
            await ovr.start("pty_sleeper")
            await ovr.wait_for_log("pty_sleeper", "^ready$")
        hog = []
        try:
            refused = None
            while refused is None:  # every fd, until the OS says no
                try:
                    hog.append(os.open(os.devnull, os.O_RDONLY))
                except OSError as exc:
                    refused = exc
            assert refused.errno == errno.EMFILE, refused
            found["hogged"] = len(hog)
            found["fatal"] = (await start_fatal(ovr, "victim")).error
            found["pty_fatal"] = (await start_fatal(ovr, "pty_victim")).error
            # One fd free: openpty gets its master, not its slave; the master
            # must not leak (the free fd is free again after).
            os.close(hog.pop())
            found["pty_fatal_one_free"] = (await start_fatal(ovr, "pty_victim")).error
            hog.append(os.open(os.devnull, os.O_RDONLY))
            with trio.fail_after(T):
                await still_supervised(ovr, signal.SIGUSR1)
                ovr.stop("sleeper")  # stopping needs no new fd
                final = await ovr.wait_for_state("sleeper", *FINAL)
                ovr.signal("pty_sleeper", signal.SIGUSR1)  # its pty still flows
                await ovr.wait_for_log("pty_sleeper", "^got SIGUSR1$")
                ovr.stop("pty_sleeper")
                pty_final = await ovr.wait_for_state("pty_sleeper", *FINAL)
            found["sleeper"] = [final.state.value, final.exit_code]
            found["pty_sleeper"] = [pty_final.state.value, pty_final.exit_code]
        finally:
            for fd in hog:
                os.close(fd)
        with trio.fail_after(T):  # fds are back: it starts again
            found["after"] = await ovr.supervise("victim")
            found["pty_after"] = await ovr.supervise("pty_victim")
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return found


async def scenario_no_processes_left() -> dict[str, Any]:
    # RLIMIT_NPROC binds no process with CAP_SYS_RESOURCE or CAP_SYS_ADMIN, nor
    # root: run as nobody.  Everything Python needs is imported by now; the
    # children are /bin/sh and /bin/true, which nobody may run.
    if os.getuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    found: dict[str, Any] = {"uid": os.getuid()}
    async with with_other("/bin/sh", SH_PRINT_SIGNALS) as ovr:
        ovr.add("victim", "/bin/true")
        soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
        resource.setrlimit(resource.RLIMIT_NPROC, (tasks_of_user(os.getuid()), hard))
        try:
            found["fatal"] = (await start_fatal(ovr, "victim")).error
            with trio.fail_after(T):
                await still_supervised(ovr, signal.SIGUSR1)
        finally:
            resource.setrlimit(resource.RLIMIT_NPROC, (soft, hard))
        with trio.fail_after(T):  # processes are allowed again: it starts
            found["after"] = await ovr.supervise("victim")
    return found


SCENARIOS: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
    "no_fds_left": scenario_no_fds_left,
    "no_processes_left": scenario_no_processes_left,
}


def test_no_fds_left() -> None:
    found = run_scenario("no_fds_left")
    assert found["hogged"] > 100
    assert "Too many open files" in found["fatal"], found
    assert found["sleeper"] == ["interrupted", -signal.SIGTERM]
    assert found["after"] == 0
    for fatal in (found["pty_fatal"], found["pty_fatal_one_free"]):
        assert "no pseudo-terminal could be opened for pty=True" in fatal, found
        assert "Too many open files" in fatal, found
        assert "RLIMIT_NOFILE" in fatal, found
    assert found["pty_sleeper"] == ["interrupted", -signal.SIGTERM]
    assert found["pty_after"] == 0


def _can_become_nobody() -> bool:
    if os.getuid() != 0:
        return True  # RLIMIT_NPROC binds us as we are
    probe = subprocess.run(
        [PY, "-c", f"import os; os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.skipif(
    not _can_become_nobody(),
    reason="RLIMIT_NPROC does not bind root, and this root cannot setuid() to nobody",
)
def test_no_processes_left() -> None:
    found = run_scenario("no_processes_left")
    assert found["uid"] != 0
    assert "Resource temporarily unavailable" in found["fatal"], found
    assert found["after"] == 0


# --- misbehaving children -------------------------------------------------------------------


async def test_child_closes_stdout_early() -> None:
    """EOF on stdout is not the end of the run: stderr goes on, the exit is waited for."""
    async with with_other() as ovr:
        send, recv = trio.open_memory_channel[LogMsg](1000)
        ovr.watch_logs(send)
        ovr.add("closer", PY, CLOSE_STDOUT_EARLY)
        with trio.fail_after(T):
            await ovr.start("closer")
            await ovr.wait_for_log("closer", "^stdout closed$")
            await still_supervised(ovr, signal.SIGUSR1)
            assert ovr.status("closer").state is State.RUNNING
            ovr.signal("closer", signal.SIGUSR1)
            final = await ovr.wait_for_state("closer", *FINAL)
        assert (final.state, final.exit_code, final.error) == (State.FINISHED, 3, None)
        lines = []
        while True:
            try:
                msg = recv.receive_nowait()
            except trio.WouldBlock:
                break
            if msg.id == "closer":
                lines.append((msg.type, msg.text))
        # Two pipes: order holds within a stream, not across them.
        assert [text for kind, text in lines if kind == STDOUT] == ["before"]
        assert [text for kind, text in lines if kind == STDERR] == ["stdout closed", "bye"]


async def test_output_without_newlines_forever() -> None:
    """Lines are cut at line_buffer_size (16384 bytes for Overseer procs); stop() works."""
    async with with_other() as ovr:
        send, recv = trio.open_memory_channel[LogBatch](float("inf"))
        ovr.watch_logs(send, batched=True)
        ovr.add("flood", PY, NO_NEWLINE_FOREVER, stop_timeout=1.0)
        with trio.fail_after(T):
            await ovr.start("flood")
            texts: list[str] = []
            while len(texts) < 64:  # 1 MiB
                texts += [msg.text for msg in await recv.receive() if msg.id == "flood"]
            ovr.stop("flood")
            final = await ovr.wait_for_state("flood", *FINAL)
        assert (final.state, final.exit_code) == (State.INTERRUPTED, -signal.SIGTERM), final
        assert final.error == "signal: SIGTERM"
        while True:
            try:
                texts += [msg.text for msg in recv.receive_nowait() if msg.id == "flood"]
            except trio.WouldBlock:
                break
        *whole, last = texts
        assert all(text == "x" * 16384 for text in whole)
        assert 0 < len(last) <= 16384
        assert set(last) == {"x"}


async def test_fork_bomb_leaves_no_survivor() -> None:
    """Children forked faster than the stop, some escaping with setsid(): none survives."""
    mark = uuid.uuid4().hex
    async with with_other(stop_timeout=0.5) as ovr:
        ovr.add("bomb", PY, FORK_BOMB(200), env=tagged_env(**{MARK_VAR: mark}))
        with trio.fail_after(T):
            await ovr.start("bomb")
            await ovr.wait_for_log("bomb", "^ready$")
            leader = ovr.status("bomb").pid
            forked = marked_pids(mark)  # it is forking still
            escaped = [pid for pid in forked if _session(pid) not in (leader, None)]
            ovr.stop("bomb")
            final = await ovr.wait_for_state("bomb", *FINAL)
        assert (final.state, final.exit_code) == (State.INTERRUPTED, -signal.SIGKILL), final
        assert escaped, f"none of {forked} had escaped when the stop came"
        assert marked_pids(mark) == [], "the bomb's children survived its stop"
        await still_supervised(ovr, signal.SIGUSR1)


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except ProcessLookupError:
        return None


async def test_cwd_removed_between_add_and_start(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    async with with_other() as ovr:
        ovr.add("lost", PY, EXIT_0, dir=gone)
        gone.rmdir()
        info = await start_fatal(ovr, "lost")
        assert str(gone) in str(info.error), info
        assert "No such file or directory" in str(info.error), info
        await still_supervised(ovr, signal.SIGUSR1)


async def test_executable_replaced_by_a_directory(tmp_path: Path) -> None:
    prog = tmp_path / "prog"
    prog.write_text("#!/bin/sh\nexit 0\n")
    prog.chmod(0o755)
    async with with_other() as ovr:
        ovr.add("prog", str(prog))
        with trio.fail_after(T):
            assert await ovr.supervise("prog") == 0  # it did run, once
        prog.unlink()
        prog.mkdir()
        info = await start_fatal(ovr, "prog")
        assert str(prog) in str(info.error), info
        assert "Permission denied" in str(info.error), info
        await still_supervised(ovr, signal.SIGUSR1)


async def test_environment_too_large_for_exec() -> None:
    # One string above MAX_ARG_STRLEN (32 pages): execve() says E2BIG.
    big = tagged_env(BIG="x" * (256 * 1024))
    async with with_other() as ovr:
        ovr.add("big", PY, EXIT_0, env=big)
        info = await start_fatal(ovr, "big")
        assert "Argument list too long" in str(info.error), info
        await still_supervised(ovr, signal.SIGUSR1)
