"""Child programs for the real-process tests, and helpers to watch them.

Every child is a small Python snippet run as ``PY, *snippet`` (the pattern of
trio's ``_tests/test_subprocess.py``): pass ``PY`` as the executable and the
snippet as the argument list, e.g. ``Cmd(PY, EXIT_1)`` or
``ovr.add("a", PY, SLEEP_FOREVER)``.

Children that must be signalled only once they are prepared print ``ready``
*after* installing their handlers: tests wait for that line, never on a sleep.

Every process the tests start carries ``TRIO_OVERSEER_TEST_TAG=<uuid>`` in its
environment (inherited from the test process, see ``conftest.py``, or added by
``tagged_env()`` when a test passes its own mapping), so that survivors can be
found and killed at teardown.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import signal
import sys
import textwrap
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import trio

from trio_overseer import Overseer, State, _procfs, open_overseer

PY = sys.executable
#: The guard of anything awaited on real processes: generous, never a sync point.
T = 30
#: The final states of a run.
FINAL = frozenset({State.FINISHED, State.INTERRUPTED, State.FATAL})
#: The transitions of API.md's table, written out again independently of the code.
ALLOWED: dict[State, set[State]] = {
    State.INITIAL: {State.STARTING},
    State.STARTING: {State.RUNNING, State.FATAL, State.STOPPING},
    State.RUNNING: {State.STOPPING, State.FINISHED, State.INTERRUPTED},
    State.STOPPING: {State.FINISHED, State.INTERRUPTED},
}
#: -I: ignore PYTHON* variables and the user site; -S: no site import (faster
#: start, the snippets only use the stdlib); -u: unbuffered stdout/stderr, so
#: every print reaches the pipe at once.
PY_FLAGS = ("-I", "-S", "-u")
TAG_VAR = "TRIO_OVERSEER_TEST_TAG"


def overseer(**kwargs: Any) -> AbstractAsyncContextManager[Overseer]:
    """`open_overseer` with test defaults: no signal handling, short timeouts."""
    kwargs.setdefault("handle_signals", False)
    kwargs.setdefault("stop_timeout", 1.0)
    kwargs.setdefault("backoff_base", 0.01)
    return open_overseer(**kwargs)


def add_refuses(options: dict[str, Any], error: type[Exception], message: str) -> None:
    """`Overseer.add` refuses `options` with `error`, its message naming the proc
    (``proc 'p': <message>``), and registers nothing."""
    ovr = Overseer(handle_signals=False)
    with pytest.raises(error, match=f"^proc 'p': {message}"):
        ovr.add("p", PY, EXIT_0, **options)
    assert not ovr.has_proc("p")


def python(code: str) -> list[str]:
    """Arguments that make ``PY`` run ``code``."""
    return [*PY_FLAGS, "-c", textwrap.dedent(code).strip() + "\n"]


def tagged_env(**extra: str) -> dict[str, str]:
    """A *replacement* environment that still carries the test tag."""
    return {TAG_VAR: os.environ[TAG_VAR], **extra}


# --- exits -----------------------------------------------------------------


def exit_with(code: int) -> list[str]:
    return python(f"import sys; sys.exit({code})")


EXIT_0 = exit_with(0)
EXIT_1 = exit_with(1)
EXIT_42 = exit_with(42)

#: Dies of SIGKILL sent to itself: a run ending "signalled" without a stop.
KILL_SELF = python("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")


def FAIL_UNTIL(counter: os.PathLike[str] | str, n: int) -> list[str]:
    """Exit 1 on the first ``n - 1`` runs (counted in a file), then exit 0."""
    return python(
        f"""
        import sys
        path = {os.fspath(counter)!r}
        try:
            with open(path) as f:
                count = int(f.read())
        except FileNotFoundError:
            count = 0
        count += 1
        with open(path, "w") as f:
            f.write(str(count))
        print("run", count)
        sys.exit(0 if count >= {n} else 1)
        """
    )


# --- long-running children ---------------------------------------------------

SLEEP_FOREVER = python(
    """
    import time
    print("ready")
    while True:
        time.sleep(3600)
    """
)

IGNORE_SIGTERM = python(
    """
    import signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ready")
    while True:
        time.sleep(3600)
    """
)

TRAP_SIGTERM_EXIT_0 = python(
    """
    import signal, sys, time
    def on_term(signum, frame):
        print("got SIGTERM")
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    print("ready")
    while True:
        time.sleep(3600)
    """
)


def TRAP_SIGTERM_WRITE(marker: os.PathLike[str] | str) -> list[str]:
    """On SIGTERM, write the signal name to ``marker`` and exit 0."""
    return python(
        f"""
        import signal, sys, time
        def on_term(signum, frame):
            with open({os.fspath(marker)!r}, "w") as f:
                f.write(signal.Signals(signum).name)
            sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
        print("ready")
        while True:
            time.sleep(3600)
        """
    )


#: Prints "got SIGUSR1" / "got SIGUSR2" for each such signal and keeps running;
#: SIGTERM keeps its default action (death).
PRINT_SIGNALS = python(
    """
    import signal, time
    def on_signal(signum, frame):
        print("got", signal.Signals(signum).name)
    signal.signal(signal.SIGUSR1, on_signal)
    signal.signal(signal.SIGUSR2, on_signal)
    print("ready")
    while True:
        time.sleep(3600)
    """
)

# --- process groups ---------------------------------------------------------

_GRANDCHILD = "import time\nwhile True:\n    time.sleep(3600)\n"

#: Starts a grandchild in its own process group that ignores SIGTERM (the
#: SIG_IGN disposition survives exec) and shares its stdout; prints the
#: grandchild's pid, then "ready", then sleeps with SIGTERM at its default.
SPAWN_GRANDCHILD = python(
    f"""
    import signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    gc = subprocess.Popen([sys.executable, "-I", "-S", "-c", {_GRANDCHILD!r}])
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    print(gc.pid)
    print("ready")
    while True:
        time.sleep(3600)
    """
)

#: Like SPAWN_GRANDCHILD, but the child exits 0 right after printing the pid:
#: the group leader is gone while a member holding stdout open lives on.
SPAWN_GRANDCHILD_EXIT_0 = python(
    f"""
    import signal, subprocess, sys
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    gc = subprocess.Popen([sys.executable, "-I", "-S", "-c", {_GRANDCHILD!r}])
    print(gc.pid)
    sys.exit(0)
    """
)


def SPAWN_DETACHED_GRANDCHILD(clean_env: bool = False) -> list[str]:
    """Start a grandchild that leaves the group (setsid) but keeps stdout and
    stderr open; print its pid, then "ready", then sleep.

    With ``clean_env`` the grandchild's environment holds nothing but the test
    tag: no marker the library could use to find it.  It is then out of the
    library's reach and the test must kill it itself.
    """
    env = f"{{{TAG_VAR!r}: os.environ[{TAG_VAR!r}]}}" if clean_env else "None"
    return python(
        f"""
        import os, subprocess, sys, time
        gc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", {_GRANDCHILD!r}],
            start_new_session=True,
            env={env},
        )
        print(gc.pid)
        print("ready")
        while True:
            time.sleep(3600)
        """
    )


#: Reports how it was started: own process group? stdin is /dev/null?
REPORT_SETUP = python(
    """
    import os, sys
    print("pgid==pid", os.getpgid(0) == os.getpid())
    print("stdin", os.readlink("/proc/self/fd/0"))
    print("stdin read", repr(sys.stdin.read()))
    """
)

PRINT_CWD = python("import os; print(os.getcwd())")


def PRINT_ENV(*names: str) -> list[str]:
    """Print ``NAME=value`` (or ``NAME unset``) for each name."""
    return python(
        f"""
        import os
        for name in {list(names)!r}:
            value = os.environ.get(name)
            print(f"{{name}} unset" if value is None else f"{{name}}={{value}}")
        """
    )


# --- output -------------------------------------------------------------------


def PRINT_LINES(n: int, stream: str = "stdout", prefix: str = "") -> list[str]:
    """Print ``f"{prefix}{i}"`` for i in range(n), in one write."""
    return python(
        f"""
        import sys
        out = sys.{stream}
        out.write("".join("{prefix}%d\\n" % i for i in range({n})))
        out.flush()
        """
    )


def PRINT_BOTH(n: int) -> list[str]:
    """Print ``out i`` to stdout and ``err i`` to stderr, interleaved."""
    return python(
        f"""
        import sys
        for i in range({n}):
            sys.stdout.write("out %d\\n" % i)
            sys.stderr.write("err %d\\n" % i)
        """
    )


def WRITE_BYTES(*chunks: bytes, stream: str = "stdout", pause: float = 0.0) -> list[str]:
    """Write each chunk of raw bytes with a flush (and a pause) after each."""
    return python(
        f"""
        import sys, time
        out = getattr(sys, {stream!r}).buffer
        for chunk in {list(chunks)!r}:
            out.write(chunk)
            out.flush()
            time.sleep({pause})
        """
    )


def WRITE_HEX(data: bytes, stream: str = "stdout") -> list[str]:
    """Write ``data`` (passed as hex: compact and exact) in one write."""
    return python(
        f"""
        import sys
        out = getattr(sys, {stream!r}).buffer
        out.write(bytes.fromhex({data.hex()!r}))
        out.flush()
        """
    )


def WRITE_REPEATED(unit: str, count: int, end: str = "\n") -> list[str]:
    """Write ``unit * count + end`` encoded as UTF-8, in one write."""
    return python(
        f"""
        import sys
        sys.stdout.buffer.write(({unit!r} * {count} + {end!r}).encode("utf-8"))
        sys.stdout.buffer.flush()
        """
    )


def PRINT_THEN_SLEEP(*lines: str) -> list[str]:
    """Print the lines, then "ready", then sleep forever."""
    return python(
        f"""
        import time
        for line in {list(lines)!r}:
            print(line)
        print("ready")
        while True:
            time.sleep(3600)
        """
    )


# --- watching processes from the test -------------------------------------------


#: True while a pid runs; a zombie (dead, not yet reaped) counts as gone.
pid_alive = _procfs.alive


def proc_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` from /proc, or None if it is gone."""
    stat = _procfs.stat(pid)
    return stat.state if stat is not None else None


def describe(pid: int) -> str:
    return f"{_procfs.describe(pid, 200)} [{proc_state(pid)}]"


def marked_pids(var: str, value: str, *, prefix: bool = False) -> list[int]:
    """Live processes (not zombies) whose environment holds ``var=value``
    (with `prefix`: ``var=value...``)."""
    found = _procfs.tagged(var, [value.encode()], exact=not prefix).get(value.encode(), [])
    return [pid for pid in found if _procfs.alive(pid)]


def tagged_pids(tag: str) -> list[int]:
    """Live processes (not zombies) whose environment carries the test tag ``tag``."""
    return marked_pids(TAG_VAR, tag)


def my_zombies() -> list[int]:
    """Children of this process that have exited but were never reaped."""
    return _procfs.zombies_of(os.getpid())


def kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


async def wait_pid_gone(pid: int) -> None:
    """Wait until ``pid`` (not necessarily our child) has died."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except OSError as exc:  # pragma: no cover - kernels without pidfd
        if exc.errno not in (errno.ENOSYS, errno.EPERM):
            raise
        await until(lambda: not pid_alive(pid), f"pid {pid} is gone")
        return
    try:
        # A pidfd becomes readable when the process exits.
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)


async def until(condition: Callable[[], bool], what: str, guard: float = T) -> None:
    """Check `condition()` every few ms until it holds: for outside states that
    announce nothing (no event, no pidfd); fails after `guard` seconds."""
    with trio.move_on_after(guard):
        while not condition():  # noqa: ASYNC110 - nothing to wait on: a state outside us
            await trio.sleep(0.005)
        return
    raise AssertionError(f"waited {guard} s in vain until {what}")


def wait_gone_sync(pids: list[int], timeout: float) -> list[int]:
    """Sync teardown helper: the pids still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in pids if pid_alive(pid)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


class Lines:
    """Lines collected in the background, with a way to wait for one."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.closed = False
        self._changed = trio.Event()

    def add(self, line: str) -> None:
        self.lines.append(line)
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[str], bool] | str) -> str:
        """The first line matching (or equal to) ``predicate``; fails at EOF."""
        pred = (lambda line: line == predicate) if isinstance(predicate, str) else predicate
        seen = 0
        while True:
            for line in self.lines[seen:]:
                if pred(line):
                    return line
            seen = len(self.lines)
            if self.closed:
                raise AssertionError(f"no line matched before the end; got {self.lines!r}")
            await self._changed.wait()

    async def wait_closed(self) -> None:
        while not self.closed:
            await self._changed.wait()

    async def pump_channel(self, channel: trio.abc.ReceiveChannel[str] | None) -> None:
        assert channel is not None, "not a streaming Cmd"
        async with channel:
            async for line in channel:
                self.add(line)
        self.close()

    async def pump_bytes(self, stream: trio.abc.ReceiveStream) -> None:
        buffer = b""
        while True:
            data = await stream.receive_some()
            if not data:
                break
            buffer += data
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                self.add(raw.decode(errors="replace"))
        if buffer:
            self.add(buffer.decode(errors="replace"))
        self.close()


INF = math.inf
