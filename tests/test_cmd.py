"""Cmd: one real process, one run (exit codes, signals, groups, output)."""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
from children import (
    EXIT_0,
    EXIT_1,
    EXIT_42,
    FAIL_UNTIL,
    FINAL,
    IGNORE_SIGTERM,
    KILL_SELF,
    PRINT_BOTH,
    PRINT_CWD,
    PRINT_ENV,
    PRINT_LINES,
    PRINT_SIGNALS,
    PY,
    REPORT_SETUP,
    SLEEP_FOREVER,
    SPAWN_DETACHED_GRANDCHILD,
    SPAWN_GRANDCHILD,
    SPAWN_GRANDCHILD_EXIT_0,
    TRAP_SIGTERM_EXIT_0,
    WRITE_BYTES,
    WRITE_HEX,
    WRITE_REPEATED,
    Lines,
    T,
    exit_with,
    kill_quietly,
    pid_alive,
    tagged_env,
    wait_pid_gone,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_overseer import (
    Cmd,
    CmdAlreadyStartedError,
    OverseerError,
    State,
    Status,
)

#: Guard for anything awaited on a real process: generous, never a sync point.


async def run_collect(cmd: Cmd) -> tuple[Status, list[str], list[str]]:
    """Run a streaming ``cmd`` to its end, draining both channels until closed."""
    out, err = Lines(), Lines()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(out.pump_channel, cmd.stdout)
        nursery.start_soon(err.pump_channel, cmd.stderr)
        status = await cmd.run()
    return status, out.lines, err.lines


@asynccontextmanager
async def running(cmd: Cmd) -> AsyncIterator[Lines]:
    """Start streaming ``cmd`` and wait for its "ready" line; at exit wait for its end."""
    out = Lines()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(out.pump_channel, cmd.stdout)
        nursery.start_soon(Lines().pump_channel, cmd.stderr)
        await nursery.start(cmd.run)
        await out.wait_for("ready")
        yield out


def assert_final_status_consistent(status: Status) -> None:
    assert status.pid > 0
    assert status.start_ts > 0
    assert status.stop_ts >= status.start_ts
    assert status.runtime == pytest.approx(status.stop_ts - status.start_ts, abs=0.05)


# --- exits and Status ----------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 42])
async def test_exit_code(code: int) -> None:
    cmd = Cmd(PY, exit_with(code))
    before = time.time()
    with trio.fail_after(T):
        status = await cmd.run()
    after = time.time()
    assert status.exit == code
    assert status.error is None
    assert status.cmd == PY
    assert cmd.state is State.FINISHED
    assert cmd.is_final_state()
    assert not cmd.is_running_state()
    assert not cmd.is_initial_state()
    assert_final_status_consistent(status)
    assert before - 0.01 <= status.start_ts <= status.stop_ts <= after + 0.01
    assert cmd.status() == status


async def test_status_before_start() -> None:
    cmd = Cmd(PY, EXIT_0)
    status = cmd.status()
    assert (status.pid, status.exit, status.error) == (0, -1, None)
    assert (status.start_ts, status.stop_ts, status.runtime) == (0.0, 0.0, 0.0)
    assert (status.stdout, status.stderr) == ((), ())
    assert cmd.state is State.INITIAL
    assert cmd.is_initial_state()
    assert not cmd.is_running_state()
    assert not cmd.is_final_state()


async def test_status_is_frozen() -> None:
    status = Cmd(PY, EXIT_0).status()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        status.exit = 3  # type: ignore[misc]


async def test_nursery_start_reports_running() -> None:
    cmd = Cmd(PY, SLEEP_FOREVER, streaming=True)
    with trio.fail_after(T):
        async with running(cmd):
            assert cmd.state is State.RUNNING
            assert cmd.is_running_state()
            status = cmd.status()
            assert status.pid > 0
            assert pid_alive(status.pid)
            assert status.exit == -1
            assert status.stop_ts == 0.0
            # runtime is live while running
            await trio.sleep(0.05)
            assert cmd.status().runtime > status.runtime
            cmd.stop()
    assert cmd.status().exit == -signal.SIGTERM


async def test_runs_in_own_group_with_devnull_stdin() -> None:
    with trio.fail_after(T):
        status = await Cmd(PY, REPORT_SETUP).run()
    assert status.stdout == ("pgid==pid True", "stdin /dev/null", "stdin read ''")


async def test_killed_from_outside_is_interrupted() -> None:
    with trio.fail_after(T):
        status = await Cmd(PY, KILL_SELF).run()
    assert status.exit == -signal.SIGKILL
    assert status.error == "signal: SIGKILL"


# --- cannot start ----------------------------------------------------------------


async def check_fatal(cmd: Cmd, name: str, cause: str) -> None:
    async with trio.open_nursery() as nursery:
        with trio.fail_after(T):
            # reports "started" even though it failed, and does not raise
            await nursery.start(cmd.run)
        assert cmd.state is State.FATAL
    with trio.fail_after(T):
        status = await cmd.wait()
    assert cmd.is_final_state()
    assert status.exit == -1
    assert status.error is not None
    assert name in status.error, status.error
    assert cause in status.error, status.error


async def test_fatal_nonexistent_executable(tmp_path: Path) -> None:
    name = str(tmp_path / "no-such-program")
    await check_fatal(Cmd(name), name, "No such file or directory")


async def test_fatal_nonexistent_executable_direct_run(tmp_path: Path) -> None:
    name = str(tmp_path / "no-such-program")
    cmd = Cmd(name, ["arg"])
    with trio.fail_after(T):
        status = await cmd.run()
    assert cmd.state is State.FATAL
    assert status.exit == -1
    assert status.error is not None
    assert "No such file or directory" in status.error


async def test_fatal_not_executable(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    await check_fatal(Cmd(str(script)), str(script), "Permission denied")


async def test_fatal_nonexistent_dir(tmp_path: Path) -> None:
    await check_fatal(
        Cmd(PY, EXIT_0, dir=tmp_path / "no-such-dir"), PY, "No such file or directory"
    )


async def test_run_ignores_delay_start_and_retry_times(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    cmd = Cmd(PY, FAIL_UNTIL(counter, 5), delay_start=30, retry_times=3)
    with trio.fail_after(T):
        status = await cmd.run()
    assert status.exit == 1
    assert counter.read_text() == "1"  # ran once, at once


# --- one run per Cmd; clone; wait ---------------------------------------------------


async def test_run_twice_after_end_raises() -> None:
    cmd = Cmd(PY, EXIT_0)
    with trio.fail_after(T):
        await cmd.run()
    with pytest.raises(CmdAlreadyStartedError) as info:
        await cmd.run()
    assert isinstance(info.value, OverseerError)
    assert isinstance(info.value, RuntimeError)
    assert cmd.status().exit == 0


async def test_run_twice_while_running_raises() -> None:
    cmd = Cmd(PY, SLEEP_FOREVER, streaming=True)
    with trio.fail_after(T):
        async with running(cmd):
            with pytest.raises(CmdAlreadyStartedError):
                await cmd.run()
            assert cmd.state is State.RUNNING
            cmd.stop()


async def test_clone_has_same_options_fresh_state(tmp_path: Path) -> None:
    cmd = Cmd(
        PY,
        PRINT_ENV("FOO"),
        dir=tmp_path,
        env=tagged_env(FOO="cloned"),
        stop_timeout=0.5,
    )
    with trio.fail_after(T):
        first = await cmd.run()
    twin = cmd.clone()
    assert twin is not cmd
    assert twin.state is State.INITIAL
    assert twin.status().pid == 0
    with trio.fail_after(T):
        second = await twin.run()
    assert first.stdout == second.stdout == ("FOO=cloned",)
    assert second.pid != first.pid
    assert cmd.status() == first  # the original is untouched


async def test_clone_of_unstarted_cmd_runs() -> None:
    cmd = Cmd(PY, EXIT_42)
    with trio.fail_after(T):
        assert (await cmd.clone().run()).exit == 42
    assert cmd.state is State.INITIAL


async def test_wait_by_several_tasks() -> None:
    cmd = Cmd(PY, EXIT_42)
    results: list[Status] = []

    async def waiter() -> None:
        results.append(await cmd.wait())

    with trio.fail_after(T):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(waiter)  # waiting before the start
            await trio.testing.wait_all_tasks_blocked()
            ran = await cmd.run()
        late = await cmd.wait()  # after the end: at once
    assert len(results) == 3
    assert all(r == ran for r in results)
    assert late == ran
    assert ran.exit == 42


# --- stop / kill / signal ---------------------------------------------------------


async def test_stop_sends_sigterm() -> None:
    cmd = Cmd(PY, SLEEP_FOREVER, streaming=True)
    with trio.fail_after(T):
        async with running(cmd):
            cmd.stop()
            assert cmd.state is State.STOPPING
            assert cmd.is_running_state()
            cmd.stop()  # idempotent
            assert cmd.state is State.STOPPING
        status = await cmd.wait()
    assert cmd.state is State.INTERRUPTED
    assert status.exit == -signal.SIGTERM
    assert status.error == "signal: SIGTERM"
    assert_final_status_consistent(status)
    assert not pid_alive(status.pid)


async def test_stop_sets_retry_times_to_zero() -> None:
    cmd = Cmd(PY, SLEEP_FOREVER, streaming=True, retry_times=3)
    with trio.fail_after(T):
        async with running(cmd):
            assert cmd.retry_times == 3
            cmd.stop()
            assert cmd.retry_times == 0


async def test_stop_before_start_is_noop() -> None:
    cmd = Cmd(PY, EXIT_0)
    cmd.stop()
    cmd.kill()
    cmd.signal(signal.SIGUSR1)
    assert cmd.state is State.INITIAL
    with trio.fail_after(T):
        status = await cmd.run()
    assert status.exit == 0
    assert cmd.state is State.FINISHED


async def test_stop_after_end_is_noop() -> None:
    cmd = Cmd(PY, EXIT_1)
    with trio.fail_after(T):
        status = await cmd.run()
    cmd.stop()
    cmd.kill()
    cmd.signal(signal.SIGTERM)
    assert cmd.state is State.FINISHED
    assert cmd.status() == status


async def test_kill_is_immediate() -> None:
    cmd = Cmd(PY, IGNORE_SIGTERM, streaming=True, stop_timeout=60)
    with trio.fail_after(T):
        async with running(cmd):
            start = trio.current_time()
            cmd.kill()
            assert cmd.state is State.STOPPING
        status = await cmd.wait()
    assert trio.current_time() - start < 10  # not the 60 s stop_timeout
    assert cmd.state is State.INTERRUPTED
    assert status.exit == -signal.SIGKILL
    assert status.error == "signal: SIGKILL"


async def test_stop_escalates_to_sigkill_after_stop_timeout() -> None:
    cmd = Cmd(PY, IGNORE_SIGTERM, streaming=True, stop_timeout=0.5)
    with trio.fail_after(T):
        async with running(cmd):
            start = trio.current_time()
            cmd.stop()
        status = await cmd.wait()
    elapsed = trio.current_time() - start
    assert 0.45 <= elapsed < 10
    assert cmd.state is State.INTERRUPTED
    assert status.exit == -signal.SIGKILL
    assert status.error == "signal: SIGKILL"


async def test_stop_of_child_trapping_sigterm_is_finished() -> None:
    cmd = Cmd(PY, TRAP_SIGTERM_EXIT_0, streaming=True, stop_timeout=10)
    with trio.fail_after(T):
        async with running(cmd) as out:
            cmd.stop()
            await out.wait_for("got SIGTERM")
        status = await cmd.wait()
    assert cmd.state is State.FINISHED
    assert status.exit == 0
    assert status.error is None
    assert status.stdout == ("ready", "got SIGTERM")


async def test_custom_stop_signal() -> None:
    cmd = Cmd(PY, SLEEP_FOREVER, streaming=True, stop_signal=signal.SIGUSR1)
    with trio.fail_after(T):
        async with running(cmd):
            cmd.stop()
        status = await cmd.wait()
    assert status.exit == -signal.SIGUSR1
    assert status.error == "signal: SIGUSR1"


async def test_signal_sends_exactly_that_signal() -> None:
    cmd = Cmd(PY, PRINT_SIGNALS, streaming=True)
    with trio.fail_after(T):
        async with running(cmd) as out:
            cmd.signal(signal.SIGUSR1)
            await out.wait_for("got SIGUSR1")
            cmd.signal(signal.SIGUSR2)
            await out.wait_for("got SIGUSR2")
            assert cmd.state is State.RUNNING  # signal() is not a stop
            cmd.stop()
        status = await cmd.wait()
    assert status.stdout == ("ready", "got SIGUSR1", "got SIGUSR2")
    assert status.error == "signal: SIGTERM"


# --- process groups, cancellation, EOF ------------------------------------------------


async def test_cancelling_run_reaps_group_with_grandchild() -> None:
    cmd = Cmd(PY, SPAWN_GRANDCHILD, streaming=True, stop_timeout=0.5)
    out = Lines()
    with trio.fail_after(T):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(out.pump_channel, cmd.stdout)
            nursery.start_soon(Lines().pump_channel, cmd.stderr)
            await nursery.start(cmd.run)
            await out.wait_for("ready")
            nursery.cancel_scope.cancel()
    grandchild = int(out.lines[0])
    status = cmd.status()
    try:
        assert not pid_alive(status.pid)
        assert not pid_alive(grandchild), "the grandchild ignoring SIGTERM survived"
        assert cmd.is_final_state()
        assert status.exit < 0  # died of a signal
    finally:
        kill_quietly(grandchild)


async def test_cancelling_awaited_run() -> None:
    cmd = Cmd(PY, IGNORE_SIGTERM, streaming=True, stop_timeout=0.5)
    out = Lines()
    with trio.fail_after(T):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(out.pump_channel, cmd.stdout)
            with trio.CancelScope() as scope:

                async def canceller() -> None:
                    await out.wait_for("ready")
                    scope.cancel()

                nursery.start_soon(canceller)
                await cmd.run()
            assert scope.cancelled_caught
            # run() re-raised Cancelled only after the process was reaped
            status = cmd.status()
            assert cmd.state is State.INTERRUPTED
            assert not pid_alive(status.pid)
    assert status.error == "signal: SIGKILL"


async def test_cancelled_before_start() -> None:
    cmd = Cmd(PY, SLEEP_FOREVER, stop_timeout=0.5)
    with trio.fail_after(T), trio.CancelScope() as scope:
        scope.cancel()
        await cmd.run()
    assert scope.cancelled_caught
    assert not cmd.is_running_state()
    pid = cmd.status().pid
    assert pid == 0 or not pid_alive(pid)


async def test_leader_exit_kills_rest_of_group() -> None:
    cmd = Cmd(PY, SPAWN_GRANDCHILD_EXIT_0, streaming=True, stop_timeout=0.5)
    with trio.fail_after(T):
        status, out, _ = await run_collect(cmd)
    grandchild = int(out[0])
    try:
        assert not pid_alive(grandchild), "run() returned while its group lived on"
        assert cmd.state is State.FINISHED
        assert status.exit == 0
    finally:
        kill_quietly(grandchild)


SUBREAPER_PROGRAM = """
import ctypes, logging, sys
import trio
from trio_overseer import Cmd

logging.basicConfig(level=logging.WARNING)
PR_SET_CHILD_SUBREAPER = 36
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


async def main():
    cmd = Cmd(sys.executable, CHILD, stop_timeout=0.5)
    start = trio.current_time()
    status = await cmd.run()
    print("elapsed", trio.current_time() - start, flush=True)
    print("exit", status.exit, flush=True)


trio.run(main)
"""


async def test_dead_group_members_reparented_to_supervisor(tmp_path: Path) -> None:
    # An overseer running as PID 1 of a container (or as a subreaper) inherits
    # the orphans of its children.  Once SIGKILLed they are zombies of the
    # supervisor itself: dead, and the group is gone for every purpose.
    script = tmp_path / "subreaper.py"
    script.write_text(f"CHILD = {SPAWN_GRANDCHILD_EXIT_0!r}\n" + SUBREAPER_PROGRAM)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    with trio.fail_after(T):
        result = await trio.run_process(
            [PY, str(script)], capture_stdout=True, capture_stderr=True, env=env, check=False
        )
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, err
    lines = dict(line.split(" ", 1) for line in out.splitlines())
    assert lines["exit"] == "0"
    # stop_timeout 0.5 for the SIGTERM-ignoring grandchild, then SIGKILL
    assert float(lines["elapsed"]) < 2.0, (out, err)
    assert "survived SIGKILL" not in err, err


@asynccontextmanager
async def grandchild_of(cmd: Cmd) -> AsyncIterator[int]:
    """Run `cmd` (a SPAWN_DETACHED_GRANDCHILD) until the block's end; give the
    grandchild's pid once it is ready.  The grandchild is killed in any case."""
    out = Lines()
    grandchild = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(out.pump_channel, cmd.stdout)
            await nursery.start(cmd.run)
            await out.wait_for("ready")
            grandchild = int(out.lines[0])
            yield grandchild
    finally:
        if grandchild is not None:
            kill_quietly(grandchild)
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await wait_pid_gone(grandchild)


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_stop_does_not_wait_for_eof(how: str) -> None:
    # The detached grandchild, out of the library's reach, keeps stdout open
    # after the child has died: no EOF until the test kills it.
    cmd = Cmd(PY, SPAWN_DETACHED_GRANDCHILD(clean_env=True), streaming=True, stop_timeout=0.5)
    with trio.fail_after(T):
        async with grandchild_of(cmd) as grandchild:
            getattr(cmd, how)()
            with trio.fail_after(5):
                status = await cmd.wait()
            assert status.exit == (-signal.SIGTERM if how == "stop" else -signal.SIGKILL)
            assert pid_alive(grandchild), "precondition: the pipe is still held open"
            kill_quietly(grandchild)  # EOF at last: the pump can end


async def test_escaped_descendant_is_swept() -> None:
    # The grandchild left the process group (setsid) but inherited the
    # environment: the library finds it and ends it with the run.
    cmd = Cmd(PY, SPAWN_DETACHED_GRANDCHILD(), streaming=True, stop_timeout=0.5)
    with trio.fail_after(T):
        async with grandchild_of(cmd) as grandchild:
            cmd.stop()
            status = await cmd.wait()
            assert not pid_alive(grandchild), "the escaped grandchild survived the run"
    assert status.error == "signal: SIGTERM"


async def test_kill_child_ignoring_sigterm_holding_stdout() -> None:
    cmd = Cmd(PY, IGNORE_SIGTERM, streaming=True, stop_timeout=60)
    with trio.fail_after(T):
        async with running(cmd):
            cmd.stop()
            assert cmd.state is State.STOPPING
            cmd.kill()  # escalate before the timeout
        status = await cmd.wait()
    assert status.error == "signal: SIGKILL"


# --- streaming ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", []),
        (b"\n", [""]),
        (b"one", ["one"]),
        (b"one\ntwo\n", ["one", "two"]),
        (b"one\r\ntwo\r\n", ["one", "two"]),
        (b"\r\n", [""]),
        (b"a\n\n\nb\n", ["a", "", "", "b"]),
        (b"a\r\n\r\nb", ["a", "", "b"]),
        (b"lone\rcr kept\n", ["lone\rcr kept"]),
        (b"a\nlast\r", ["a", "last"]),
        (b"mixed\nwin\r\n\nno newline", ["mixed", "win", "", "no newline"]),
    ],
)
@pytest.mark.parametrize("stream", ["stdout", "stderr"])
async def test_line_splitting(stream: str, data: bytes, expected: list[str]) -> None:
    cmd = Cmd(PY, WRITE_HEX(data, stream=stream), streaming=True)
    with trio.fail_after(T):
        status, out, err = await run_collect(cmd)
    assert (out if stream == "stdout" else err) == expected
    assert (err if stream == "stdout" else out) == []
    assert getattr(status, stream) == tuple(expected)


async def test_crlf_split_across_writes() -> None:
    cmd = Cmd(PY, WRITE_BYTES(b"a\r", b"\nb\r", b"\n", pause=0.05), streaming=True)
    with trio.fail_after(T):
        _, out, _ = await run_collect(cmd)
    assert out == ["a", "b"]


async def test_long_line_split_into_chunks() -> None:
    size = 16384
    cmd = Cmd(
        PY, WRITE_REPEATED("x", 100_000, end="\nnext\n"), streaming=True, line_buffer_size=size
    )
    with trio.fail_after(T):
        status, out, _ = await run_collect(cmd)
    *chunks, last = out
    assert last == "next"
    assert "".join(chunks) == "x" * 100_000
    assert all(0 < len(c.encode()) <= size for c in chunks)
    assert len(chunks) >= 7
    assert list(status.stdout) == out


async def test_line_of_exactly_buffer_size_is_not_split() -> None:
    cmd = Cmd(PY, WRITE_REPEATED("y", 16, end="\nnext\n"), streaming=True, line_buffer_size=16)
    with trio.fail_after(T):
        _, out, _ = await run_collect(cmd)
    assert out == ["y" * 16, "next"]


async def test_line_one_byte_over_buffer_size() -> None:
    cmd = Cmd(PY, WRITE_REPEATED("y", 17, end="\nnext\n"), streaming=True, line_buffer_size=16)
    with trio.fail_after(T):
        _, out, _ = await run_collect(cmd)
    *chunks, last = out
    assert last == "next"
    assert "".join(chunks) == "y" * 17
    assert len(chunks) == 2
    assert all(0 < len(c) <= 16 for c in chunks)


@pytest.mark.parametrize("unit", ["é", "€", "😀", "a€😀é"])
@pytest.mark.parametrize("size", [16384, 7, 4])
async def test_multibyte_characters_stay_whole_at_chunk_boundaries(unit: str, size: int) -> None:
    count = 100_000 // len(unit.encode()) if size > 100 else 25
    cmd = Cmd(
        PY, WRITE_REPEATED(unit, count, end="\nnext\n"), streaming=True, line_buffer_size=size
    )
    with trio.fail_after(T):
        _, out, _ = await run_collect(cmd)
    *chunks, last = out
    assert last == "next"
    assert not any("\ufffd" in c for c in chunks)
    assert "".join(chunks) == unit * count
    assert all(0 < len(c.encode()) <= size for c in chunks)


@pytest.mark.parametrize(
    "writes",
    [
        (b"a\xe2\x82", b"\xacb\n"),  # € split in two reads
        (b"a\xf0", b"\x9f\x98", b"\x80b\n"),  # 😀 split in three reads
    ],
)
async def test_multibyte_character_split_across_reads(writes: tuple[bytes, ...]) -> None:
    cmd = Cmd(PY, WRITE_BYTES(*writes, pause=0.05), streaming=True)
    with trio.fail_after(T):
        _, out, _ = await run_collect(cmd)
    assert out == [b"".join(writes).decode().rstrip("\n")]


async def test_invalid_utf8_is_replaced() -> None:
    cmd = Cmd(PY, WRITE_HEX(b"ab\xffcd\n\xc3(\nend\xe2\x82"), streaming=True)
    with trio.fail_after(T):
        _, out, _ = await run_collect(cmd)
    assert out == ["ab\ufffdcd", "\ufffd(", "end\ufffd"]


async def test_many_lines_arrive_in_order() -> None:
    n = 100_000
    cmd = Cmd(PY, PRINT_LINES(n), streaming=True, buffered=True)
    with trio.fail_after(T):
        status, out, err = await run_collect(cmd)
    expected = [str(i) for i in range(n)]
    assert out == expected
    assert status.stdout == tuple(expected)
    assert err == []


async def test_stdout_and_stderr_streams() -> None:
    cmd = Cmd(PY, PRINT_BOTH(50), streaming=True)
    with trio.fail_after(T):
        status, out, err = await run_collect(cmd)
    assert out == [f"out {i}" for i in range(50)]
    assert err == [f"err {i}" for i in range(50)]
    assert status.exit == 0


async def test_streaming_channels_close_after_end_without_reader() -> None:
    cmd = Cmd(PY, PRINT_BOTH(3), streaming=True)
    with trio.fail_after(T):
        status = await cmd.run()
        assert cmd.stdout is not None
        assert cmd.stderr is not None
        out = [line async for line in cmd.stdout]
        err = [line async for line in cmd.stderr]
    assert status.exit == 0
    assert out == ["out 0", "out 1", "out 2"]
    assert err == ["err 0", "err 1", "err 2"]


async def test_streaming_channels_close_when_fatal(tmp_path: Path) -> None:
    cmd = Cmd(str(tmp_path / "missing"), streaming=True)
    with trio.fail_after(T):
        status, out, err = await run_collect(cmd)
    assert cmd.state is State.FATAL
    assert (out, err) == ([], [])
    assert status.exit == -1


LINE_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=30)


def match_chunks(chunks: list[str], lines: list[str], size: int) -> None:
    """``chunks`` is, line by line, each line cut into pieces of <= ``size`` bytes."""
    pos = 0
    for line in lines:
        if line == "":
            assert chunks[pos] == "", (pos, chunks, lines)
            pos += 1
            continue
        joined = ""
        while joined != line:
            assert pos < len(chunks), (chunks, lines)
            chunk = chunks[pos]
            assert chunk, (chunk, size)
            assert 0 < len(chunk.encode()) <= size, (chunk, size)
            joined += chunk
            assert line.startswith(joined), (joined, line, chunks)
            pos += 1
    assert pos == len(chunks), (chunks, lines)


@settings(
    max_examples=40,
    deadline=None,
    # the leftover-process guard is per test, not per example: by design
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    lines=st.lists(st.tuples(LINE_TEXT, st.sampled_from(["\n", "\r\n"])), max_size=12),
    tail=LINE_TEXT,
    size=st.integers(min_value=4, max_value=40),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=6),
)
def test_streaming_property(
    lines: list[tuple[str, str]], tail: str, size: int, cuts: list[int]
) -> None:
    data = ("".join(text + end for text, end in lines) + tail).encode()
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    writes = [data[a:b] for a, b in itertools.pairwise(bounds)]
    expected = [text for text, _ in lines] + ([tail] if tail else [])

    async def scenario() -> list[str]:
        cmd = Cmd(PY, WRITE_BYTES(*writes, pause=0.005), streaming=True, line_buffer_size=size)
        with trio.fail_after(T):
            _, out, _ = await run_collect(cmd)
        return out

    out = trio.run(scenario)
    match_chunks(out, expected, size)
    if all(len(line.encode()) <= size for line in expected):
        assert out == expected


# --- buffered output ---------------------------------------------------------------


async def test_buffered_status_holds_every_line() -> None:
    cmd = Cmd(PY, PRINT_BOTH(20))
    with trio.fail_after(T):
        status = await cmd.run()
    assert status.stdout == tuple(f"out {i}" for i in range(20))
    assert status.stderr == tuple(f"err {i}" for i in range(20))


async def test_unbuffered_status_has_no_output() -> None:
    cmd = Cmd(PY, PRINT_BOTH(5), buffered=False)
    with trio.fail_after(T):
        status = await cmd.run()
    assert (status.stdout, status.stderr) == ((), ())
    assert status.exit == 0


# --- environment and working directory -------------------------------------------------


async def test_env_mapping_replaces_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIO_OVERSEER_PARENT_ONLY", "1")
    cmd = Cmd(PY, PRINT_ENV("FOO", "TRIO_OVERSEER_PARENT_ONLY"), env=tagged_env(FOO="bar"))
    with trio.fail_after(T):
        status = await cmd.run()
    assert status.stdout == ("FOO=bar", "TRIO_OVERSEER_PARENT_ONLY unset")


async def test_env_none_inherits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIO_OVERSEER_PARENT_ONLY", "1")
    monkeypatch.delenv("FOO", raising=False)
    cmd = Cmd(PY, PRINT_ENV("FOO", "TRIO_OVERSEER_PARENT_ONLY"))
    with trio.fail_after(T):
        status = await cmd.run()
    assert status.stdout == ("FOO unset", "TRIO_OVERSEER_PARENT_ONLY=1")


@pytest.mark.parametrize("as_str", [False, True])
async def test_dir(tmp_path: Path, as_str: bool) -> None:
    cmd = Cmd(PY, PRINT_CWD, dir=str(tmp_path) if as_str else tmp_path)
    with trio.fail_after(T):
        status = await cmd.run()
    assert os.path.realpath(status.stdout[0]) == os.path.realpath(tmp_path)


# --- construction ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": ""},
        {"name": PY, "args": [1]},
        {"name": PY, "stop_timeout": -1.0},
        {"name": PY, "line_buffer_size": 3},
    ],
    ids=["empty-name", "non-str-arg", "negative-stop-timeout", "tiny-line-buffer"],
)
def test_bad_arguments_fail_at_construction(kwargs: dict[str, object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        Cmd(**kwargs)  # type: ignore[arg-type]


def test_smallest_line_buffer_is_accepted() -> None:
    assert Cmd(PY, EXIT_0, line_buffer_size=4).state is State.INITIAL


async def test_final_states_are_final() -> None:
    cmd = Cmd(PY, EXIT_1)
    with trio.fail_after(T):
        await cmd.run()
    assert cmd.state in FINAL
