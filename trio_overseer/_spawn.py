"""Spawning a child in its own process group, waiting for it, signalling the group.

Why not `trio.lowlevel.open_process`: it runs `subprocess.Popen` in a worker
thread, which costs far more parent CPU per spawn than the fork/exec itself.
Here the child is made inline by glibc's posix_spawn (see `_posix_spawn`:
about half of Popen's CPU, and the GIL is released while the vfork'ed child
gets to its exec), or by `Popen` where that is not available (with
``process_group=0``: no `preexec_fn`, so CPython can use vfork).  The exit
is awaited on a pidfd (Linux) or a kqueue (macOS, BSD): no thread, no
polling.  The child is reaped exactly once, by `ChildProcess.wait` (through
its `Popen` when there is one, so CPython never reaps a recycled pid later).
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
from collections import deque
from collections.abc import Mapping, Sequence

import trio

from . import _posix_spawn, _procfs
from ._pty import PtyStream, open_pty

_HAS_PIDFD = hasattr(os, "pidfd_open")
_HAS_KQUEUE = hasattr(select, "kqueue")
_POSIX_SPAWN = _posix_spawn.load()  # None: Popen it is (read-only once loaded)

#: What a child's output is read from: a pipe, or the master of its pty.
Reader = trio.lowlevel.FdStream | PtyStream


class ChildProcess:
    """A spawned child: its pid and an awaitable, reaping `wait()`."""

    __slots__ = ("_pidfd", "_popen", "_spawns", "pid", "returncode")

    def __init__(self, pid: int, popen: subprocess.Popen[bytes] | None = None) -> None:
        self._popen = popen
        self._spawns: _RunSpawns | None = None
        self.pid = pid
        self.returncode: int | None = None
        """The return code once reaped (negative: the signal), else None."""
        self._pidfd: int | None = None
        if _HAS_PIDFD:
            with contextlib.suppress(OSError):
                self._pidfd = os.pidfd_open(pid)

    async def wait(self) -> int:
        """Wait for the exit without blocking the loop, reap, return the code.

        Cancellation: safe; the child is neither signalled nor reaped.
        """
        if self.returncode is None:
            if self._pidfd is not None:
                await trio.lowlevel.wait_readable(self._pidfd)
            elif sys.platform != "linux" and _HAS_KQUEUE:  # pragma: no cover
                await _wait_kqueue(self.pid)
            else:  # pragma: no cover - Linux before 5.3
                raise NotImplementedError("waiting for a child needs pidfd (Linux 5.3+) or kqueue")
            self._reap()  # it has exited: this does not block
            self._close()
        assert self.returncode is not None
        return self.returncode

    def _reap(self) -> None:
        if self._popen is not None:
            self.returncode = self._popen.wait()
            return
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            # SIGCHLD ignored, or someone else reaped it: the status is lost
            # (Popen says 0 too).
            self.returncode = 0
        else:
            self.returncode = os.waitstatus_to_exitcode(status)

    def close(self) -> None:
        """Release the pidfd (the child is reaped by `wait`)."""
        self._close()

    def _count_in(self, spawns: _RunSpawns) -> None:
        spawns.live += 1
        self._spawns = spawns

    def _close(self) -> None:
        if self._spawns is not None:
            self._spawns.live -= 1
            self._spawns = None
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


# Worker threads that run queued spawns (each waits for its child's exec off
# the loop).  Few on purpose: every thread contends with the loop for the
# GIL, and each hop serves every spawn queued meanwhile.  50 spawns at a time
# measured 1,110–1,170/s with 4 threads, 950–1,030/s with 16, 1,030/s with 1.
_SPAWN_THREADS = 4


class _RunSpawns:
    """Per Trio run: children not yet reaped, and the threads spawns may use."""

    __slots__ = ("live", "queue", "runners")

    def __init__(self) -> None:
        self.live = 0  # ChildProcess objects of this run not yet closed
        self.queue: deque[_Job] = deque()  # spawns waiting for a worker thread
        self.runners = 0  # worker threads draining the queue

    @staticmethod
    def current() -> _RunSpawns:
        try:
            return _run_spawns.get()
        except LookupError:
            spawns = _RunSpawns()
            _run_spawns.set(spawns)
            return spawns


_run_spawns: trio.lowlevel.RunVar[_RunSpawns] = trio.lowlevel.RunVar("trio_overseer_spawns")


async def spawn(
    argv: Sequence[str],
    *,
    cwd: str | None,
    env: Mapping[bytes, bytes] | None,
    capture: bool,
    pty: tuple[int, int] | None = None,
) -> tuple[ChildProcess, Reader | None, Reader | None]:
    """Start `argv` as the leader of a new process group, stdin from /dev/null.

    With `capture`, stdout and stderr are pipes whose read ends are returned;
    otherwise they go to /dev/null.  With `pty` (its columns and rows), both
    are the slave of one new pseudo-terminal (see `_pty`) and only the
    master is returned, as stdout.  No other descriptor is inherited.

    The calling thread waits until the child has reached its exec, which on
    a busy machine takes milliseconds (a new task queues for a CPU).  When
    the loop has other work meanwhile (other children alive, or tasks ready
    to run) and the spawn releases the GIL (posix_spawn), it is queued for
    a worker thread (at most `_SPAWN_THREADS`, each running the spawns
    queued meanwhile one after another), so that spawns overlap each other
    and the loop goes on; otherwise it runs inline, cheaper than a thread
    hop.

    Cancellation: shielded (it ends within milliseconds, even queued for a
    thread, and the caller then owns the child, which a cancellation at its
    next checkpoint stops like any other).  A checkpoint only when it used a
    thread.

    Raises:
      OSError: the OS refused (missing file, not executable, bad cwd, no fds
        or processes left), as `subprocess.Popen` reports it;
        `PtyUnavailableError` when no pty could be opened.
    """
    out_r, out_w, err_r, err_w = _open_ends(capture, pty)
    spawns = _RunSpawns.current()
    try:
        if _POSIX_SPAWN is not None and (out_w is None or min(out_w, err_w or 0) >= 3):
            prepared = _POSIX_SPAWN.prepare(argv, cwd=cwd, env=env, stdout=out_w, stderr=err_w)
            try:
                pid = await _run_spawn(prepared, spawns)
            finally:
                prepared.close()
            popen = None
        else:  # no posix_spawn here, or our stdout/stderr were closed: Popen sorts it out
            popen = _popen(argv, cwd, env, out_w, err_w)
            pid = popen.pid
    except BaseException:
        for fd in {fd for fd in (out_r, out_w, err_r, err_w) if fd is not None}:
            os.close(fd)
        raise
    # The child's ends (a pty's slave once): only the child holds them now.
    for end in {fd for fd in (out_w, err_w) if fd is not None}:
        os.close(end)
    child = ChildProcess(pid, popen)
    child._count_in(spawns)
    if out_r is None:
        return child, None, None
    if pty is not None:
        return child, PtyStream(out_r), None
    assert err_r is not None
    return child, trio.lowlevel.FdStream(out_r), trio.lowlevel.FdStream(err_r)


def _open_ends(
    capture: bool, pty: tuple[int, int] | None
) -> tuple[int | None, int | None, int | None, int | None]:
    """The child's output: (stdout read end, its write end, the same for stderr).

    A pty's slave is both write ends (stderr merged, as in a shell); without
    `capture` there is none (the child writes to /dev/null).
    """
    if pty is not None:
        out_r, out_w = open_pty(pty)
        return out_r, out_w, None, out_w
    if not capture:
        return None, None, None, None
    out_r, out_w = _pipe()
    try:
        err_r, err_w = _pipe()
    except BaseException:
        os.close(out_r)
        os.close(out_w)
        raise
    return out_r, out_w, err_r, err_w


async def _run_spawn(prepared: _posix_spawn.Prepared, spawns: _RunSpawns) -> int:
    """Run a prepared spawn: in a worker thread when the loop has other work, else inline."""
    if not (spawns.live or trio.lowlevel.current_statistics().tasks_runnable):
        return prepared.run()
    job = _Job(prepared)
    spawns.queue.append(job)
    # Shielded: queued for a thread, it still ends within milliseconds, and a
    # cancellation then stops the child like any other.
    with trio.CancelScope(shield=True):
        if spawns.runners < _SPAWN_THREADS:
            await _run_queue(spawns)
        await job.done.wait()
    if job.error is not None:
        raise job.error
    return job.pid


class _Job:
    """A spawn waiting for a worker thread, and then its outcome."""

    __slots__ = ("done", "error", "pid", "prepared")

    def __init__(self, prepared: _posix_spawn.Prepared) -> None:
        self.prepared = prepared
        self.done = trio.Event()
        self.pid = 0
        self.error: BaseException | None = None


async def _run_queue(spawns: _RunSpawns) -> None:
    """Run queued spawns in a worker thread until the queue is empty.

    One thread hop serves every spawn queued meanwhile: the hop costs the
    loop more than a spawn does (each time the thread wins the GIL back from
    the busy loop).
    """
    spawns.runners += 1
    try:
        while spawns.queue:
            try:
                done = await trio.to_thread.run_sync(_drain, spawns.queue)
            except RuntimeError as exc:
                if "can't start new thread" not in str(exc):
                    raise
                # No thread to be had (RLIMIT_NPROC counts threads): spawn inline,
                # and let the OS say why a process cannot be made either.
                done = _drain(spawns.queue)
            for job in done:
                job.done.set()
    finally:
        spawns.runners -= 1


def _drain(queue: deque[_Job]) -> list[_Job]:
    """Run the spawns of `queue` until it is empty (safe in a worker thread)."""
    done: list[_Job] = []
    while True:
        try:
            job = queue.popleft()  # atomic: other threads drain it too
        except IndexError:
            return done
        try:
            job.pid = job.prepared.run()
        except BaseException as exc:  # the owner re-raises it
            job.error = exc
        done.append(job)


def _popen(
    argv: Sequence[str],
    cwd: str | None,
    env: Mapping[bytes, bytes] | None,
    out_w: int | None,
    err_w: int | None,
) -> subprocess.Popen[bytes]:
    """The child made by Popen (inline: it holds the GIL until the exec anyway)."""
    sink = subprocess.DEVNULL
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=sink if out_w is None else out_w,
        stderr=sink if err_w is None else err_w,
        cwd=cwd,
        env=env,
        process_group=0,
        close_fds=True,
    )


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
    group's leader was reaped, so that `ChildProcess.wait` got its status.
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
    return _procfs.has_living_member(pgid)
