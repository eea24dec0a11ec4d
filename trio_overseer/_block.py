"""`open_overseer()`: an Overseer whose procs cannot outlive the block.

Theory of operation.  The block owns the Overseer's nursery; `start()` runs
supervisions in it.  Every way out of the body (normal end, exception,
cancellation, KeyboardInterrupt) goes through the one shutdown path,
`Overseer._running` (see `_lifetime`): stop every proc, wait for all of them
(shielded and bounded), sweep escaped descendants, dismiss the watchdog;
then the subscriber channels are closed.

With `handle_signals`, the one signal policy (`_lifetime.take_signals`)
turns SIGINT/SIGTERM/SIGHUP into a graceful `stop_all()` (a second signal:
kill); the block waits until nothing is supervised, then cancels the body;
once the cleanup is done it ends as the signal would have ended the
program: KeyboardInterrupt for SIGINT, death by the signal itself for
SIGTERM and SIGHUP.  Python's default SIGTERM would have skipped every
`finally`, so every child would have leaked.

A library must not take a signal the application handles: only the signals
whose handler is still the default one when the block is entered are taken
(`_lifetime.takeable_signals`).  One the application handles (its own
handler, SIG_IGN, an open `trio.open_signal_receiver`) stays the
application's, and the block then ends only the way the application ends it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal as _signal
from collections.abc import AsyncIterator
from typing import NoReturn

import trio

from ._lifetime import take_signals, takeable_signals
from ._overseer import Overseer

logger = logging.getLogger("trio_overseer")

_BLOCK_SIGNALS = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)


@contextlib.asynccontextmanager
async def open_overseer(
    *,
    stop_timeout: float = 5.0,
    handle_signals: bool = True,
    backoff_base: float = 0.1,
    backoff_max: float = 30.0,
    seed: int | None = None,
) -> AsyncIterator[Overseer]:
    """Open an Overseer whose procs cannot outlive the block.

    Leaving the block by any path stops every proc (stop signal, SIGKILL after
    its stop_timeout) and reaps it before the block exits, then closes every
    subscriber channel.  With `handle_signals` (main thread only), SIGINT,
    SIGTERM or SIGHUP stop every proc gracefully (a second one kills); then
    the block raises KeyboardInterrupt for SIGINT, and for SIGTERM/SIGHUP the
    program dies of that signal.

    An exception raised by the body comes out of the block as it was raised,
    not wrapped in an `ExceptionGroup` by the block's nursery: ``except
    ValueError`` around the block works.  Only when something else failed
    too (a proc's task, the cleanup) is the exception a group of all of them.

    Cancellation: as any other way out of the block.
    """
    ovr = Overseer(
        stop_timeout=stop_timeout,
        handle_signals=handle_signals,
        backoff_base=backoff_base,
        backoff_max=backoff_max,
        seed=seed,
    )
    received: list[int] = []  # the signal that ends the block, if any
    body_exc: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:

            def react(sig: int, again: bool) -> None:
                """A signal: stop all (again: kill), then end the body once idle."""
                if not again:
                    received.append(sig)
                    nursery.start_soon(_cancel_when_idle, ovr, nursery.cancel_scope)
                ovr.stop_all(kill=again)

            async with ovr._running(nursery, block=True):
                signals = takeable_signals(*_BLOCK_SIGNALS) if handle_signals else ()
                await nursery.start(take_signals, signals, react)
                try:
                    yield ovr
                except BaseException as exc:
                    body_exc = exc
                    raise
            nursery.cancel_scope.cancel()  # the signal task
    except BaseExceptionGroup as group:
        # The nursery wraps the body's own exception: give it back as it was.
        if body_exc is not None and group.exceptions == (body_exc,):
            _reraise(body_exc)
        raise
    if received == [_signal.SIGINT]:
        raise KeyboardInterrupt
    if received:
        _die_of(received[0])


async def _cancel_when_idle(ovr: Overseer, body: trio.CancelScope) -> None:
    await ovr._wait_idle()
    body.cancel()


def _reraise(exc: BaseException) -> NoReturn:
    """Raise `exc` again, keeping its own cause and context."""
    cause, context, suppress = exc.__cause__, exc.__context__, exc.__suppress_context__
    try:
        raise exc
    finally:
        exc.__cause__, exc.__context__ = cause, context
        exc.__suppress_context__ = suppress
        del exc


def _die_of(sig: int) -> NoReturn:
    """End this process by `sig`, as it would have without our handler."""
    _signal.signal(sig, _signal.SIG_DFL)
    os.kill(os.getpid(), sig)
    raise SystemExit(128 + sig)  # pragma: no cover - only if the signal is blocked
