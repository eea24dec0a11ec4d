"""How an Overseer's procs end: the one shutdown path and the one signal policy.

Theory of operation.  Whatever runs procs (the `open_overseer()` block, a
`supervise()` or `supervise_all()`) does it inside `Lifetime.open`.  The
block owns the procs: when it is left, by any path (its end, an exception,
a cancellation), the one cleanup runs, shielded and bounded, as trio's
`_run_process` has exactly one ``except BaseException:``.  Without a block,
uses count: the cleanup runs when the last one leaves.

1. stop every proc (the caller's `stop_all`);
2. wait until no supervision is left, at most the longest worst-case stop
   time that the runs state themselves (`Cmd._max_stop_time`);
3. sweep what escaped their process groups (`Scanner.sweep`, bounded by
   `Scanner.max_sweep_time`);
4. dismiss the watchdog (`_watchdog`): nothing is left for it to kill.

The resources that live while procs run are here too: the tag every child
carries (``<token>.<run>``, see `_sweep`), the scanner that coalesces
sweeps, the watchdog, and the count of supervisions in progress.

The signal policy (`take_signals`), the same for the block, for
`supervise_all()` and for the CLI: a signal arriving is a request to end;
the first asks for a graceful stop, every later one for a kill.  A library
must not take a signal the application handles: `takeable_signals` keeps
only those whose handler is still the default one, and only in the main
thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal as _signal
import threading
from collections.abc import AsyncIterator, Callable

import attrs
import trio

from ._signals import describe_signal
from ._sweep import Scanner
from ._watchdog import Watchdog

__all__ = ["Lifetime", "take_signals", "takeable_signals"]

logger = logging.getLogger("trio_overseer")

_SLACK = 1.0  # seconds on top of the runs' stated worst case, for the tasks to finish


def _set_event() -> trio.Event:
    event = trio.Event()
    event.set()
    return event


@attrs.define(eq=False)
class Lifetime:
    """What an Overseer's runs share while any may run, and the one way it ends."""

    stop_timeout: float  # the Overseer's: the final sweep's grace before SIGKILL
    # Every child carries the tag "<token>.<run>" (see _sweep); the watchdog
    # kills them all if this process dies without cleaning up.
    token: str = attrs.field(factory=lambda: f"{os.getpid()}-{secrets.token_hex(6)}")
    scanner: Scanner = attrs.field(factory=Scanner)
    stopping: bool = False  # a stop_all() waits for supervisions to end; cleared when idle
    _watchdog: Watchdog | None = None  # started with the first supervision, dismissed at the end
    _users: int = 0  # open() blocks in progress (nested: the block, supervise() in it...)
    _active: int = 0  # supervisions in progress
    _idle: trio.Event = attrs.field(factory=_set_event)  # set while _active == 0

    @property
    def supervisions(self) -> int:
        """How many supervisions are in progress."""
        return self._active

    def claimed(self) -> None:
        """A supervision begins (the watchdog starts with the first one)."""
        if self._active == 0:
            self._idle = trio.Event()
        self._active += 1
        if self._watchdog is None:
            self._watchdog = Watchdog.start(self.token)

    def released(self) -> None:
        """A supervision has ended."""
        self._active -= 1
        if self._active == 0:
            self.stopping = False
            self._idle.set()

    def watch(self, pgid: int) -> None:
        """A run's process group is alive: the watchdog kills it if we die."""
        if self._watchdog is not None:
            self._watchdog.register(pgid)

    def unwatch(self, pgid: int) -> None:
        """That group is gone."""
        if self._watchdog is not None:
            self._watchdog.unregister(pgid)

    async def wait_idle(self) -> None:
        """Until no supervision is in progress.

        Cancellation: safe.
        """
        await self._idle.wait()

    @contextlib.asynccontextmanager
    async def open(
        self,
        stop_all: Callable[[], None],
        max_stop_time: Callable[[], float],
        *,
        owner: bool = False,
    ) -> AsyncIterator[None]:
        """Run procs inside; when the `owner` leaves, or the last user, shut down.

        `stop_all` stops every proc (sync); `max_stop_time` says how long the
        slowest of the current runs may take to end (see the module docs).
        The owner (the block) ends every proc, also those of the users still
        inside (a supervise() running in a task outside the block).

        Cancellation: the shutdown runs shielded and bounded, then the
        cancellation propagates.
        """
        self._users += 1
        try:
            yield
        finally:
            self._users -= 1
            if owner or self._users == 0:
                await self._shut_down(stop_all, max_stop_time)

    async def _shut_down(
        self, stop_all: Callable[[], None], max_stop_time: Callable[[], float]
    ) -> None:
        """Stop all, wait for every supervision (bounded), sweep, dismiss the watchdog."""
        stop_all()
        with trio.CancelScope(shield=True):
            if self._active:
                limit = max_stop_time() + _SLACK
                with trio.move_on_after(limit) as waited:
                    await self._idle.wait()
                if waited.cancelled_caught:
                    logger.error("procs still running after %.3g s of cleanup", limit)
            prefix = (self.token + ".").encode()
            await self.scanner.sweep(prefix, _signal.SIGTERM, self.stop_timeout)
        if self._watchdog is not None:
            self._watchdog.close()
            self._watchdog = None


# -- the signal policy ----------------------------------------------------------------


def takeable_signals(*signals: int) -> tuple[int, ...]:
    """Those of `signals` that are ours to take: all of them still at their
    default handling, in the main thread (none elsewhere: Python delivers
    signals to the main thread only).

    Default means SIG_DFL, Python's own SIGINT handler, or the handler by
    which ``trio.run`` turns that one into KeyboardInterrupt (it installs it
    only where it found Python's).  A handler the application installed
    (SIG_IGN, its own function, an open ``trio.open_signal_receiver``) is
    never replaced: the application keeps that signal.
    """
    if threading.current_thread() is not threading.main_thread():
        return ()
    free = []
    for sig in signals:
        handler = _signal.getsignal(sig)
        if (
            handler == _signal.SIG_DFL
            or handler is _signal.default_int_handler
            or getattr(handler, "__module__", None) == "trio._core._ki"
        ):
            free.append(sig)
    return tuple(free)


async def take_signals(
    signals: tuple[int, ...],
    react: Callable[[int, bool], None],
    *,
    say: Callable[[str], None] = logger.warning,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Take `signals` until cancelled: each is a request to end.

    The first one is said (`say`) and asks for a graceful stop,
    ``react(sig, False)``; every later one for a kill, ``react(sig, True)``.
    Reports started once the signals are taken.  `signals` should come from
    `takeable_signals` (the CLI, which owns its process, takes its own).

    Cancellation: the signals' handlers are restored.
    """
    if not signals:  # none is ours to take
        task_status.started()
        return
    with trio.open_signal_receiver(*signals) as received:
        task_status.started()
        again = False
        async for sig in received:
            name = describe_signal(sig)
            if again:
                say(f"{name} received again: killing every proc")
            else:
                say(f"{name} received: stopping every proc (again to kill)")
            react(sig, again)
            again = True
