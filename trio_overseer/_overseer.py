"""The Overseer: a registry of named procs, supervised as Trio tasks.

Theory of operation.  Each registered proc is a `Proc` record (`_proc`)
holding the `Cmd` of its latest run and its current (or last)
`Supervision`: one task that runs the Cmd, then fresh clones of it, as long
as the restart decision says so (see `_supervision`), each run gated on what
it requires (see `_dependencies`).  The Cmd calls back synchronously on
every state change and every batch of lines; the Overseer turns those into
`ProcessInfo`/`LogMsg` and fans them out with `send_nowait`, so nothing a
subscriber does can stall a proc.  A run's final state is published with
the supervision's decision (`restart_in`) in it.  How it all ends is
`_lifetime`'s.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import re
import shlex
import signal as _signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal, overload

import attrs
import trio

from ._cmd import Cmd, OutputGate
from ._dependencies import Dependencies
from ._errors import (
    OverseerNotOpenError,
    ProcExistsError,
    ProcRunningError,
    UnknownProcError,
)
from ._fanout import Fanout
from ._lifetime import Lifetime, take_signals, takeable_signals
from ._options import ProcOptions, proc_ids
from ._proc import Proc
from ._ready import SILENT_HINT, Watched, judge_ready, make_readiness, wait_ready
from ._records import (
    STDOUT,
    LogBatch,
    LogMsg,
    OverseerStatistics,
    ProcessInfo,
    log_msgs,
    restart_count,
)
from ._requires import depth as requirement_depth
from ._state import FINAL_STATES, Phase, State
from ._supervision import DEFAULT_RESET_AFTER, Backoff, Supervision, make_rules

logger = logging.getLogger("trio_overseer")

_CMD_OPTIONS = frozenset(field.name for field in attrs.fields(Cmd) if field.init)
_ADD_OPTIONS = frozenset(field.name for field in attrs.fields(ProcOptions))


def _non_negative(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"Overseer {attribute.name} must be a number >= 0, got {value!r}")


def _finite(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if math.isinf(value):
        raise ValueError(f"Overseer {attribute.name} must be a finite number >= 0, got {value!r}")


def _flag(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    # "no" or "false" would be true: refuse anything but a bool.
    if not isinstance(value, bool):
        raise TypeError(f"Overseer {attribute.name} must be True or False, got {value!r}")


@attrs.define(eq=False)
class _Waiter:
    """A task in wait_for_state/wait_for_log, woken by the first match."""

    id: str
    # State waiters: ProcessInfo -> bool.  Log waiters: LogBatch -> the
    # first matching line as a LogMsg, or None.
    match: Callable[[Any], Any]
    event: trio.Event = attrs.field(factory=trio.Event)
    result: Any = None


_PROC_LOGGERS = logging.getLogger("trio_overseer.proc")


def _out_logger(rec: Proc) -> logging.Logger | None:
    """The logger ``trio_overseer.proc.<id>`` if it would log a line, else None.

    The logging module keeps every logger it ever made, so one per proc id
    is made only once it would log something: when the user configured it
    (it exists already) or its parent logs INFO.  Procs of churning ids then
    leave nothing behind while their lines are not logged.
    """
    if rec.out_log is None:
        name = f"trio_overseer.proc.{rec.id}"
        existing = logging.Logger.manager.loggerDict.get(name)
        if isinstance(existing, logging.Logger):
            rec.out_log = existing
        elif _PROC_LOGGERS.isEnabledFor(logging.INFO):
            rec.out_log = logging.getLogger(name)
        else:
            return None
    return rec.out_log if rec.out_log.isEnabledFor(logging.INFO) else None


def _buffer_size(buffer: float) -> float:
    """A subscription's channel buffer: a whole number >= 1, or math.inf."""
    if buffer == math.inf or (
        isinstance(buffer, int) and not isinstance(buffer, bool) and buffer >= 1
    ):
        return buffer
    raise ValueError(
        f"a subscription buffer must be a whole number >= 1 or math.inf, got {buffer!r} "
        "(a subscriber that falls a whole buffer behind is cut off)"
    )


@attrs.define(eq=False, repr=False, on_setattr=attrs.setters.NO_OP)  # see Cmd
class Overseer:
    """Registry and supervisor of named procs.

    Use it as ``async with open_overseer() as ovr`` (needed by `start`); or
    construct it directly and await `supervise_all` / `supervise`, which
    own a nursery for their duration.
    """

    stop_timeout: float = attrs.field(default=5.0, kw_only=True, validator=[_non_negative, _finite])
    handle_signals: bool = attrs.field(default=True, kw_only=True, validator=_flag)
    backoff_base: float = attrs.field(default=0.1, kw_only=True, validator=[_non_negative, _finite])
    backoff_max: float = attrs.field(default=30.0, kw_only=True, validator=_non_negative)
    seed: int | None = attrs.field(default=None, kw_only=True)

    _procs: dict[str, Proc] = attrs.field(init=False, factory=dict)
    _nursery: trio.Nursery | None = attrs.field(init=False, default=None)
    _states: Fanout[ProcessInfo] = attrs.field(init=False, factory=lambda: Fanout("state"))
    # LogMsg to per-line subscribers, LogBatch to batched ones.
    _logs: Fanout[LogMsg] = attrs.field(init=False, factory=lambda: Fanout("logs"))
    _state_waiters: list[_Waiter] = attrs.field(init=False, factory=list)
    _log_waiters: list[_Waiter] = attrs.field(init=False, factory=list)
    _random: random.Random = attrs.field(init=False)  # the restarts' jitter (seeded by `seed`)
    # The tag, the sweeps, the watchdog and the count of supervisions, and the
    # one way they end (see _lifetime).
    _lifetime: Lifetime = attrs.field(init=False)
    _gate: OutputGate = attrs.field(init=False, factory=OutputGate)  # see _hold_output
    # What gates runs on their requirements, and the stop order (see _dependencies).
    _deps: Dependencies = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._lifetime = Lifetime(self.stop_timeout)
        self._deps = Dependencies(
            self._procs,
            self._get,
            self._claim,
            self._stop,
            self._info,
            self._publish,
            lambda id, readiness, done: judge_ready(self, id, readiness, done),
        )

    def __repr__(self) -> str:
        stats = self.statistics()
        return f"<Overseer {stats.procs} procs, {stats.running} running>"

    # -- registry ------------------------------------------------------------

    def add(
        self,
        id: str,
        exec: str,
        args: Sequence[str] = (),
        *,
        group: str = "",
        dir: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        delay_start: float = 0.0,
        retry_times: float = 0,
        restart: str = "on-failure",
        success_codes: Iterable[int] = (0,),
        reset_after: float = DEFAULT_RESET_AFTER,
        requires: Iterable[str] = (),
        restart_with: Iterable[str] = (),
        buffered: bool = False,
        stop_signal: int = _signal.SIGTERM,
        stop_timeout: float | None = None,
        stop_signals: Sequence[tuple[int | str, float]] | None = None,
        pty: bool | tuple[int, int] = False,
        ready_line: str | re.Pattern[str] | None = None,
        ready_port: int | tuple[str, int] | None = None,
        ready_url: str | None = None,
        ready_path: str | os.PathLike[str] | None = None,
        ready_check: Callable[[], Awaitable[bool]] | None = None,
        ready_timeout: float = 30.0,
    ) -> Cmd:
        """Register a proc without starting it, and return the `Cmd` of its first run.

        Each restart and each new supervision runs a fresh `Cmd.clone()`: the
        returned one is the first run only.  To follow every run, use
        `status`, `watch_state` or `subscribe_states`, not this Cmd.

        With ``pty=True`` (or ``pty=(columns, rows)``; 80x24 by default) the
        proc's stdout and stderr are one pseudo-terminal: programs that
        buffer into pipes print line by line, in colour; every line comes as
        stdout.

        The ``ready_*`` options declare how `start()` knows the proc is ready
        (a line matching a regex on stdout/stderr, a TCP port accepting
        connections, an HTTP URL answering below 500, a path that exists, an
        async predicate); `start()` then returns only once all of them hold,
        or raises `NotReadyError` after `ready_timeout` seconds or when the
        process ends first.

        `restart` says which ended runs are restarted: ``"on-failure"`` (a
        run whose exit code is not one of `success_codes`, that was killed
        by a signal or could not start), ``"always"`` or ``"never"``; under
        every policy at most `retry_times` times (``math.inf``: no limit).
        A run that stayed up `reset_after` seconds resets the count of
        restarts (and the backoff): see `_supervision`.

        `stop_signals=[(SIGINT, 5), (SIGTERM, 5)]` is a stop escalation
        ladder: each signal goes to the process group, which gets up to that
        many seconds to be gone before the next; SIGKILL follows the last.
        It replaces `stop_signal` and `stop_timeout` (the one-step ladder),
        which then read its first signal and its total time.

        `requires` names procs that must be ready (their ``ready_*`` probes
        hold; running, for a proc without probes) before each run of this
        one; they are started with it, and it stops before them.  If one of
        them fails (it ends, gives up, is stopped or is not ready in time)
        this proc does not run: it ends fatal, its error naming the
        requirement.  Those of `restart_with` (some of `requires`) also stop
        this proc when their run ends, and it runs again once they are
        ready.  Unknown ids and cycles are refused when the procs are
        started (`RequirementError`).

        Raises:
          ProcExistsError: `id` is already registered.
          ValueError: empty `id` or `exec`, or an invalid option.
        """
        given = {name: value for name, value in locals().items() if name in _ADD_OPTIONS}
        return self._add(id, exec, args, ProcOptions(**given))

    def _add(self, id: str, exec: str, args: Sequence[str], options: ProcOptions) -> Cmd:
        """`add`, its options as one record: each option is checked here, naming the proc."""
        if not isinstance(id, str) or not id:
            raise ValueError(f"a proc needs a non-empty string id, got {id!r}")
        if not isinstance(exec, str) or not exec:
            raise ValueError(f"proc {id!r} needs a non-empty executable, got {exec!r}")
        if id in self._procs:
            raise ProcExistsError(f"proc {id!r} is already registered; remove() it first")
        try:
            if options.stop_signals is not None and (
                options.stop_timeout is not None or options.stop_signal != _signal.SIGTERM
            ):
                raise ValueError(
                    "stop_signals is the whole stop (each signal and its wait): "
                    "give it, or stop_signal and stop_timeout, not both"
                )
            run_options = options.shared_with(_CMD_OPTIONS)  # each run's Cmd takes these
            if options.stop_timeout is None:
                run_options["stop_timeout"] = self.stop_timeout
            cmd = Cmd(exec, args, **run_options)
            rules = make_rules(
                restart=options.restart,
                success_codes=options.success_codes,
                reset_after=options.reset_after,
            )
            required = proc_ids("requires", options.requires)
            if id in required:
                raise ValueError(f"requires names the proc itself ({id!r}): it would wait forever")
            bound = proc_ids("restart_with", options.restart_with)
            if not set(bound) <= set(required):
                extra = ", ".join(repr(r) for r in bound if r not in required)
                raise ValueError(
                    f"restart_with names {extra}, which it does not require: "
                    "restart_with must be some of the ids of requires"
                )
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"proc {id!r}: {exc}") from None
        readiness = make_readiness(
            id,
            line=options.ready_line,
            port=options.ready_port,
            url=options.ready_url,
            path=options.ready_path,
            check=options.ready_check,
            timeout=options.ready_timeout,
        )
        rec = Proc(
            id=id,
            cmd=cmd,
            readiness=readiness,
            retry_times=cmd.retry_times,
            rules=rules,
            cmdline=shlex.join([exec, *cmd.args]),
            attach=lambda run: self._attach(rec, run),
            required=lambda: self._deps.until_required(rec),
            requires=required,
            restart_with=frozenset(bound),
            gate=OutputGate(self._gate),
        )
        rec.attach(cmd)
        self._procs[id] = rec
        self._deps.added(rec)
        logger.debug("added proc %r: %s", id, rec.cmdline)
        return cmd

    def remove(self, id: str) -> None:
        """Unregister a proc that is not running.

        In an open block, what its last run left outside its process group
        (daemons) is stopped in the background.

        Raises:
          UnknownProcError: `id` is not registered.
          ProcRunningError: it is running or supervised; stop() it and wait first.
        """
        rec = self._get(id)
        if rec.supervised or rec.cmd.is_running_state():
            raise ProcRunningError(
                f"proc {id!r} is running; stop it and wait for it to end before remove()"
            )
        del self._procs[id]
        self._deps.removed(rec)
        if self._nursery is not None and rec.cmd.is_final_state():
            # What its last run left outside its group goes with the proc
            # (in the background: remove() never blocks).
            self._nursery.start_soon(rec.cmd._sweep_escaped)

    def list_all(self) -> list[str]:
        """Every registered id, sorted."""
        return sorted(self._procs)

    def list_group(self, group: str) -> list[str]:
        """The ids of `group`, sorted."""
        return sorted(id for id, rec in self._procs.items() if rec.cmd.group == group)

    def has_proc(self, id: str) -> bool:
        """Whether `id` is registered."""
        return id in self._procs

    def status(self, id: str) -> ProcessInfo:
        """A snapshot of the proc's current run.

        Raises:
          UnknownProcError: `id` is not registered.
        """
        return self._info(self._get(id))

    def is_running(self) -> bool:
        """Whether any proc is being supervised."""
        return self._lifetime.supervisions > 0

    def statistics(self) -> OverseerStatistics:
        """A snapshot of the counts: procs, supervised, running, subscribers, cut off."""
        return OverseerStatistics(
            procs=len(self._procs),
            supervised=self._lifetime.supervisions,
            running=sum(rec.cmd.is_running_state() for rec in self._procs.values()),
            subscribers=len(self._states) + len(self._logs),
            cut_off_subscribers=self._states.cut_off + self._logs.cut_off,
        )

    def is_stopping(self) -> bool:
        """Whether a `stop_all()` is still waiting for procs to end."""
        return self._lifetime.stopping

    def _get(self, id: str) -> Proc:
        try:
            return self._procs[id]
        except KeyError:
            known = ", ".join(map(repr, sorted(self._procs))) or "none"
            raise UnknownProcError(f"no proc {id!r} is registered (known: {known})") from None

    def _info(self, rec: Proc) -> ProcessInfo:
        cmd = rec.cmd
        pid, exit_code, error, start_ts = cmd._brief()
        sup = rec.supervision
        ended = cmd.state in FINAL_STATES
        return ProcessInfo(
            id=rec.id,
            group=cmd.group,
            cmd=rec.cmdline,
            dir=cmd.dir or "",
            pid=pid,
            state=cmd.state,
            exit_code=exit_code,
            error=error,
            start_time=start_ts,
            delay_start=cmd.delay_start,
            retry_times=0 if rec.stopped else rec.retry_times,
            restarts=sup.restarts if sup is not None else 0,
            restart_in=sup.restart_in if sup is not None and ended else None,
            gave_up=sup is not None and ended and sup.gave_up,
            waiting_for=rec.waiting_for,
        )

    # -- observing the Cmds --------------------------------------------------

    def _attach(self, rec: Proc, cmd: Cmd) -> None:
        cmd._attach(
            lambda c: self._state_changed(rec, c),
            lambda c, kind, lines: self._output(rec, kind, lines),
            self._lifetime.token,
            self._lifetime.scanner,
            rec.gate,
        )

    def _state_changed(self, rec: Proc, cmd: Cmd) -> None:
        """Called by the Cmd in the same stretch as the transition: announce it."""
        state = cmd.state
        sup = rec.supervision
        if state in FINAL_STATES and sup is not None and sup.active and cmd is rec.cmd:
            sup.run_ended(
                exit_code=cmd._brief().exit,
                retry_times=cmd.retry_times,  # cmd.stop() zeroed it
                delay_start=cmd.delay_start,
            )
        info = self._info(rec)
        if info.pid:
            if state is State.RUNNING:
                self._lifetime.watch(info.pid)
            elif state in FINAL_STATES:
                self._lifetime.unwatch(info.pid)
        self._publish(rec, info)
        if state in FINAL_STATES and cmd is rec.cmd:
            self._deps.run_ended(rec.id)

    def _publish(self, rec: Proc, info: ProcessInfo) -> None:
        """Announce `info` (a state change, or what a blocked proc waits for)."""
        self._log_state(info)
        self._states.publish(info)
        for waiter in self._state_waiters:
            if waiter.id == rec.id and not waiter.event.is_set() and waiter.match(info):
                waiter.result = info
                waiter.event.set()
        rec.notify()

    def _log_state(self, info: ProcessInfo) -> None:
        """Log a state change; each record carries ``proc`` and ``state`` (its value)
        as attributes, for handlers that tell records apart (the CLI's)."""
        extra = {"proc": info.id, "state": info.state.value}
        if info.waiting_for:
            waiting = ", ".join(map(repr, info.waiting_for))
            logger.info("proc %r waits for %s", info.id, waiting, extra=extra)
        elif info.state is State.RUNNING:
            logger.info("proc %r running (pid %d): %s", info.id, info.pid, info.cmd, extra=extra)
        elif info.state is State.FATAL:
            logger.error("proc %r cannot start: %s", info.id, info.error, extra=extra)
        elif info.state in FINAL_STATES:
            how = info.error or f"exit code {info.exit_code}"
            if info.restart_in is not None:
                then = f", restart {restart_count(info)} in {info.restart_in:.2f} s"
            elif info.gave_up:
                then = f", gave up after {info.restarts} restarts (retry_times)"
            else:
                then = ""
            logger.info("proc %r %s (%s)%s", info.id, info.state.value, how, then, extra=extra)
        else:
            logger.debug("proc %r %s", info.id, info.state.value, extra=extra)

    def _output(self, rec: Proc, kind: int, lines: list[str]) -> None:
        """Called by the Cmd with lines that arrived together: fan them out.

        No `LogMsg` is made unless a per-line subscriber or a matching
        `wait_for_log` asks for one.
        """
        batch = LogBatch(rec.id, kind, time.time(), lines)
        rec.tail.add(batch)
        ready_line = rec.readiness.line
        if ready_line is not None and rec.ready_seen is not rec.cmd:
            search = ready_line.search
            if any(search(line) for line in lines):
                rec.ready_seen = rec.cmd
        if self._logs:
            self._logs.publish_batch(batch, lambda: log_msgs(batch))
        out_log = _out_logger(rec)
        if out_log is not None:
            extra = {"proc": rec.id, "stream": "stdout" if kind == STDOUT else "stderr"}
            for line in lines:
                out_log.info("%s", line, extra=extra)
        if self._log_waiters:
            for waiter in self._log_waiters:
                if waiter.id == rec.id and not waiter.event.is_set():
                    found = waiter.match(batch)
                    if found is not None:
                        waiter.result = found
                        waiter.event.set()

    # -- supervising ---------------------------------------------------------

    def _claim(self, id: str) -> tuple[Proc, Supervision]:
        """Begin a supervision of `id` (its task is the caller's to start)."""
        rec = self._get(id)
        if rec.supervised:
            raise ProcRunningError(f"proc {id!r} is already being supervised")
        if not rec.cmd.is_initial_state():
            rec.next_run()  # a new supervision shows a fresh run, not the last one's end
        rec.stopped = False
        sup = rec.supervision = Supervision(
            Backoff(self.backoff_base, self.backoff_max),
            self._random.random,
            lambda _: self._supervision_ended(rec),
            rec.rules,
        )
        rec.ready_run = None
        rec.notify()
        self._lifetime.claimed()
        return rec, sup

    def _watched(self, id: str) -> Watched:
        """The proc's record, as readiness reads it (see `_ready.Watched`)."""
        return self._get(id)

    def _run_tag(self, id: str) -> str:
        """The tag of the proc's current run ("" before it starts): for the pytest plugin."""
        return self._get(id).cmd._tag

    @property
    def _tag_prefix(self) -> bytes:
        """What the tag of every run of this Overseer starts with (see `_sweep`)."""
        return f"{self._lifetime.token}.".encode()

    def _supervision_done(self, id: str) -> trio.Event:
        """Set once the current supervision of `id` has ended (set if none is in progress).

        Raises:
          UnknownProcError: `id` is not registered.
        """
        sup = self._get(id).supervision
        if sup is not None:
            return sup.done
        never = trio.Event()
        never.set()
        return never

    def _supervision_ended(self, rec: Proc) -> None:
        self._lifetime.released()
        rec.notify()
        self._deps.supervision_ended()

    async def supervise(self, id: str) -> int:
        """Run the proc in this task, restarting it on failure; return the last exit code.

        Which runs are restarted is the proc's `restart` policy (by default
        a failed run: an exit code not in `success_codes`, killed by a
        signal, or could not start), up to `retry_times` times,
        `delay_start` plus a jittered exponential backoff apart (see
        `_supervision`).  -1 when it never ran (stopped during `delay_start`).

        Cancellation: the process is stopped (stop signal, SIGKILL after its
        stop_timeout) and reaped before the cancellation propagates.

        The procs it requires (``requires=``, transitively) that are not
        supervised yet are supervised too: in the block's nursery when there
        is one (they outlive this call, as with `start`), else for the
        duration of this call (stopped, dependents first, when it returns).

        Raises:
          UnknownProcError: `id` is not registered.
          ProcRunningError: it is already being supervised.
          RequirementError: it requires an unknown id, or a cycle (nothing started).
        """
        self._deps.check([id])
        async with self._running():
            rec, sup = self._claim(id)
            required = self._deps.claim_required(id)
            if not required:
                return await sup.run(rec)
            if self._nursery is not None:  # the block's (or supervise_all's): they outlive us
                for other, other_sup in required:
                    self._nursery.start_soon(other_sup.run, other)
                return await sup.run(rec)
            async with trio.open_nursery() as nursery:
                for other, other_sup in required:
                    nursery.start_soon(other_sup.run, other)
                try:
                    return await sup.run(rec)
                finally:
                    self._deps.stop_ordered([other.id for other, _ in required])

    async def supervise_all(self) -> None:
        """Supervise every registered proc concurrently; return when all have ended.

        Procs already supervised (by `start()`) are waited for, not started
        again.  Without an open block, and with `handle_signals` in the main
        thread, a SIGINT or SIGTERM meanwhile means `stop_all()`, a second one
        `stop_all(kill=True)`; only a signal still at its default handling
        when the call begins is taken (one the application handles stays
        the application's).  Can be called again later.

        Cancellation: every proc is stopped and reaped before it propagates.

        Raises:
          RequirementError: a proc requires an unknown id, or the requirements
            form a cycle (nothing is started).
        """
        self._deps.check()
        async with trio.open_nursery() as nursery:
            own = self._nursery is None  # not in a block, nor in another supervise_all()
            async with self._running(nursery if own else None):
                if own and self.handle_signals:
                    signals = takeable_signals(_signal.SIGINT, _signal.SIGTERM)
                    await nursery.start(take_signals, signals, self._stop_all_on_signal)
                async with trio.open_nursery() as procs:
                    for rec in list(self._procs.values()):
                        if rec.supervised:
                            procs.start_soon(self._supervision_done(rec.id).wait)
                        else:
                            rec, sup = self._claim(rec.id)
                            procs.start_soon(sup.run, rec)
            nursery.cancel_scope.cancel()  # the signal task

    def _stop_all_on_signal(self, sig: int, again: bool) -> None:
        self.stop_all(kill=again)

    async def start(self, id: str) -> ProcessInfo:
        """Supervise the proc in the Overseer's nursery; return once it runs (or is fatal).

        With ``ready_*`` options (see `add`), return only once the proc is ready.

        Cancellation: if cancelled before the process runs, it is not started;
        if cancelled while waiting for readiness, the proc is stopped.

        Raises:
          OverseerNotOpenError: not in an open ``async with open_overseer()`` block.
          UnknownProcError: `id` is not registered.
          ProcRunningError: it is already being supervised.
          NotReadyError: it ended, or `ready_timeout` passed, before it was ready
            (it is stopped before this is raised).
          RequirementError: it requires an unknown id, or a cycle (nothing started).

        The procs it requires (``requires=``, transitively) that are not
        supervised are started too, and it starts once they are ready.
        """
        nursery = self._nursery
        if nursery is None:
            raise OverseerNotOpenError(
                f"cannot start {id!r}: start() needs an open overseer: use "
                "'async with open_overseer() as ovr:', or without a block "
                f"'await ovr.supervise({id!r})' (supervises in the calling task)"
            )
        self._deps.check([id])
        rec, sup = self._claim(id)
        try:
            for other, other_sup in self._deps.claim_required(id):
                nursery.start_soon(other_sup.run, other)
            await nursery.start(sup.run, rec)
        except BaseException:
            if sup.phase is Phase.CLAIMED:  # its task never began
                sup.end()
            raise
        if rec.readiness:
            await wait_ready(self, id, rec.readiness)
        return self._info(rec)

    def stop(self, id: str, *, kill: bool = False) -> None:
        """Stop the proc and cancel any pending restart; sync, never blocks.

        Its `retry_times` (as `status()` shows it) reads 0 until its next
        start, which begins with the configured budget again.  A second
        `stop()` while the first is still under way (the proc is stopping)
        skips what is left of the stop and kills it at once (SIGKILL).

        Raises:
          UnknownProcError: `id` is not registered.
        """
        rec = self._get(id)
        again = rec.stopped and rec.cmd.state is State.STOPPING
        self._stop(id, kill=kill or again)

    def _stop(self, id: str, *, kill: bool = False) -> None:
        """`stop()`, without the second one's kill (for stops the Overseer decides)."""
        rec = self._get(id)
        rec.stopped = True  # before the Cmd announces "stopping"
        self._deps.deferred.discard(id)
        if rec.supervision is not None:
            rec.supervision.stop()  # no restart; between runs, it ends now
        if kill:
            rec.cmd.kill()
        else:
            rec.cmd.stop()

    def signal(self, id: str, sig: int) -> None:
        """Send exactly `sig` to the proc's process group (no-op when not running).

        Raises:
          UnknownProcError: `id` is not registered.
        """
        self._get(id).cmd.signal(sig)

    def stop_all(self, kill: bool = False) -> None:
        """Stop (or kill) every proc and cancel pending restarts; sync, never blocks.

        A proc that others require (``requires=``) is stopped once they have
        ended: dependents first, each level at once.  `kill` kills them all now.
        """
        if self._lifetime.supervisions:
            self._lifetime.stopping = True
        self._deps.stop_ordered(list(self._procs), kill=kill)

    def _hold_output(self, held: bool, id: str | None = None) -> None:
        """Flow control for a consumer of lines that fell behind (the CLI's stdout).

        While held, the pipes of running procs (of proc `id` only, when given)
        are not read: a proc blocks once its pipe is full, as on a paused
        terminal.  Stops, signals and state changes are not affected, and an
        ending run is still read to its end.
        """
        gate = self._gate if id is None else getattr(self._procs.get(id), "gate", None)
        if gate is None:  # a proc removed meanwhile
            return
        if held:
            gate.hold()
        else:
            gate.release()

    # -- subscribers ---------------------------------------------------------

    def watch_state(self, send_channel: trio.MemorySendChannel[ProcessInfo]) -> None:
        """Send every state change of every proc to `send_channel`, in order.

        Each message goes out with `send_nowait`; a subscriber whose buffer is
        full is cut off (its channel closed, a warning logged).  The channel is
        closed when the `open_overseer()` block exits.

        Raises:
          ValueError: the channel has a zero-size buffer.
        """
        self._states.add(send_channel)

    def unwatch_state(self, send_channel: trio.MemorySendChannel[ProcessInfo]) -> None:
        """Stop sending state changes to `send_channel` (it stays open)."""
        self._states.remove(send_channel)

    def watch_logs(
        self, send_channel: trio.MemorySendChannel[Any], *, batched: bool = False
    ) -> None:
        """Send every output line of every proc to `send_channel` as `LogMsg`.

        With `batched`, each message is a `LogBatch`: the lines of one
        stream of one proc read together (no `LogMsg` is made per line).
        Delivery and cut-off as for `watch_state`.

        Raises:
          ValueError: the channel has a zero-size buffer.
        """
        self._logs.add(send_channel, batched=batched)

    def unwatch_logs(self, send_channel: trio.MemorySendChannel[Any]) -> None:
        """Stop sending lines to `send_channel` (it stays open)."""
        self._logs.remove(send_channel)

    @contextlib.asynccontextmanager
    async def subscribe_states(
        self, buffer: float = math.inf
    ) -> AsyncIterator[trio.MemoryReceiveChannel[ProcessInfo]]:
        """Every state change of every proc, on a channel of its own, while in the block.

        ``async with ovr.subscribe_states() as rx: async for info in rx: ...``:
        a channel pair of `buffer` messages, watched (`watch_state`) on entry,
        unwatched and its send side closed on exit.  Delivery and cut-off as
        for `watch_state`: a subscriber that falls `buffer` messages behind
        is cut off (`rx` ends); `math.inf` never cuts off.

        Raises:
          ValueError: `buffer` is not a whole number >= 1 or `math.inf`.
        """
        send, receive = trio.open_memory_channel[ProcessInfo](_buffer_size(buffer))
        self.watch_state(send)
        try:
            yield receive
        finally:
            self.unwatch_state(send)
            send.close()

    @overload
    def subscribe_logs(
        self, buffer: float = ..., *, batched: Literal[False] = ...
    ) -> contextlib.AbstractAsyncContextManager[trio.MemoryReceiveChannel[LogMsg]]: ...

    @overload
    def subscribe_logs(
        self, buffer: float = ..., *, batched: Literal[True]
    ) -> contextlib.AbstractAsyncContextManager[trio.MemoryReceiveChannel[LogBatch]]: ...

    @overload
    def subscribe_logs(
        self, buffer: float = ..., *, batched: bool
    ) -> contextlib.AbstractAsyncContextManager[trio.MemoryReceiveChannel[Any]]: ...

    def subscribe_logs(
        self, buffer: float = math.inf, *, batched: bool = False
    ) -> contextlib.AbstractAsyncContextManager[trio.MemoryReceiveChannel[Any]]:
        """Every output line of every proc, on a channel of its own, while in the block.

        ``async with ovr.subscribe_logs() as rx: async for msg in rx: ...``:
        as `subscribe_states`, for the messages of `watch_logs` (`LogMsg`,
        or with `batched` one `LogBatch` per read).

        Raises:
          ValueError: `buffer` is not a whole number >= 1 or `math.inf`.
        """
        return self._subscribe_logs(_buffer_size(buffer), batched)

    @contextlib.asynccontextmanager
    async def _subscribe_logs(
        self, buffer: float, batched: bool
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Any]]:
        send, receive = trio.open_memory_channel[Any](buffer)
        self.watch_logs(send, batched=batched)
        try:
            yield receive
        finally:
            self.unwatch_logs(send)
            send.close()

    # -- waiting -------------------------------------------------------------

    async def wait_for_state(
        self,
        id: str,
        *states: State,
        timeout: float | None = None,  # noqa: ASYNC109 - a parameter of the API (API.md)
    ) -> ProcessInfo:
        """Wait until the proc is in one of `states` (at once if it already is).

        Every transition is seen, even one that lasts no time at all.

        Cancellation: safe; nothing is left waiting.

        Raises:
          UnknownProcError: `id` is not registered.
          TimeoutError: not reached within `timeout` seconds.
        """
        rec = self._get(id)
        if not states:
            raise ValueError("wait_for_state() needs at least one State")
        wanted = frozenset(State(s) for s in states)
        info = self._info(rec)
        if info.state in wanted:
            return info
        waiter = _Waiter(id, lambda i: i.state in wanted)
        result: ProcessInfo = await self._wait(self._state_waiters, waiter, timeout)
        if result is None:
            names = "/".join(sorted(s.value for s in wanted))
            raise TimeoutError(
                f"proc {id!r} did not reach {names} within {timeout} s "
                f"(it is {rec.cmd.state.value})"
            )
        return result

    async def wait_for_log(
        self,
        id: str,
        pattern: str | re.Pattern[str],
        timeout: float | None = None,  # noqa: ASYNC109 - a parameter of the API (API.md)
    ) -> LogMsg:
        """Wait for a line of the proc's current run matching `pattern` (`re.search`).

        Lines already printed by the current run count too (the last
        200 are kept).

        Cancellation: safe; nothing is left waiting.

        Raises:
          UnknownProcError: `id` is not registered.
          TimeoutError: no such line within `timeout` seconds.
        """
        rec = self._get(id)
        regex = re.compile(pattern)

        def match(batch: LogBatch) -> LogMsg | None:
            search = regex.search
            for line in batch.lines:
                if search(line) is not None:
                    return LogMsg(batch.id, batch.type, line, batch.ts)
            return None

        for batch in rec.tail.batches():
            if (found := match(batch)) is not None:
                return found
        result: LogMsg = await self._wait(self._log_waiters, _Waiter(id, match), timeout)
        if result is None:
            hint = "" if rec.tail or rec.cmd.pty else f"; it printed nothing: {SILENT_HINT}"
            raise TimeoutError(
                f"proc {id!r} printed no line matching {regex.pattern!r} within {timeout} s "
                f"(it is {rec.cmd.state.value}){hint}"
            )
        return result

    @staticmethod
    async def _wait(waiters: list[_Waiter], waiter: _Waiter, limit: float | None) -> Any:
        waiters.append(waiter)
        try:
            with trio.move_on_after(math.inf if limit is None else limit):
                await waiter.event.wait()
        finally:
            waiters.remove(waiter)
        return waiter.result

    # -- the end (see _lifetime) ------------------------------------------------

    @contextlib.asynccontextmanager
    async def _running(
        self, nursery: trio.Nursery | None = None, *, block: bool = False
    ) -> AsyncIterator[None]:
        """The one way procs run and end: the block, supervise() and supervise_all().

        While inside, `start()` uses `nursery` (if given).  When the `block`
        is left, or without a block the last of the nested users, by any
        path, every proc is stopped and awaited, what escaped is swept and
        the watchdog dismissed (see `Lifetime.open`); leaving the block,
        subscriber channels are closed.
        """
        if nursery is not None:
            self._nursery = nursery
        try:
            async with self._lifetime.open(self.stop_all, self._max_stop_time, owner=block):
                try:
                    yield
                finally:
                    if nursery is not None:
                        self._nursery = None  # start() is refused from here on
        finally:
            if block:
                self._states.close_all()
                self._logs.close_all()

    def _max_stop_time(self) -> float:
        """The longest the slowest proc's current run may take to end once stopped:
        one stop round per level of the requirements (dependents stop first)."""
        one = max((rec.cmd._max_stop_time for rec in self._procs.values()), default=0.0)
        levels = requirement_depth({id: rec.requires for id, rec in self._procs.items()})
        return max(1, levels) * one

    async def _wait_idle(self) -> None:
        """Until no proc is supervised (the block ends its body then, after a signal)."""
        await self._lifetime.wait_idle()

    def _observe_sweeps(self, listener: Callable[[list[int]], None] | None) -> None:
        """Seam for the pytest plugin: `listener(pids)` hears of every escaped process.

        Called, before they are signalled, with the processes each sweep
        found outside their proc's process group (at a stop, before a
        restart, at remove(), at the end), whichever sweep found them.
        """
        self._lifetime.scanner.on_sweep = listener
