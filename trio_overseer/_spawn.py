"""Spawning a child in its own process group, waiting for it, signalling the group.

Why not `trio.lowlevel.open_process`: it runs `subprocess.Popen` in a worker
thread, which costs far more parent CPU per spawn than the fork/exec itself.
Here `Popen` runs inline (with ``process_group=0``: no `preexec_fn`, so
CPython can use vfork), and the exit is awaited on a pidfd (Linux) or a
kqueue (macOS, BSD): no thread, no polling.  `Popen` still reaps the child,
so CPython never reaps a recycled pid later.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence

import trio

_HAS_PIDFD = hasattr(os, "pidfd_open")
_HAS_KQUEUE = hasattr(select, "kqueue")


class ChildProcess:
    """A spawned child: its pid and an awaitable, reaping `wait()`."""

    __slots__ = ("_pidfd", "_popen", "pid")

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self._pidfd: int | None = None
        if _HAS_PIDFD:
            with contextlib.suppress(OSError):
                self._pidfd = os.pidfd_open(self.pid)

    @property
    def returncode(self) -> int | None:
        """The return code once reaped, else None."""
        return self._popen.returncode

    async def wait(self) -> int:
        """Wait for the exit without blocking the loop, reap, return the code.

        Cancellation: safe; the child is neither signalled nor reaped.
        """
        if self._popen.returncode is None:
            if self._pidfd is not None:
                await trio.lowlevel.wait_readable(self._pidfd)
            elif sys.platform != "linux" and _HAS_KQUEUE:  # pragma: no cover
                await _wait_kqueue(self.pid)
            else:  # pragma: no cover - Linux before 5.3
                raise NotImplementedError("waiting for a child needs pidfd (Linux 5.3+) or kqueue")
            self._popen.wait()  # it has exited: this only reaps
            self._close()
        return self._popen.wait()

    def close(self) -> None:
        """Release the pidfd (the child is reaped by `wait`)."""
        self._close()

    def _close(self) -> None:
        if self._pidfd is not None:
            fd, self._pidfd = self._pidfd, None
            trio.lowlevel.notify_closing(fd)
            os.close(fd)


if sys.platform != "linux":  # pragma: no cover - macOS/BSD: kqueue tells when a pid exits

    async def _wait_kqueue(pid: int) -> None:
        kqueue = trio.lowlevel.current_kqueue()
        event = select.kevent(
            pid,
            filter=select.KQ_FILTER_PROC,
            flags=select.KQ_EV_ADD | select.KQ_EV_ONESHOT,
            fflags=select.KQ_NOTE_EXIT,
        )
        try:
            kqueue.control([event], 0)
        except ProcessLookupError:
            return  # already exited

        def abort(_: object) -> trio.lowlevel.Abort:
            event.flags = select.KQ_EV_DELETE
            with contextlib.suppress(OSError):
                kqueue.control([event], 0)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_kevent(pid, select.KQ_FILTER_PROC, abort)


def _pipe() -> tuple[int, int]:
    # The default size (64 KiB on Linux) on purpose: growing pipes uses up a
    # per-user allowance (pipe-user-pages-soft) after a few dozen procs, and
    # then every new pipe of that user, in any program, shrinks to one page.
    return os.pipe()


def spawn(
    argv: Sequence[str],
    *,
    cwd: str | None,
    env: Mapping[bytes, bytes] | None,
    capture: bool,
) -> tuple[ChildProcess, trio.lowlevel.FdStream | None, trio.lowlevel.FdStream | None]:
    """Start `argv` as the leader of a new process group, stdin from /dev/null.

    With `capture`, stdout and stderr are pipes whose read ends are returned;
    otherwise they go to /dev/null.  Raises OSError when the OS refuses
    (missing file, not executable, bad cwd, no fds or processes left).
    """
    fds: list[int] = []
    try:
        if capture:
            out_r, out_w = _pipe()
            fds += (out_r, out_w)
            err_r, err_w = _pipe()
            fds += (err_r, err_w)
            stdout: int = out_w
            stderr: int = err_w
        else:
            stdout = stderr = subprocess.DEVNULL
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            env=env,
            process_group=0,
            close_fds=True,
        )
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    if not capture:
        return ChildProcess(popen), None, None
    os.close(out_w)
    os.close(err_w)
    return ChildProcess(popen), trio.lowlevel.FdStream(out_r), trio.lowlevel.FdStream(err_r)


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to the process group `pgid`; False when the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a member we may not signal (setuid): the group still exists
    return True


def group_exists(pgid: int) -> bool:
    """Whether any living process is left in the group `pgid`.

    Zombies do not count: they are dead, only not yet reaped.  Our own are
    reaped here (when this process is a subreaper, or PID 1 of a container,
    the orphans of its children are its children); others wait for their
    parent, often init, which may take its time.  Call only after the
    group's leader was reaped, so its `Popen` keeps its status.
    """
    while True:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
    if not signal_group(pgid, 0):
        return False
    return _living_member(pgid)


def _living_member(pgid: int) -> bool:
    """Whether /proc shows a member of `pgid` that is not a zombie (True without /proc)."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return True
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split(b" ", 3)
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return not os.path.isdir("/proc/self")


def signal_name(sig: int) -> str:
    """``SIGTERM`` for 15; a number for signals without a name."""
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"
