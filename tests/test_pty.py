"""pty mode (``pty=True``): the child's stdout and stderr are a pseudo-terminal.

Every test runs real children, with both ways of spawning where the spawn
matters (posix_spawn through ctypes, and the Popen fallback).
"""

from __future__ import annotations

import errno
import gc
import math
import os
import signal
import sys
from typing import Any

import pytest
import trio
from children import (
    FINAL,
    PY,
    SLEEP_FOREVER,
    SPAWN_DETACHED_GRANDCHILD,
    SPAWN_GRANDCHILD_EXIT_0,
    T,
    pid_alive,
    python,
    wait_pid_gone,
)

from trio_overseer import (
    STDOUT,
    Cmd,
    LogBatch,
    LogMsg,
    NotReadyError,
    State,
    open_overseer,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="needs /proc and Linux ptys")


def fd_count() -> int:
    gc.collect()  # a bare Overseer dropped earlier closes its watchdog pipe when collected
    return len(os.listdir("/proc/self/fd"))


async def run(cmd: Cmd) -> Any:
    with trio.fail_after(T):
        return await cmd.run()


def buffered_env() -> dict[str, str]:
    """Our environment without PYTHONUNBUFFERED: a Python child buffers into pipes."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


#: A Python that block-buffers into a pipe (no -u, no PYTHONUNBUFFERED): prints
#: a line, then a line with its own clock every 0.7 s.
BUFFERING_TICKER = [
    "-S",
    "-c",
    "import sys, time\n"
    "print('isatty', sys.stdout.isatty())\n"
    "for i in range(3):\n"
    "    time.sleep(0.7)\n"
    "    print('tick', i, repr(time.time()))\n",
]

REPORT_TERMINAL = python(
    """
    import os, sys
    print("isatty", sys.stdin.isatty(), sys.stdout.isatty(), sys.stderr.isatty())
    print("size", *os.get_terminal_size(1))
    print("pgid==pid", os.getpgid(0) == os.getpid())
    print("sid!=pid", os.getsid(0) != os.getpid())
    print("stdin", os.readlink("/proc/self/fd/0"))
    try:
        os.open("/dev/tty", os.O_RDONLY)
        print("ctty yes")
    except OSError:
        print("ctty none")
    """
)


async def test_lines_of_a_buffering_program_arrive_as_printed() -> None:
    async def ticks(pty: bool) -> list[LogMsg]:
        async with open_overseer(handle_signals=False) as ovr, ovr.subscribe_logs() as lines:
            ovr.add("ticker", PY, BUFFERING_TICKER, env=buffered_env(), pty=pty)
            with trio.fail_after(T):
                assert await ovr.supervise("ticker") == 0
        return [msg async for msg in lines]

    msgs = await ticks(pty=True)
    assert [m.text for m in msgs[:1]] == ["isatty True"]
    assert [m.text.split()[:2] for m in msgs[1:]] == [["tick", "0"], ["tick", "1"], ["tick", "2"]]
    latencies = [m.ts - float(m.text.split()[2]) for m in msgs[1:]]
    assert all(0 <= lat < 0.5 for lat in latencies), latencies

    # The same program on pipes: its lines sit in its buffer until it exits.
    piped = await ticks(pty=False)
    assert piped[0].text == "isatty False"
    assert piped[1].ts - float(piped[1].text.split()[2]) > 0.5


async def test_the_child_sees_a_terminal_of_the_given_size(spawn_way: str) -> None:
    status = await run(Cmd(PY, REPORT_TERMINAL, pty=True))
    assert status.stdout == (
        "isatty False True True",
        "size 80 24",
        "pgid==pid True",  # still the leader of its own process group
        "sid!=pid True",  # not a session leader: no controlling terminal
        "stdin /dev/null",
        "ctty none",
    ), status
    assert status.stderr == ()
    status = await run(Cmd(PY, REPORT_TERMINAL, pty=(132, 43)))
    assert status.stdout[1] == "size 132 43"


async def test_lines_come_out_exactly_as_printed(spawn_way: str) -> None:
    # ONLCR is off: "\n" is not turned into "\r\n"; a lone "\r" (a progress
    # bar) stays in its line; "\r\n" written by the program ends a line;
    # colours pass through; the last line needs no newline.
    data = (
        b"plain\n\n\x1b[1;31mred\x1b[0m\n"
        b"progress 10%\rprogress 100%\n"
        b"crlf\r\n"
        b"caf\xc3\xa9 \xff\n"
        b"tab\there\n"
        b"last"
    )
    code = f"import os\nos.write(1, {data!r})\n"
    status = await run(Cmd(PY, ["-S", "-c", code], pty=True))
    assert status.stdout == (
        "plain",
        "",
        "\x1b[1;31mred\x1b[0m",
        "progress 10%\rprogress 100%",
        "crlf",
        "caf\u00e9 \ufffd",
        "tab\there",
        "last",
    )


async def test_colours_of_a_program_that_checks_for_a_terminal() -> None:
    code = "import sys\nprint('\\x1b[32mgreen\\x1b[0m' if sys.stdout.isatty() else 'plain')\n"
    assert (await run(Cmd(PY, ["-S", "-c", code], pty=True))).stdout == ("\x1b[32mgreen\x1b[0m",)
    assert (await run(Cmd(PY, ["-S", "-c", code]))).stdout == ("plain",)


async def test_stderr_is_merged_into_stdout_in_order(spawn_way: str) -> None:
    code = python(
        """
        import sys
        for i in range(50):
            sys.stdout.write("out %d\\n" % i)
            sys.stdout.flush()
            sys.stderr.write("err %d\\n" % i)
            sys.stderr.flush()
        """
    )
    async with open_overseer(handle_signals=False) as ovr, ovr.subscribe_logs() as lines:
        ovr.add("both", PY, code, pty=True)
        with trio.fail_after(T):
            await ovr.supervise("both")
    msgs = [msg async for msg in lines]
    assert {m.type for m in msgs} == {STDOUT}
    assert [m.text for m in msgs] == [f"{s} {i}" for i in range(50) for s in ("out", "err")]


async def test_no_line_is_lost_at_the_end(spawn_way: str) -> None:
    # Much more than a pty holds (a few KiB): the child blocks, exits after
    # its last write, and the master answers EIO once it is drained.
    n = 20000
    code = python(
        f"""
        import sys
        for i in range({n}):
            sys.stdout.write("line %d\\n" % i)
        sys.stdout.write("the end")
        """
    )
    status = await run(Cmd(PY, code, pty=True))
    assert status.exit == 0
    assert status.stdout == (*(f"line {i}" for i in range(n)), "the end")


async def test_streaming_channels(spawn_way: str) -> None:
    code = python("import sys\nprint('one')\nprint('two', file=sys.stderr)\n")
    cmd = Cmd(PY, code, pty=True, streaming=True, buffered=False)
    assert cmd.stdout is not None
    assert cmd.stderr is not None
    with trio.fail_after(T):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cmd.run)
            out = [line async for line in cmd.stdout]
            err = [line async for line in cmd.stderr]
    assert (out, err) == (["one", "two"], [])


@pytest.mark.parametrize("kill", [False, True])
async def test_stop_and_kill(spawn_way: str, kill: bool) -> None:
    async with open_overseer(handle_signals=False) as ovr:
        ovr.add("sleeper", PY, SLEEP_FOREVER, pty=True)
        with trio.fail_after(T):
            info = await ovr.start("sleeper")
            await ovr.wait_for_log("sleeper", "^ready$")
            ovr.stop("sleeper", kill=kill)
            final = await ovr.wait_for_state("sleeper", *FINAL)
    sig = signal.SIGKILL if kill else signal.SIGTERM
    assert (final.state, final.exit_code) == (State.INTERRUPTED, -sig), final
    assert not pid_alive(info.pid)


async def test_cancelling_the_run_stops_the_group(spawn_way: str) -> None:
    cmd = Cmd(PY, SLEEP_FOREVER, pty=True, stop_timeout=1.0)
    with trio.fail_after(T):
        async with trio.open_nursery() as nursery:
            await nursery.start(cmd.run)
            nursery.cancel_scope.cancel()
    assert cmd.state is State.INTERRUPTED
    assert cmd.status().exit == -signal.SIGTERM


async def test_a_grandchild_holding_the_pty_after_the_leader_exits(spawn_way: str) -> None:
    # The leader exits 0; its grandchild (same group, ignores SIGTERM) keeps
    # the pty open: the group is ended as for pipes and the run finishes.
    fds = fd_count()
    async with open_overseer(handle_signals=False, stop_timeout=0.5) as ovr:
        ovr.add("p", PY, SPAWN_GRANDCHILD_EXIT_0, pty=True)
        with trio.fail_after(T):
            await ovr.start("p")
            grandchild = int((await ovr.wait_for_log("p", r"^\d+$")).text)
            final = await ovr.wait_for_state("p", *FINAL)
            await wait_pid_gone(grandchild)
    assert (final.state, final.exit_code) == (State.FINISHED, 0), final
    assert fd_count() == fds


async def test_an_escaped_grandchild_holding_the_pty(spawn_way: str) -> None:
    # A setsid'd grandchild keeps the pty: the leader's exit ends the run
    # after the drain grace, and the Overseer's close sweeps the grandchild.
    fds = fd_count()
    code = python(
        """
        import subprocess, sys
        gc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", "import time\\nwhile True: time.sleep(3600)"],
            start_new_session=True,
        )
        print(gc.pid)
        """
    )
    async with open_overseer(handle_signals=False, stop_timeout=1.0) as ovr:
        ovr.add("p", PY, code, pty=True)
        with trio.fail_after(T):
            await ovr.start("p")
            grandchild = int((await ovr.wait_for_log("p", r"^\d+$")).text)
            final = await ovr.wait_for_state("p", *FINAL)
            assert pid_alive(grandchild)
    assert (final.state, final.exit_code) == (State.FINISHED, 0), final
    with trio.fail_after(T):
        await wait_pid_gone(grandchild)
    assert fd_count() == fds


async def test_stop_sweeps_an_escaped_grandchild_holding_the_pty(spawn_way: str) -> None:
    fds = fd_count()
    async with open_overseer(handle_signals=False, stop_timeout=1.0) as ovr:
        ovr.add("p", PY, SPAWN_DETACHED_GRANDCHILD(), pty=True)
        with trio.fail_after(T):
            await ovr.start("p")
            grandchild = int((await ovr.wait_for_log("p", r"^\d+$")).text)
            await ovr.wait_for_log("p", "^ready$")
            ovr.stop("p")
            final = await ovr.wait_for_state("p", *FINAL)
            await wait_pid_gone(grandchild)
    assert final.state is State.INTERRUPTED, final
    assert fd_count() == fds


async def test_many_pty_procs_at_once_leave_no_fd() -> None:
    n = 60
    fds = fd_count()
    code = python(
        """
        import os, time
        print("tty", os.isatty(1), os.isatty(2))
        for i in range(200):
            print(i)
        print("ready")
        while True:
            time.sleep(3600)
        """
    )
    async with open_overseer(handle_signals=False) as ovr:
        cmds = [ovr.add(f"p{i}", PY, code, pty=True, buffered=True) for i in range(n)]
        with trio.fail_after(T * 2):
            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(ovr.start, f"p{i}")
            for i in range(n):
                await ovr.wait_for_log(f"p{i}", "^ready$")
            ovr.stop_all()
            for i in range(n):
                await ovr.wait_for_state(f"p{i}", *FINAL)
        for i, cmd in enumerate(cmds):
            lines = cmd.status().stdout
            assert lines == ("tty True True", *map(str, range(200)), "ready"), (i, lines[:3])
    assert fd_count() == fds


async def test_holding_the_output_of_a_pty_proc() -> None:
    # Back-pressure: a held pty proc is not read (it blocks on its full pty)
    # while the others flow; released, it goes on, and no line is lost.
    flood = python(
        """
        import sys
        for i in range(10**9):
            sys.stdout.write("%d\\n" % i)
        """
    )
    tick = python(
        """
        import time
        for i in range(10**9):
            print(i)
            time.sleep(0.005)
        """
    )
    counts = {"flood": 0, "tick": 0}
    last = -1
    moved = trio.Event()

    async def consume(recv: trio.MemoryReceiveChannel[LogBatch]) -> None:
        nonlocal last
        async for batch in recv:
            if batch.id == "flood":
                for line in batch.lines:
                    assert int(line) == last + 1, (line, last)
                    last = int(line)
            counts[batch.id] += len(batch)
            moved.set()

    async def until(id: str, n: int) -> None:
        """Until `id` printed `n` more lines."""
        nonlocal moved
        want = counts[id] + n
        while counts[id] < want:
            moved = trio.Event()
            await moved.wait()

    send, recv = trio.open_memory_channel[LogBatch](math.inf)
    with trio.fail_after(T):
        async with trio.open_nursery() as nursery, open_overseer(handle_signals=False) as ovr:
            nursery.start_soon(consume, recv)
            ovr.watch_logs(send, batched=True)
            ovr.add("flood", PY, flood, pty=True)
            ovr.add("tick", PY, tick, pty=True)
            await ovr.start("flood")
            await ovr.start("tick")
            await until("flood", 1000)
            ovr._hold_output(True, "flood")
            await until("tick", 3)  # the flood's read in progress, if any, is done by now
            held_at = counts["flood"]
            await until("tick", 10)
            assert counts["flood"] == held_at  # not read: blocked on its full pty
            ovr._hold_output(False, "flood")
            await until("flood", 1000)
            ovr.stop_all()


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        (errno.ENOSPC, "/proc/sys/kernel/pty/max"),
        (errno.ENOENT, "devpts"),
        (errno.EMFILE, "RLIMIT_NOFILE"),
    ],
)
async def test_no_pty_to_be_had_is_fatal_and_says_why(
    spawn_way: str, monkeypatch: pytest.MonkeyPatch, code: int, hint: str
) -> None:
    def refuse() -> tuple[int, int]:
        raise OSError(code, os.strerror(code))

    fds = fd_count()
    monkeypatch.setattr("trio_overseer._pty.os.openpty", refuse)
    async with open_overseer(handle_signals=False) as ovr:
        ovr.add("web", PY, SLEEP_FOREVER, pty=True)
        with trio.fail_after(T):
            info = await ovr.start("web")
    assert info.state is State.FATAL, info
    assert info.pid == 0, info
    assert info.error is not None
    assert "no pseudo-terminal could be opened for pty=True" in info.error, info.error
    assert os.strerror(code) in info.error, info.error
    assert hint in info.error, info.error
    assert fd_count() == fds


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("yes", TypeError),
        (1, TypeError),
        ((80,), TypeError),
        ((80, 24.0), TypeError),
        ((0, 24), ValueError),
        ((80, 70000), ValueError),
        ((True, 24), TypeError),
    ],
)
async def test_bad_pty_option_names_the_proc_and_the_option(value: object, error: type) -> None:
    async with open_overseer(handle_signals=False) as ovr:
        with pytest.raises(error, match=r"proc 'web': pty"):
            ovr.add("web", PY, SLEEP_FOREVER, pty=value)  # type: ignore[arg-type]
    with pytest.raises(error, match=r"^pty"):
        Cmd(PY, pty=value)


async def test_the_option_is_kept_by_clone() -> None:
    cmd = Cmd(PY, pty=[100, 30])
    assert cmd.pty == (100, 30)
    assert cmd.clone().pty == (100, 30)
    assert Cmd(PY).pty is False


async def test_a_restarted_run_gets_the_same_pty() -> None:
    code = python("import os, sys\nprint(*os.get_terminal_size(1))\nsys.exit(1)")
    async with open_overseer(handle_signals=False, backoff_base=0.01) as ovr:
        ovr.add("p", PY, code, pty=(90, 30), retry_times=1)
        async with ovr.subscribe_logs() as lines:
            with trio.fail_after(T):
                assert await ovr.supervise("p") == 1
    assert [msg.text async for msg in lines] == ["90 30", "90 30"]


async def test_a_silent_pty_proc_gets_no_block_buffering_hint() -> None:
    # Its stdout is a terminal: "it may sit in a pipe's buffer" would mislead.
    async with open_overseer(handle_signals=False) as ovr:
        quiet = python("import time\ntime.sleep(3600)")
        ovr.add("quiet", PY, quiet, pty=True)
        ovr.add("ready", PY, quiet, pty=True, ready_line="^never$", ready_timeout=0.5)
        with trio.fail_after(T):
            await ovr.start("quiet")
            with pytest.raises(TimeoutError) as waited:
                await ovr.wait_for_log("quiet", "^never$", timeout=0.5)
            with pytest.raises(NotReadyError) as started:
                await ovr.start("ready")
    assert "block buffer" not in str(waited.value), waited.value
    assert str(waited.value).startswith("proc 'quiet' printed no line matching"), waited.value
    assert "block buffer" not in str(started.value), started.value
