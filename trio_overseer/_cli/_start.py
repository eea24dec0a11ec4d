"""``trio-overseer start``: supervise the procs of a config file until they end.

Theory of operation.  One Trio run holds, from the outside in:

    outer nursery: the signal watcher (SIGINT, SIGTERM, SIGHUP; the
      library's one signal policy, `_lifetime.take_signals`), started first
      and until the last line is written: Ctrl+C never raises
      KeyboardInterrupt in here, it is a request to stop; and the writer of
      our own messages to stderr (never blocks either)
      output nursery: the dispatcher, sole consumer of state changes and
        lines, and the writer of stdout (see `_dispatch`)
        open_overseer(handle_signals=False): stops and reaps every proc on exit
          services nursery: control socket server
            procs nursery: one task per supervision, `ovr.supervise(id)`

The instance ends when the procs nursery is empty: every proc has reached
a final state and no restart is pending or underway (with ``--keep-running``
a keeper task holds it open until ``stop --all`` or a signal).  With
``--exit-on-first``, the end of a supervision that nobody asked for (the proc
exited and has no restart left) stops every other proc.  A `restart` request
runs in the procs nursery (stop, wait for the supervision to end, supervise
again), so the instance cannot end in the middle of one.  Then the control
server says goodbye, the Overseer block closes the subscriber channel, and
the dispatcher prints what is left.  A stdout that stops taking output
holds the procs back (see `_dispatch`); after a signal, one that takes
nothing for `_STUCK_OUTPUT` seconds is abandoned so that the instance ends.

Exit status: 130 after SIGINT, SIGTERM or SIGHUP; 141 when stdout was
closed or cannot be written (the procs are stopped as for Ctrl+C); 2 when
the Overseer refused a proc (nothing ran); with ``--exit-on-first``, the exit
code of the proc that ended first (128 + N when signal N killed it, 1 when
it could not start); otherwise 0 when every proc ended with exit code 0 or
was stopped on request (`stop` while it was supervised), else 1.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import attrs
import trio

from .._block import open_overseer
from .._errors import ProcRunningError
from .._lifetime import take_signals
from .._options import ProcOptions
from .._overseer import Overseer
from .._records import ProcessInfo
from .._requires import closure as requirement_closure
from .._requires import depth as requirement_depth
from .._requires import problems as requirement_problems
from .._state import State
from ._config import ConfigError, ProcSpec
from ._control import ControlServer, RequestError
from ._defaults import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_USAGE
from ._dispatch import Dispatcher
from ._printer import Printer, state_dict
from ._project import matches
from ._writer import Messages, Writer

__all__ = [
    "ExitPolicy",
    "Instance",
    "add_proc",
    "add_procs",
]

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_LIVE = frozenset({State.STARTING, State.RUNNING, State.STOPPING})
_REACHED = frozenset({State.RUNNING, State.FATAL, State.FINISHED, State.INTERRUPTED})
_DRAIN_WAIT = 1.0  # seconds for the last lines to reach `logs -f` clients at the end
_KILL_MARGIN = 10.0  # seconds on top of a proc's stop_timeout for a requested stop
_STUCK_OUTPUT = 2.0  # seconds a stdout may take nothing, once a signal ends the instance
_MESSAGES_GRACE = 1.0  # seconds for our last messages to reach stderr


def add_procs(
    ovr: Overseer, specs: Sequence[ProcSpec], *, pty_size: tuple[int, int] | None = None
) -> list[str]:
    """Register `specs` with `ovr` as ``start`` does; the problems, each naming file and proc.

    ``check`` runs this too (on an Overseer that starts nothing), so that it
    refuses exactly what ``start`` refuses.
    """
    problems = []
    for spec in specs:
        try:
            add_proc(ovr, spec, pty_size=pty_size)
        except (TypeError, ValueError) as exc:
            message = str(exc)
            if not message.startswith(f"proc {spec.id!r}"):
                message = f"proc {spec.id!r}: {message}"
            problems.append(f"{spec.source}: {message}")
    if specs and not problems:  # what start() would refuse: unknown ids, a cycle
        graph = {spec.id: spec.requires for spec in specs}
        problems += [f"{specs[0].source}: {problem}" for problem in requirement_problems(graph)]
    return problems


def add_proc(ovr: Overseer, spec: ProcSpec, *, pty_size: tuple[int, int] | None = None) -> None:
    """Register `spec` with `ovr` (TypeError or ValueError if the Overseer refuses it).

    A proc with ``pty: true`` gets a terminal of `pty_size` (None: 80x24).
    """
    options = proc_options(spec, pty_size=pty_size)
    ovr.add(spec.id, spec.argv[0], spec.argv[1:], **attrs.asdict(options, recurse=False))


def proc_options(spec: ProcSpec, *, pty_size: tuple[int, int] | None = None) -> ProcOptions:
    """The library's options of `spec`: the config's words (``cwd``, ``delay``,
    ``retry``, an ``env`` added to ours, ``ready_port: $PORT``) in its own.

    Raises:
      ValueError: ``ready_port: $PORT``, but the proc's PORT is no port number.
    """
    port = spec.ready_port
    if isinstance(port, str):  # "$PORT": the proc's own
        text = spec.env.get("PORT", os.environ.get("PORT", ""))
        if not text.isdigit():
            raise ValueError(f"ready_port is $PORT, but PORT is not a port number: {text!r}")
        port = int(text)
    given: dict[str, Any] = {  # what the config leaves out keeps the library's default
        "reset_after": spec.reset_after,
        "ready_timeout": spec.ready_timeout,
    }
    return ProcOptions(
        **{name: value for name, value in given.items() if value is not None},
        group=spec.group,
        dir=spec.cwd,
        env={**os.environ, **spec.env} if spec.env else None,
        delay_start=spec.delay,
        retry_times=spec.retry,
        restart=spec.restart,
        success_codes=spec.success_codes,
        requires=spec.requires,
        restart_with=spec.restart_with,
        ready_line=spec.ready_line,
        ready_port=port,
        ready_url=spec.ready_url,
        ready_path=spec.ready_path,
        **(  # a ladder holds the stop signal and its timeout
            {"stop_signals": spec.stop_signals}
            if spec.stop_signals is not None
            else {"stop_signal": spec.stop_signal, "stop_timeout": spec.stop_timeout}
        ),
        pty=(pty_size or True) if spec.pty else False,
    )


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


@attrs.frozen
class ExitPolicy:
    """When the instance ends, besides every proc having ended."""

    exit_on_first: bool = False
    """When a proc ends by itself, stop the others; exit with its code."""
    can_die: frozenset[str] = frozenset()
    """Ids or types whose end stops nothing (with `exit_on_first`)."""
    keep_running: bool = False
    """Stay up with every proc ended, until ``stop --all`` or a signal."""


@attrs.define(eq=False)
class _Slot:
    """The CLI's view of one proc."""

    spec: ProcSpec
    done: trio.Event = attrs.field(factory=_set_event)  # set while not supervised
    stop_requested: bool = False  # stopped by `stop` while supervised: its end is no failure
    replacing: bool = False  # ended by restart/reload: its end stops nothing


#: Re-reads the config for `reload`: the new specs and warnings; raises ConfigError.
Reloader = Callable[[], tuple[Sequence[ProcSpec], Sequence[str]]]


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
        policy: ExitPolicy = ExitPolicy(),
        printer: Printer | None = None,
        reloader: Reloader | None = None,
    ) -> None:
        self._slots = {spec.id: _Slot(spec) for spec in specs}
        self._out = out
        self._err = err
        self._messages = Messages(err)
        self._server = server
        self._policy = policy
        self._reloader = reloader
        self.printer = printer or Printer(self._slots, colour=colour, json_lines=json_lines)
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
        self._release = trio.Event()  # ends the keeper of --keep-running
        self._reloading = trio.Lock()
        self._first: str | None = None  # --exit-on-first: the proc whose end stopped all
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
            send, receive = self.dispatcher.open_channel()
            async with trio.open_nursery() as outer:
                watcher = trio.CancelScope()
                await outer.start(self._watch_signals, watcher)
                await outer.start(self._messages.run)
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
            specs = [slot.spec for slot in self._slots.values()]
            problems = add_procs(ovr, specs, pty_size=self._pty_size())
            if problems:  # what the config layer let through (`check` says the same)
                for problem in problems:
                    self._say(problem)
                self._setup_failed = True
                return
            ovr.watch_state(send)
            ovr.watch_logs(send, batched=True)
            async with trio.open_nursery() as services:
                if self._server is not None:
                    await services.start(self._server.serve, self)
                async with trio.open_nursery() as procs:
                    self._procs = procs
                    if self._policy.keep_running:
                        procs.start_soon(self._release.wait)
                    for id in self._slots:
                        procs.start_soon(self._supervise, id)
                self._procs = None
                if self._server is not None:
                    with trio.move_on_after(_DRAIN_WAIT):
                        await self.dispatcher.wait_drained()
                    self.dispatcher.close_followers()
                    await self._server.shutdown()
                services.cancel_scope.cancel()

    def _add(self, spec: ProcSpec) -> None:
        add_proc(self.ovr, spec, pty_size=self._pty_size())

    def _pty_size(self) -> tuple[int, int] | None:
        """The terminal of a ``pty: true`` proc: the width our stdout's terminal
        leaves after the prefix of each line (at least 20 columns), and its
        height.  None (80x24) when stdout is no terminal or does not say.
        """
        try:
            if not self._out.isatty():
                return None
            columns, rows = os.get_terminal_size(self._out.fileno())
        except (AttributeError, OSError, ValueError):  # replaced, closed or a file
            return None
        if columns <= 0 or rows <= 0:
            return None
        return (min(max(columns - self.printer.head_width(), 20), 0xFFFF), min(rows, 0xFFFF))

    async def _supervise(self, id: str, ready: trio.Event | None = None) -> None:
        """Supervise `id` unless it is already, or should not be (re)started.

        `ready` is set once the new run is running (or fatal, or over).
        """
        slot = self._slots.get(id)
        if slot is None or self._stopping or slot.stop_requested or not slot.done.is_set():
            if ready is not None:
                ready.set()
            return
        slot.done = trio.Event()
        slot.replacing = False
        # Subscribed before supervise() starts anything: the new run's
        # "starting" is seen, so no state of an earlier run is mistaken for it.
        send, receive = trio.open_memory_channel[ProcessInfo](math.inf)
        if ready is not None:
            self.ovr.watch_state(send)
        try:
            async with trio.open_nursery() as nursery:
                if ready is not None:
                    nursery.start_soon(self._when_started, id, receive, ready)
                try:
                    await self.ovr.supervise(id)
                except ProcRunningError:
                    # A proc that requires this one claimed it first (its
                    # supervise() brings its requirements): wait for that end.
                    await self.ovr._supervision_done(id).wait()
                nursery.cancel_scope.cancel()
        finally:
            self.ovr.unwatch_state(send)
            send.close()
            slot.done.set()
            if ready is not None:
                ready.set()
        self._ended(id, slot)

    def _ended(self, id: str, slot: _Slot) -> None:
        """A supervision ended: with --exit-on-first, maybe the instance too."""
        policy = self._policy
        if (
            not policy.exit_on_first
            or self._stopping
            or slot.stop_requested
            or slot.replacing
            or id in policy.can_die
            or slot.spec.type in policy.can_die
        ):
            return
        self._first = id
        info = self.ovr.status(id)
        self._say(f"{id} ended ({_ending(info)}): stopping every proc (--exit-on-first)")
        self._stop_everything()

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

    async def _watch_signals(
        self, scope: trio.CancelScope, *, task_status: trio.TaskStatus[None]
    ) -> None:
        with scope:
            await take_signals(_SIGNALS, self._on_signal, say=self._say, task_status=task_status)

    def _on_signal(self, sig: int, again: bool) -> None:
        if not again:
            self._ended_by = sig
        self._stop_everything(kill=again)
        # Ending on request: a stdout nobody reads must not keep us alive.
        self.dispatcher.give_up_after(0.0 if again else _STUCK_OUTPUT)

    def _stop_everything(self, *, kill: bool = False) -> None:
        self._stopping = True
        self._release.set()
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

    def _hold_output(self, held: bool, id: str | None) -> None:
        if self._ovr is not None:
            self._ovr._hold_output(held, id)

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
        if self._first is not None:
            return _exit_code(self.ovr.status(self._first))
        for id, slot in self._slots.items():
            if slot.stop_requested:
                continue
            info = self.ovr.status(id)
            if info.state is State.INITIAL:  # changed by `reload` while ended: never run
                continue
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

    def resolve(self, names: Sequence[str]) -> list[str]:
        """The ids `names` address (ids, types, ``group:*``, ``web.*`` patterns), in
        config order; `RequestError` naming every name that addresses nothing."""
        chosen: set[str] = set()
        unknown = []
        for name in names:
            found = {id for id, slot in self._slots.items() if matches(slot.spec, name)}
            if not found:
                unknown.append(name)
            chosen |= found
        if unknown:
            known = ", ".join(self._slots)
            what = ", ".join(map(repr, unknown))
            raise RequestError(f"no proc {what} (known: {known}; groups as GROUP:*)")
        return [id for id in self._slots if id in chosen]

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
        await self._stop_and_wait(slot)
        return state_dict(self.ovr.status(id))

    async def _stop_and_wait(self, slot: _Slot) -> None:
        if not slot.done.is_set():  # a run that already failed stays a failure
            slot.stop_requested = True
        self.ovr.stop(slot.spec.id)
        with trio.move_on_after(self._limit(slot)):
            await slot.done.wait()

    async def stop_many(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Stop each of `ids` (at once) and wait until all have ended."""
        slots = [self.check_id(id) for id in ids]
        async with trio.open_nursery() as nursery:
            for slot in slots:
                nursery.start_soon(self._stop_and_wait, slot)
        return [state_dict(self.ovr.status(id)) for id in ids]

    async def stop_all(self) -> list[dict[str, Any]]:
        """Stop every proc (the instance then ends) and wait until all have ended."""
        for slot in self._slots.values():
            if not slot.done.is_set():
                slot.stop_requested = True
        self._stop_everything()
        limit = max(map(self._limit, self._slots.values()), default=0.0)
        # Dependents stop before their requirements: one round per level.
        limit *= max(1, requirement_depth({id: s.spec.requires for id, s in self._slots.items()}))
        with trio.move_on_after(limit):
            for slot in self._slots.values():
                await slot.done.wait()
        return [state_dict(self.ovr.status(id)) for id in self._slots]

    def _procs_nursery(self) -> trio.Nursery:
        procs = self._procs
        if procs is None or self._stopping:
            raise RequestError("the instance is shutting down; nothing can be (re)started")
        return procs

    async def restart(self, id: str) -> dict[str, Any]:
        """Stop `id` if it runs, start it again; return once the new run runs."""
        return (await self.restart_many([id]))[0]

    async def restart_many(
        self, ids: Sequence[str], *, only_ended: bool = False
    ) -> list[dict[str, Any]]:
        """Stop each of `ids` if it runs, start it again; return once the new runs
        run.  With `only_ended` (``start``), a proc that runs is left alone."""
        asked = [self.check_id(id).spec.id for id in ids]
        if only_ended:  # `start api`: what api requires and is not running comes along
            graph = {id: slot.spec.requires for id, slot in self._slots.items()}
            ids = requirement_closure(graph, asked)
        slots = [self.check_id(id) for id in ids]
        procs = self._procs_nursery()
        ready = []
        for slot in slots:
            if only_ended and not slot.done.is_set():
                continue
            slot.stop_requested = False
            event = trio.Event()
            try:
                procs.start_soon(self._restart, slot.spec.id, event)
            except RuntimeError:  # the last proc ended an instant ago
                raise RequestError(
                    "the instance is shutting down; nothing can be (re)started"
                ) from None
            ready.append((slot, event))
        for slot, event in ready:
            with trio.move_on_after(self._limit(slot) + slot.spec.delay):
                await event.wait()
        return [state_dict(self.ovr.status(id)) for id in asked]

    async def _restart(self, id: str, ready: trio.Event) -> None:
        slot = self._slots[id]
        if not slot.done.is_set():
            slot.replacing = True
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

    def signal_many(self, ids: Sequence[str], sig: int) -> list[dict[str, Any]]:
        """Send `sig` to each of `ids`; every one must be running (else nothing is sent)."""
        for id in ids:
            info = self.ovr.status(self.check_id(id).spec.id)
            if info.state not in _LIVE or not info.pid:
                raise RequestError(f"proc {id!r} is not running (it is {info.state.value})")
        return [self.send_signal(id, sig) for id in ids]

    # -- reload -----------------------------------------------------------------

    async def reload(self) -> dict[str, Any]:
        """Re-read the config: start added procs, stop removed ones, restart those
        whose definition changed, leave the rest alone.

        A config that cannot be read changes nothing: `RequestError` says why.
        """
        if self._reloader is None:
            raise RequestError("this instance cannot reload (it was not started from a file)")
        self._procs_nursery()
        async with self._reloading:
            try:
                specs, warnings = self._reloader()
            except ConfigError as exc:
                raise RequestError(
                    "the config was not reloaded, nothing changed:\n" + "\n".join(exc.problems)
                ) from None
            new = {spec.id: spec for spec in specs}
            old = {id: slot.spec for id, slot in self._slots.items()}
            added = [id for id in new if id not in old]
            removed = [id for id in old if id not in new]
            changed = [id for id in new if id in old and new[id] != old[id]]
            unchanged = [id for id in new if id in old and new[id] == old[id]]
            procs = self._procs_nursery()
            # Stop what goes away or changes, all at once.
            ending = [self._slots[id] for id in removed + changed]
            was_running = {slot.spec.id for slot in ending if not slot.done.is_set()}
            for slot in ending:
                slot.replacing = True
            async with trio.open_nursery() as nursery:
                for slot in ending:
                    nursery.start_soon(self._stop_and_wait, slot)
            errors = []
            for id in removed + changed:
                try:
                    self.ovr.remove(id)
                except Exception as exc:  # e.g. it outlived its stop timeout
                    errors.append(f"{id}: {exc}")
            slots = {}
            for id, spec in new.items():
                kept = self._slots.get(id)
                slots[id] = kept if id in unchanged and kept is not None else _Slot(spec)
            for id in added + changed:
                try:
                    self._add(new[id])
                except (TypeError, ValueError) as exc:
                    errors.append(f"{id}: {exc}")
                    slots.pop(id, None)
            self._slots = slots
            self.printer.track(list(slots))
            starting = [id for id in added + changed if id in slots]
            starting = [id for id in starting if id in added or id in was_running]
            for id in starting:
                procs.start_soon(self._supervise, id)
            for id in added + changed + removed:
                self._say(
                    f"reload: {id} "
                    + ("added" if id in added else "removed" if id in removed else "changed")
                )
            answer: dict[str, Any] = {
                "added": added,
                "removed": removed,
                "changed": changed,
                "unchanged": unchanged,
                "warnings": list(warnings),
            }
            if errors:
                answer["errors"] = errors
            return answer


def _ending(info: ProcessInfo) -> str:
    if info.state is State.FINISHED:
        return f"exit code {info.exit_code}"
    return info.error or info.state.value


def _exit_code(info: ProcessInfo) -> int:
    """The exit status that mirrors how a proc ended, as a shell reports it."""
    if info.state is State.FINISHED:
        return info.exit_code if 0 <= info.exit_code < 256 else 1
    if info.state is State.INTERRUPTED and info.exit_code < 0:
        return 128 - info.exit_code
    return 1
