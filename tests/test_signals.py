"""Signals: their names and parsing (`_signals`), and signals to a program that
uses trio_overseer (handle_signals=True, main thread).

Each program test writes a small program to ``tmp_path``, runs it as a subprocess,
waits until its children are ready (they print "ready" after installing their
handlers; the program relays their logs and state changes on stdout), sends it
signals, and checks how it ends and that none of its children survive.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio
from children import (
    EXIT_42,
    IGNORE_SIGTERM,
    PY,
    TRAP_SIGTERM_WRITE,
    Lines,
    T,
    pid_alive,
)
from hypothesis import given
from hypothesis import strategies as st

import trio_overseer
from trio_overseer._signals import describe_signal, parse_signal, signal_name

# --- names and parsing -------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["TERM", "SIGTERM", "term", " sigterm ", 15, "15", " 15 ", int(signal.SIGTERM)]
)
def test_parse_signal_reads_names_and_numbers(value: object) -> None:
    assert parse_signal(value) == signal.SIGTERM
    assert type(parse_signal(value)) is int


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("NOPE", "unknown signal name 'NOPE'"),
        ("", "unknown signal name ''"),
        ("SIG", "unknown signal name 'SIG'"),
        ("-15", "unknown signal name '-15'"),
        ("²", "unknown signal name '²'"),
        (0, "no signal number 0"),
        (signal.NSIG, f"no signal number {signal.NSIG}"),
        ("99999", "no signal number 99999"),
        pytest.param("0" * 5000, "no signal number 000", id="5000-digits"),
        pytest.param(10**5000, "no signal number <a number of about 5001 digits>", id="huge-int"),
        (None, "expected a signal name or number, got None"),
        (1.5, "expected a signal name or number, got 1.5"),
        (True, "expected a signal name or number, got True"),
        ([15], "expected a signal name or number, got [15]"),
    ],
)
def test_parse_signal_refuses_what_is_no_signal(value: object, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)) as caught:
        parse_signal(value)
    assert len(str(caught.value)) < 200  # a 64 KiB value is not quoted whole


@given(st.integers(1, signal.NSIG - 1))
def test_signal_name_reads_back(sig: int) -> None:
    assert parse_signal(signal_name(sig)) == sig
    assert parse_signal(signal_name(sig).lower()) == sig
    assert describe_signal(sig) in (signal_name(sig), f"signal {sig}")


def test_signal_names() -> None:
    assert signal_name(signal.SIGTERM) == "SIGTERM"
    assert describe_signal(signal.SIGKILL) == "SIGKILL"
    unnamed = next(n for n in range(1, signal.NSIG) if n not in set(signal.Signals))
    assert signal_name(unnamed) == str(unnamed)
    assert describe_signal(unnamed) == f"signal {unnamed}"


ROOT = Path(__file__).resolve().parent.parent

PRELUDE = """
import math, signal, sys
import trio
import trio_overseer

# A program run from a terminal has Python's default SIGINT handler, even if
# the test runner was started with SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)


async def printer(recv, fmt):
    async for item in recv:
        print(fmt(item), flush=True)


def fmt_state(info):
    return f"state {info.id} {info.state.value} {info.pid} {info.error}"


def fmt_log(msg):
    return f"log {msg.id} {msg.text}"


def watch(ovr, nursery):
    states_send, states_recv = trio.open_memory_channel(math.inf)
    logs_send, logs_recv = trio.open_memory_channel(math.inf)
    ovr.watch_state(states_send)
    ovr.watch_logs(logs_send)
    nursery.start_soon(printer, states_recv, fmt_state)
    nursery.start_soon(printer, logs_recv, fmt_log)
    return states_send, logs_send
"""

#: open_overseer() block + start(): the block handles the signals.
BLOCK_PROGRAM = """
async def main():
    async with trio_overseer.open_overseer(stop_timeout=STOP_TIMEOUT) as ovr:
        async with trio.open_nursery() as nursery:
            watch(ovr, nursery)
            for id, args in CHILDREN.items():
                ovr.add(id, sys.executable, args)
                await ovr.start(id)
            await trio.sleep_forever()


try:
    trio.run(main)
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
    raise
print("main returned", flush=True)
"""

#: Overseer() without a block; supervise_all() handles SIGINT/SIGTERM.
SUPERVISE_ALL_PROGRAM = """
async def main():
    ovr = trio_overseer.Overseer(stop_timeout=STOP_TIMEOUT)
    for id, args in CHILDREN.items():
        ovr.add(id, sys.executable, args)
    async with trio.open_nursery() as nursery:
        states_send, logs_send = watch(ovr, nursery)
        await ovr.supervise_all()
        print("supervise_all returned", flush=True)
        # let the printers finish: every event was published before the return
        ovr.unwatch_state(states_send)
        ovr.unwatch_logs(logs_send)
        states_send.close()
        logs_send.close()


trio.run(main)
print("main returned", flush=True)
"""


#: The application handles SIG itself, around the block: the block must not
#: take it.  On SIG it reports the children's states (still running: nobody
#: stopped them), leaves the block (which stops them) and exits 7.
APP_HANDLES_BLOCK_PROGRAM = """
async def main():
    with trio.open_signal_receiver(SIG) as signals:
        async with trio_overseer.open_overseer(stop_timeout=STOP_TIMEOUT) as ovr:
            async with trio.open_nursery() as nursery:
                watch(ovr, nursery)
                for id, args in CHILDREN.items():
                    ovr.add(id, sys.executable, args)
                    await ovr.start(id)
                async for sig in signals:
                    states = [ovr.status(id).state.value for id in CHILDREN]
                    print("app got", signal.Signals(sig).name, *states, flush=True)
                    break
                nursery.cancel_scope.cancel()
    print("block left", flush=True)


trio.run(main)
sys.exit(7)
"""

#: The same around supervise_all() without a block: the application decides
#: to stop everything itself, then exits 7.
APP_HANDLES_SUPERVISE_ALL_PROGRAM = """
async def on_signal(ovr, signals):
    async for sig in signals:
        states = [ovr.status(id).state.value for id in CHILDREN]
        print("app got", signal.Signals(sig).name, *states, flush=True)
        ovr.stop_all()


async def main():
    ovr = trio_overseer.Overseer(stop_timeout=STOP_TIMEOUT)
    for id, args in CHILDREN.items():
        ovr.add(id, sys.executable, args)
    with trio.open_signal_receiver(SIG) as signals:
        async with trio.open_nursery() as nursery:
            watch(ovr, nursery)
            nursery.start_soon(on_signal, ovr, signals)
            await ovr.supervise_all()
            print("supervise_all returned", flush=True)
            nursery.cancel_scope.cancel()


trio.run(main)
sys.exit(7)
"""

#: SIGHUP ignored by the application (SIG_IGN is not the default): the block
#: leaves it alone, and still takes SIGTERM, which it found at its default.
IGNORES_SIGHUP_PROGRAM = "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n" + BLOCK_PROGRAM


def starting_with(prefix: str) -> Callable[[str], bool]:
    """A predicate: the line starts with `prefix`."""
    return lambda line: line.startswith(prefix)


@attrs.define
class Program:
    proc: trio.Process
    out: Lines
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def child_ready(self, id: str) -> int:
        """Wait until child ``id`` runs and has printed "ready"; return its pid."""
        running = await self.out.wait_for(lambda line: line.startswith(f"state {id} running "))
        await self.out.wait_for(f"log {id} ready")
        return int(running.split()[3])

    async def end(self) -> int:
        """Wait for the program's exit and the end of its output."""
        returncode = await self.proc.wait()
        await self.out.wait_closed()
        return returncode


@asynccontextmanager
async def program(
    tmp_path: Path, body: str, children: dict[str, list[str]], stop_timeout: float
) -> AsyncIterator[Program]:
    script = tmp_path / "program.py"
    script.write_text(
        f"CHILDREN = {children!r}\nSTOP_TIMEOUT = {stop_timeout!r}\n" + PRELUDE + body
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("wb") as stderr:
        proc = await trio.lowlevel.open_process(
            [PY, "-u", str(script)], stdout=subprocess.PIPE, stderr=stderr, env=env
        )
    try:
        async with trio.open_nursery() as nursery:
            out = Lines()
            assert proc.stdout is not None
            nursery.start_soon(out.pump_bytes, proc.stdout)
            yield Program(proc, out, stderr_path)
    finally:
        if proc.returncode is None:  # the test failed: do not leave it behind
            proc.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await proc.wait()


@attrs.frozen
class Way:
    """How a program runs its procs: what it takes, and how it ends on a signal."""

    name: str
    program: str  # handle_signals=True (the default)
    app_program: str  # the application handles SIG itself
    signals: tuple[signal.Signals, ...]  # what it takes
    returned: str  # the line it prints once its supervising call returned

    def __str__(self) -> str:
        return self.name

    def returncode(self, sig: signal.Signals) -> int:
        """How the program ends on `sig`: the block dies of it, supervise_all() returns."""
        return -sig if self is BLOCK else 0


BLOCK = Way(
    "block",
    BLOCK_PROGRAM,
    APP_HANDLES_BLOCK_PROGRAM,
    (signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
    "block left",
)
SUPERVISE_ALL = Way(
    "supervise_all",
    SUPERVISE_ALL_PROGRAM,
    APP_HANDLES_SUPERVISE_ALL_PROGRAM,
    (signal.SIGINT, signal.SIGTERM),
    "supervise_all returned",
)
WAYS = pytest.mark.parametrize(
    ("way", "sig"),
    [(way, sig) for way in (BLOCK, SUPERVISE_ALL) for sig in way.signals],
    ids=lambda value: str(value.name if isinstance(value, signal.Signals) else value),
)


@WAYS
async def test_signal_stops_gracefully(tmp_path: Path, way: Way, sig: signal.Signals) -> None:
    markers = {id: tmp_path / f"{id}.marker" for id in ("a", "b")}
    children = {id: TRAP_SIGTERM_WRITE(path) for id, path in markers.items()}
    with trio.fail_after(T):
        async with program(tmp_path, way.program, children, stop_timeout=10.0) as prog:
            pids = [await prog.child_ready(id) for id in children]
            prog.proc.send_signal(sig)
            returncode = await prog.end()
    assert returncode == way.returncode(sig), (prog.out.lines, prog.stderr())
    # stopped gracefully: each child got its stop signal and exited by itself
    assert [path.read_text() for path in markers.values()] == ["SIGTERM", "SIGTERM"]
    assert not any(map(pid_alive, pids))
    if way is BLOCK:  # then it dies of the signal, as Python's default would
        assert "main returned" not in prog.out.lines
        if sig == signal.SIGINT:
            assert "KeyboardInterrupt" in prog.out.lines, prog.stderr()
    else:  # supervise_all() returns normally (as the Go original)
        assert way.returned in prog.out.lines
        assert "main returned" in prog.out.lines
        for id in children:
            assert any(line.startswith(f"state {id} finished ") for line in prog.out.lines)


@WAYS
async def test_second_signal_kills(tmp_path: Path, way: Way, sig: signal.Signals) -> None:
    children = {"a": IGNORE_SIGTERM, "b": IGNORE_SIGTERM}
    with trio.fail_after(T):
        async with program(tmp_path, way.program, children, stop_timeout=60.0) as prog:
            pids = [await prog.child_ready(id) for id in children]
            prog.proc.send_signal(sig)
            for id in children:
                await prog.out.wait_for(starting_with(f"state {id} stopping"))
            # both ignore SIGTERM: without a second signal this would take 60 s
            prog.proc.send_signal(sig)
            returncode = await prog.end()
    assert returncode == way.returncode(sig), (prog.out.lines, prog.stderr())
    assert not any(map(pid_alive, pids))
    if way is SUPERVISE_ALL:  # killed, not stopped: the final states say so
        assert way.returned in prog.out.lines
        for id, pid in zip(children, pids, strict=True):
            assert f"state {id} interrupted {pid} signal: SIGKILL" in prog.out.lines


@WAYS
async def test_a_signal_the_application_handles_stays_its(
    tmp_path: Path, way: Way, sig: signal.Signals
) -> None:
    markers = {id: tmp_path / f"{id}.marker" for id in ("a", "b")}
    children = {id: TRAP_SIGTERM_WRITE(path) for id, path in markers.items()}
    body = f"SIG = signal.{sig.name}\n" + way.app_program
    with trio.fail_after(T):
        async with program(tmp_path, body, children, stop_timeout=10.0) as prog:
            pids = [await prog.child_ready(id) for id in children]
            prog.proc.send_signal(sig)
            returncode = await prog.end()
    # The application got the signal while its procs still ran, and ended
    # as it decided; its stop (or leaving the block) stopped the procs as usual.
    assert returncode == 7, (prog.out.lines, prog.stderr())
    assert f"app got {sig.name} running running" in prog.out.lines, prog.out.lines
    assert way.returned in prog.out.lines
    assert "KeyboardInterrupt" not in prog.stderr()
    assert [path.read_text() for path in markers.values()] == ["SIGTERM", "SIGTERM"]
    assert not any(map(pid_alive, pids))


async def test_block_leaves_an_ignored_signal_and_takes_a_default_one(tmp_path: Path) -> None:
    markers = {id: tmp_path / f"{id}.marker" for id in ("a", "b")}
    children = {id: TRAP_SIGTERM_WRITE(path) for id, path in markers.items()}
    with trio.fail_after(T):
        async with program(tmp_path, IGNORES_SIGHUP_PROGRAM, children, stop_timeout=10.0) as prog:
            pids = [await prog.child_ready(id) for id in children]
            prog.proc.send_signal(signal.SIGHUP)  # ignored, as the application asked
            # SIGTERM (default handling) is taken: graceful stop, then death by
            # it.  Had SIGHUP been taken, the program would die of SIGHUP.
            prog.proc.send_signal(signal.SIGTERM)
            returncode = await prog.end()
    assert returncode == -signal.SIGTERM, (prog.out.lines, prog.stderr())
    assert [path.read_text() for path in markers.values()] == ["SIGTERM", "SIGTERM"]
    assert not any(map(pid_alive, pids))


async def test_handle_signals_outside_main_thread_is_ignored() -> None:
    # handle_signals=True (the default) in a worker thread: no signal
    # handling there, and no error either.
    async def in_thread() -> int:
        async with trio_overseer.open_overseer(stop_timeout=1.0) as ovr:
            ovr.add("p", PY, EXIT_42)
            return await ovr.supervise("p")

    with trio.fail_after(T):
        result = await trio.to_thread.run_sync(trio.run, in_thread)
    assert result == 42


async def test_trios_keyboard_interrupt_handler_counts_as_the_default() -> None:
    # trio.run replaces Python's default SIGINT handler by its own (which
    # raises KeyboardInterrupt): the application did not handle SIGINT, so
    # the block may take it.  A handler the application opens is not.
    from trio._core._run import GLOBAL_RUN_CONTEXT

    from trio_overseer._lifetime import takeable_signals

    ki_handler = GLOBAL_RUN_CONTEXT.runner.ki_manager.handler
    if ki_handler is None or signal.getsignal(signal.SIGINT) is not ki_handler:
        pytest.skip("pytest runs with SIGINT not at its default (started in the background?)")
    assert takeable_signals(signal.SIGINT) == (signal.SIGINT,)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM):
        assert takeable_signals(signal.SIGINT, signal.SIGTERM) == ()
    assert takeable_signals(signal.SIGINT) == (signal.SIGINT,)
