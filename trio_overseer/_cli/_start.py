"""``trio-overseer start``: supervise the procs of a config file until they end.

Theory of operation.  One Trio run holds, from the outside in:

    signal receiver (SIGINT, SIGTERM, SIGHUP), opened first: Ctrl+C never
      raises KeyboardInterrupt in here, it is a request to stop
    outer nursery: the signal watcher, until the last line is written, and
      the writer of our own messages to stderr (never blocks either)
      output nursery: the dispatcher, sole consumer of state changes and
        lines, and the writer of stdout (see `_dispatch`)
        open_overseer(handle_signals=False): stops and reaps every proc on exit
          services nursery: control socket server
            procs nursery: one task per supervision, `ovr.supervise(id)`

The instance ends when the procs nursery is empty: every proc has reached
a final state and no restart is pending or underway.  A `restart` request
runs in the procs nursery (stop, wait for the supervision to end, supervise
again), so the instance cannot end in the middle of one.  Then the control
server says goodbye, the Overseer block closes the subscriber channel, and
the dispatcher prints what is left.  A stdout that stops taking output
holds the procs back (see `_dispatch`); after a signal, one that takes
nothing for `_STUCK_OUTPUT` seconds is abandoned so that the instance ends.

Exit status: 130 after SIGINT, SIGTERM or SIGHUP; 141 when stdout was
closed or cannot be written (the procs are stopped as for Ctrl+C); 2 when
the Overseer refused a
proc (nothing ran); otherwise 0 when every proc ended with exit code 0 or was
stopped on request (`stop` while it was supervised), else 1.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, TextIO

import attrs
import trio

from .._block import open_overseer
from .._overseer import Overseer
from .._records import ProcessInfo
from .._spawn import signal_name
from .._state import State
from ._config import ProcSpec
from ._control import ControlServer, RequestError
from ._dispatch import Dispatcher
from ._printer import Printer, state_dict
from ._writer import Messages, Writer

__all__ = ["EXIT_BROKEN_PIPE", "EXIT_INTERRUPTED", "EXIT_USAGE", "Instance"]

EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
EXIT_USAGE = 2
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_LIVE = frozenset({State.STARTING, State.RUNNING, State.STOPPING})
_REACHED = frozenset({State.RUNNING, State.FATAL, State.FINISHED, State.INTERRUPTED})
_DRAIN_WAIT = 1.0  # seconds for the last lines to reach `logs -f` clients at the end
_KILL_MARGIN = 10.0  # seconds on top of a proc's stop_timeout for a requested stop
_STUCK_OUTPUT = 2.0  # seconds a stdout may take nothing, once a signal ends the instance
_MESSAGES_GRACE = 1.0  # seconds for our last messages to reach stderr


def _log_handlers_on(stream: TextIO) -> list[logging.StreamHandler[TextIO]]:
    """The handlers of the library's logger that write to `stream`."""
    return [
        handler
        for handler in logging.getLogger("trio_overseer").handlers
        if isinstance(handler, logging.StreamHandler) and handler.stream is stream
    ]


def _set_event() -> trio.Event:
    event = trio.Event()
    event.set()
    return event


@attrs.define(eq=False)
class _Slot:
    """The CLI's view of one proc."""

    spec: ProcSpec
    done: trio.Event = attrs.field(factory=_set_event)  # set while not supervised
    stop_requested: bool = False  # stopped by `stop` while supervised: its end is no failure


class Instance:
    """One ``trio-overseer start`` run; see the module docs."""

    def __init__(
        self,
        specs: Sequence[ProcSpec],
        *,
        out: TextIO,
        err: TextIO,
        colour: bool = False,
        json_lines: bool = False,
        server: ControlServer | None = None,
    ) -> None:
        self._slots = {spec.id: _Slot(spec) for spec in specs}
        self._out = out
        self._err = err
        self._messages = Messages(err)
        self._server = server
        self.printer = Printer(self._slots, colour=colour, json_lines=json_lines)
        self.dispatcher = Dispatcher(
            self.printer,
            encoding=getattr(out, "encoding", None) or "utf-8",
            on_broken_output=self._output_broken,
            on_backlog=self._hold_output,
            say=self._say,
        )
        self._ovr: Overseer | None = None
        self._procs: trio.Nursery | None = None  # open while procs may be (re)started
        self._stopping = False  # everything is being stopped: start nothing more
        self._ended_by: int | None = None  # the signal that stopped everything
        self._stdout_gone = False
        self._setup_failed = False  # a proc was refused by Overseer.add: nothing ran

    @property
    def ovr(self) -> Overseer:
        assert self._ovr is not None, "the instance is not running"
        return self._ovr

    # -- the run --------------------------------------------------------------

    async def run(self) -> int:
        """Run every proc until all have ended; return the exit status."""
        self._out.flush()  # from here on, stdout is written by the dispatcher only
        out = Writer.open(self._out.fileno())
        handlers = _log_handlers_on(self._err)
        try:
            for handler in handlers:  # the library's warnings must not block either
                handler.setStream(self._messages)  # type: ignore[arg-type]
            with trio.open_signal_receiver(*_SIGNALS) as signals:
                send, receive = self.dispatcher.open_channel()
                async with trio.open_nursery() as outer:
                    await outer.start(self._messages.run)
                    watcher = trio.CancelScope()
                    outer.start_soon(self._watch_signals, signals, watcher)
                    async with trio.open_nursery() as output:
                        output.start_soon(self.dispatcher.run, receive, out)
                        with send:
                            await self._supervise_all(send)
                    watcher.cancel()
                    self._messages.close()
                    outer.cancel_scope.deadline = trio.current_time() + _MESSAGES_GRACE
        finally:
            out.close()
            for handler in handlers:
                handler.setStream(self._err)
        return self.exit_status()

    async def _supervise_all(self, send: trio.MemorySendChannel[Any]) -> None:
        async with open_overseer(handle_signals=False) as ovr:
            self._ovr = ovr
            for slot in self._slots.values():
                spec = slot.spec
                try:
                    ovr.add(
                        spec.id,
                        spec.argv[0],
                        spec.argv[1:],
                        group=spec.group,
                        dir=spec.cwd,
                        env={**os.environ, **spec.env} if spec.env else None,
                        delay_start=spec.delay,
                        retry_times=spec.retry,
                        stop_signal=spec.stop_signal,
                        stop_timeout=spec.stop_timeout,
                    )
                except (TypeError, ValueError) as exc:  # what the config layer let through
                    self._say(f"{spec.source}: {exc}")
                    self._setup_failed = True
                    return
            ovr.watch_state(send)
            ovr.watch_logs(send, batched=True)
            async with trio.open_nursery() as services:
                if self._server is not None:
                    await services.start(self._server.serve, self)
                async with trio.open_nursery() as procs:
                    self._procs = procs
                    for id in self._slots:
                        procs.start_soon(self._supervise, id)
                self._procs = None
                if self._server is not None:
                    with trio.move_on_after(_DRAIN_WAIT):
                        await self.dispatcher.wait_drained()
                    self.dispatcher.close_followers()
                    await self._server.shutdown()
                services.cancel_scope.cancel()

    async def _supervise(self, id: str, ready: trio.Event | None = None) -> None:
        """Supervise `id` unless it is already, or should not be (re)started.

        `ready` is set once the new run is running (or fatal, or over).
        """
        slot = self._slots[id]
        if self._stopping or slot.stop_requested or not slot.done.is_set():
            if ready is not None:
                ready.set()
            return
        slot.done = trio.Event()
        # Subscribed before supervise() starts anything: the new run's
        # "starting" is seen, so no state of an earlier run is mistaken for it.
        send, receive = trio.open_memory_channel[ProcessInfo](math.inf)
        if ready is not None:
            self.ovr.watch_state(send)
        try:
            async with trio.open_nursery() as nursery:
                if ready is not None:
                    nursery.start_soon(self._when_started, id, receive, ready)
                await self.ovr.supervise(id)
                nursery.cancel_scope.cancel()
        finally:
            self.ovr.unwatch_state(send)
            send.close()
            slot.done.set()
            if ready is not None:
                ready.set()

    @staticmethod
    async def _when_started(
        id: str, states: trio.MemoryReceiveChannel[ProcessInfo], ready: trio.Event
    ) -> None:
        started = False
        async for info in states:
            if info.id != id:
                continue
            if info.state is State.STARTING:
                started = True
            elif started and info.state in _REACHED:
                break
        ready.set()

    async def _watch_signals(self, signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
        with scope:
            await self._on_signals(signals)

    async def _on_signals(self, signals: AsyncIterator[int]) -> None:
        async for sig in signals:
            again = self._ended_by is not None
            if not again:
                self._ended_by = sig
            self._say(
                f"{signal_name(sig)} received again: killing every proc"
                if again
                else f"{signal_name(sig)} received: stopping every proc (Ctrl+C again to kill)"
            )
            self._stop_everything(kill=again)
            # Ending on request: a stdout nobody reads must not keep us alive.
            self.dispatcher.give_up_after(0.0 if again else _STUCK_OUTPUT)

    def _stop_everything(self, *, kill: bool = False) -> None:
        self._stopping = True
        if self._ovr is not None:
            self._ovr.stop_all(kill=kill)

    def _output_broken(self, exc: OSError) -> None:
        if not self._stdout_gone:
            self._stdout_gone = True
            if isinstance(exc, BrokenPipeError):
                self._say("stdout was closed: stopping every proc")
            else:
                self._say(f"cannot write to stdout ({exc.strerror or exc}): stopping every proc")
            self._stop_everything()

    def _hold_output(self, held: bool) -> None:
        if self._ovr is not None:
            self._ovr._hold_output(held)

    def _say(self, message: str) -> None:
        self._messages.write(f"trio-overseer: {message}\n")

    def exit_status(self) -> int:
        """The exit status the run ended with (see the module docs)."""
        if self._setup_failed:
            return EXIT_USAGE
        if self._stdout_gone:
            return EXIT_BROKEN_PIPE
        if self._ended_by is not None:
            return EXIT_INTERRUPTED
        for id, slot in self._slots.items():
            if slot.stop_requested:
                continue
            info = self.ovr.status(id)
            if info.state is not State.FINISHED or info.exit_code != 0:
                return 1
        return 0

    # -- control requests -------------------------------------------------------

    def check_id(self, id: str) -> _Slot:
        """The slot of `id`; `RequestError` naming the known ids if there is none."""
        try:
            return self._slots[id]
        except KeyError:
            known = ", ".join(self._slots)
            raise RequestError(f"no proc {id!r} (known: {known})") from None

    def rows(self) -> list[dict[str, Any]]:
        """Every proc's state, for `status`."""
        now = time.time()
        rows = []
        for id, slot in self._slots.items():
            info = self.ovr.status(id)
            row = state_dict(info)
            live = info.state in _LIVE and info.start_time
            row["uptime"] = max(0.0, now - info.start_time) if live else None
            row["supervised"] = not slot.done.is_set()
            rows.append(row)
        return rows

    def _limit(self, slot: _Slot) -> float:
        """How long a stop or restart of `slot` may take before we give up waiting."""
        stop_timeout = slot.spec.stop_timeout
        return (self.ovr.stop_timeout if stop_timeout is None else stop_timeout) + _KILL_MARGIN

    async def stop(self, id: str) -> dict[str, Any]:
        """Stop `id` for good (no restart) and wait until it has ended."""
        slot = self.check_id(id)
        if not slot.done.is_set():  # a run that already failed stays a failure
            slot.stop_requested = True
        self.ovr.stop(id)
        with trio.move_on_after(self._limit(slot)):
            await slot.done.wait()
        return state_dict(self.ovr.status(id))

    async def stop_all(self) -> list[dict[str, Any]]:
        """Stop every proc (the instance then ends) and wait until all have ended."""
        for slot in self._slots.values():
            if not slot.done.is_set():
                slot.stop_requested = True
        self._stop_everything()
        limit = max(map(self._limit, self._slots.values()))
        with trio.move_on_after(limit):
            for slot in self._slots.values():
                await slot.done.wait()
        return [state_dict(self.ovr.status(id)) for id in self._slots]

    async def restart(self, id: str) -> dict[str, Any]:
        """Stop `id` if it runs, start it again; return once the new run runs."""
        slot = self.check_id(id)
        procs = self._procs
        if procs is None or self._stopping:
            raise RequestError("the instance is shutting down; nothing can be restarted")
        slot.stop_requested = False
        ready = trio.Event()
        try:
            procs.start_soon(self._restart, id, ready)
        except RuntimeError:  # the last proc ended an instant ago
            raise RequestError("the instance is shutting down; nothing can be restarted") from None
        with trio.move_on_after(self._limit(slot) + slot.spec.delay):
            await ready.wait()
        return state_dict(self.ovr.status(id))

    async def _restart(self, id: str, ready: trio.Event) -> None:
        slot = self._slots[id]
        self.ovr.stop(id)
        await slot.done.wait()
        await self._supervise(id, ready)

    def send_signal(self, id: str, sig: int) -> dict[str, Any]:
        """Send `sig` to the process group of `id`, which must be running."""
        self.check_id(id)
        info = self.ovr.status(id)
        if info.state not in _LIVE or not info.pid:
            raise RequestError(f"proc {id!r} is not running (it is {info.state.value})")
        self.ovr.signal(id, sig)
        return state_dict(info)
