"""More child programs: the zoo of the random-program test and the fault-injection children.

Same conventions as ``children.py`` (whose snippets are reused here): run a
snippet as ``PY, *snippet``; a child that must be prepared before it is
acted on prints ``ready`` once it is.  Each zoo animal is described by a
`Kind`: what to run and what an untouched run of it (no stop, no kill, no
signal) must end with, so that a test can check any run it did not disturb.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import attrs
import children
from children import EXIT_0, EXIT_1, IGNORE_SIGTERM, KILL_SELF, PY, python

from trio_overseer import _procfs

#: An executable that does not exist: every start is `fatal`.
NO_SUCH_EXE = "/nonexistent/trio-overseer-zoo/no-such-program"

#: Dies of SIGSEGV sent to itself (no faulthandler: -I ignores PYTHONFAULTHANDLER).
SEGV_SELF = python("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")

_SLEEPER = "import time\nwhile True:\n    time.sleep(3600)\n"

#: Spawns two grandchildren and sleeps: one in its process group that
#: ignores SIGTERM (only SIGKILL ends it), one that escaped the group with
#: setsid() (only the tag sweep finds it).  Prints ``group <pid>``,
#: ``escaped <pid>``, then ``ready``.
SPAWN_TREE = python(
    f"""
    import signal, subprocess, sys, time
    argv = [sys.executable, "-I", "-S", "-c", {_SLEEPER!r}]
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    member = subprocess.Popen(argv)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    escaped = subprocess.Popen(argv, start_new_session=True)
    sys.stdout.write(f"group {{member.pid}}\\n")  # one write per line (-u)
    sys.stdout.write(f"escaped {{escaped.pid}}\\n")
    print("ready")
    while True:
        time.sleep(3600)
    """
)

FAST_LINES = 3000


def PRINT_FAST(n: int = FAST_LINES, chunk: int = 100) -> list[str]:
    """Print ``0`` .. ``n - 1``, one line each, flushing every `chunk` lines."""
    return python(
        f"""
        import sys
        out = sys.stdout
        for start in range(0, {n}, {chunk}):
            out.write("".join("%d\\n" % i for i in range(start, min(start + {chunk}, {n}))))
            out.flush()
        """
    )


#: Two lines and a last line without a newline, on stdout and on stderr.
PARTIAL_LAST_LINE = python(
    """
    import sys
    sys.stdout.write("one\\ntwo\\nno newline")
    sys.stderr.write("err\\nerr no newline")
    """
)
PARTIAL_STDOUT = ("one", "two", "no newline")
PARTIAL_STDERR = ("err", "err no newline")


@attrs.frozen
class Outcome:
    """How an untouched run ends: final state name, exit code, error fragment."""

    state: str
    exit: int
    error: str | None = None  # a fragment of the error text; None: no error at all


@attrs.frozen
class Kind:
    """A zoo animal: how to start it and how an untouched run of it ends."""

    exec: str
    args: tuple[str, ...]
    #: None for a child that runs until it is stopped.
    outcome: Outcome | None
    #: Exactly the lines an untouched run prints, (stdout, stderr); None: unchecked.
    lines: tuple[tuple[str, ...], tuple[str, ...]] | None = None


def _kind(
    exec: str,
    args: Sequence[str],
    outcome: Outcome | None,
    lines: tuple[tuple[str, ...], tuple[str, ...]] | None = None,
) -> Kind:
    return Kind(exec, tuple(args), outcome, lines)


ZOO: dict[str, Kind] = {
    "EXIT_0": _kind(PY, EXIT_0, Outcome("finished", 0), ((), ())),
    "EXIT_1": _kind(PY, EXIT_1, Outcome("finished", 1), ((), ())),
    "SEGV_SELF": _kind(PY, SEGV_SELF, Outcome("interrupted", -11, "signal: SIGSEGV"), ((), ())),
    "KILL_SELF": _kind(PY, KILL_SELF, Outcome("interrupted", -9, "signal: SIGKILL"), ((), ())),
    "IGNORE_SIGTERM": _kind(PY, IGNORE_SIGTERM, None),
    "SPAWN_TREE": _kind(PY, SPAWN_TREE, None),
    "PRINT_FAST": _kind(
        PY, PRINT_FAST(), Outcome("finished", 0), (tuple(map(str, range(FAST_LINES))), ())
    ),
    "PARTIAL_LAST_LINE": _kind(
        PY, PARTIAL_LAST_LINE, Outcome("finished", 0), (PARTIAL_STDOUT, PARTIAL_STDERR)
    ),
    "NO_SUCH_EXE": _kind(NO_SUCH_EXE, (), Outcome("fatal", -1, "No such file or directory")),
}


# --- fault injection -------------------------------------------------------------

#: Prints ``before`` on stdout, closes its stdout, says ``stdout closed`` on
#: stderr, then waits for SIGUSR1, says ``bye`` on stderr and exits 3.
CLOSE_STDOUT_EARLY = python(
    """
    import os, signal, sys
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    print("before", flush=True)
    sys.stdout = None
    os.close(1)
    print("stdout closed", file=sys.stderr, flush=True)
    signal.sigwait({signal.SIGUSR1})
    print("bye", file=sys.stderr, flush=True)
    sys.exit(3)
    """
)

#: Writes ``x`` forever, never a newline, in writes of 4 KiB.
NO_NEWLINE_FOREVER = python(
    """
    import os
    data = b"x" * 4096
    while True:
        os.write(1, data)
    """
)


def FORK_BOMB(n: int) -> list[str]:
    """Forks `n` children as fast as it can, every other one escaping with setsid().

    Everyone ignores SIGTERM and holds stdout open; each escaped child forks a
    child of its own.  Prints ``ready`` after 10 forks and keeps forking.
    """
    return python(
        f"""
        import os, signal, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

        def sleep_forever():
            while True:
                time.sleep(3600)

        for i in range({n}):
            if os.fork() == 0:
                if i % 2:
                    os.setsid()
                    if os.fork() == 0:
                        sleep_forever()
                sleep_forever()
            if i == 9:
                print("ready", flush=True)
        print("forked", {n}, flush=True)
        sleep_forever()
        """
    )


#: PRINT_SIGNALS without Python, for a child that runs as another user (who
#: may not read this Python): prints ``got SIGUSR1`` / ``got SIGUSR2`` per
#: signal, ``ready`` once prepared; no fork after that (its sleep ignores both).
SH_PRINT_SIGNALS = [
    "-c",
    """
    trap '' USR1 USR2
    sleep 1000000 &
    trap 'echo got SIGUSR1' USR1
    trap 'echo got SIGUSR2' USR2
    echo ready
    while kill -0 $! 2>/dev/null; do wait $!; done
    """,
]

#: The environment variable of `marked_pids`.
MARK_VAR = "TRIO_OVERSEER_ZOO_MARK"


def marked_pids(mark: str) -> list[int]:
    """Live processes (not zombies) whose environment holds ``MARK_VAR=mark``."""
    return children.marked_pids(MARK_VAR, mark)


def tasks_of_user(uid: int) -> int:
    """How many tasks (threads included) run with real uid `uid`: what RLIMIT_NPROC counts."""
    count = 0
    for pid in _procfs.pids():
        if _procfs.status_value(pid, "Uid") == str(uid):
            with contextlib.suppress(OSError):
                count += len(os.listdir(f"{_procfs.PROC}/{pid}/task"))
    return count


_LET_GO_ON_SIGTERM = """
import os, signal, time
def let_go(signum, frame):
    os.close(1)  # lets go of the pipes, and lives on
    os.close(2)
signal.signal(signal.SIGTERM, let_go)
print("armed", flush=True)
while True:
    time.sleep(3600)
"""

#: Starts a grandchild that escaped the group (setsid) and, on SIGTERM, closes
#: its stdout and stderr (the pipes) but lives on; prints ``escaped <pid>``,
#: the grandchild prints ``armed`` once its handler is in place; then ``ready``.
SPAWN_ESCAPED_LETTING_GO = python(
    f"""
    import subprocess, sys, time
    argv = [sys.executable, "-I", "-S", "-c", {_LET_GO_ON_SIGTERM!r}]
    escaped = subprocess.Popen(argv, start_new_session=True)
    sys.stdout.write(f"escaped {{escaped.pid}}\\n")
    print("ready")
    while True:
        time.sleep(3600)
    """
)


#: Starts a grandchild that escaped the group (setsid), with its output to
#: /dev/null (no pipe held open), then exits 1: a launcher that fails and
#: leaves a daemon behind.
SPAWN_ESCAPED_THEN_EXIT_1 = python(
    f"""
    import subprocess, sys
    argv = [sys.executable, "-I", "-S", "-c", {_SLEEPER!r}]
    subprocess.Popen(
        argv, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    sys.exit(1)
    """
)
