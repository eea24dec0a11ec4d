"""`Cmd`: one process, one run, go-cmd semantics in Trio style.

Theory of operation.  `run()` spawns the process as the leader of its own
process group and then waits, inside `_stop_scope`, for the leader to exit.
Two reader tasks ("pumps") split stdout and stderr into lines meanwhile.

Every way out of the wait (the leader exited, `stop()`/`kill()` cancelled
`_stop_scope`, or the task running `run()` was cancelled) goes through the
same shielded, bounded cleanup, `_end_group`: the stop signal to the whole
group (unless already sent), up to `stop_timeout` for every member to be
gone, then SIGKILL to the group, and the leader reaped.  Escalation watches
the *group*, not the leader nor the pipes: a grandchild that ignores the
stop signal is killed even when the leader obeyed, and a child that keeps
its stdout open cannot delay a stop.

The pumps run in shielded scopes so the last lines are read even when the
run is cancelled; once the group is gone they get `_DRAIN_GRACE` seconds to
reach EOF (only a process that escaped the group can hold a pipe open that
long).  The final state is announced after the last line: every line of a
run is published before its final state.

Flow control: while the Overseer's `OutputGate` is held (a consumer such as
the CLI's stdout cannot keep up), the pumps of a live run stop reading, so
the child blocks once its pipe is full, as on a paused terminal.  Once the
group is gone the drain ignores the gate: what is left is at most a pipe's
content, and a run always ends with every line it wrote.
"""

from __future__ import annotations

import enum
import errno
import logging
import math
import os
import secrets
import signal as _signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import attrs
import trio

from ._errors import CmdAlreadyStartedError
from ._output import LineSplitter
from ._pty import DEFAULT_SIZE, check_pty_option
from ._records import STDERR, STDOUT, Status
from ._signals import Ladder, describe_signal, parse_ladder, parse_signal
from ._spawn import ChildProcess, Reader, group_exists, signal_group, spawn
from ._state import FINAL_STATES, RUNNING_STATES, State, StateMachine, Trigger, exit_trigger
from ._sweep import KILL_WAIT, TAG_VAR, Scanner

logger = logging.getLogger("trio_overseer")

_READ_SIZE = 1 << 16
_TAG_KEY = TAG_VAR.encode()
_DRAIN_GRACE = 1.0  # seconds to reach EOF once the group is gone
_POLL_MIN, _POLL_MAX = 0.001, 0.05  # backoff of the group-gone check (no event exists)

_SPAWN_HINTS = {
    errno.EAGAIN: "the limit on processes, RLIMIT_NPROC, may be reached",
    errno.EMFILE: "this process has used up its open files, RLIMIT_NOFILE",
    errno.ENFILE: "the system has used up its open files",
    errno.E2BIG: "the arguments and environment are too large for exec",
    errno.ENOMEM: "out of memory",
}


class OutputGate:
    """Holds back the reading of live runs' pipes while a consumer cannot keep up.

    Held, the pumps of running processes stop reading (the children block
    once their pipes are full); released, they read on.  Draining an ended
    run ignores it.
    """

    __slots__ = ("_open", "_parent")

    def __init__(self, parent: OutputGate | None = None) -> None:
        self._open = trio.Event()
        self._open.set()
        self._parent = parent  # held too while the parent is held (one gate for all procs)

    @property
    def is_open(self) -> bool:
        """Whether pipes are read."""
        return self._open.is_set() and (self._parent is None or self._parent.is_open)

    def hold(self) -> None:
        """Stop reading the pipes of live runs (sync, never blocks)."""
        if self._open.is_set():
            self._open = trio.Event()

    def release(self) -> None:
        """Read them again."""
        self._open.set()

    async def wait_open(self) -> None:
        """Until the gate (and its parent) is released.

        Cancellation: safe.
        """
        while not self.is_open:
            if not self._open.is_set():
                await self._open.wait()
            elif self._parent is not None:
                await self._parent.wait_open()


class Brief(NamedTuple):
    """The part of a `Status` that a state event needs (`Cmd._brief`)."""

    pid: int  # 0 before start
    exit: int  # -1 until the end
    error: str | None
    start_ts: float


class Escalation(enum.IntEnum):
    """How far a stop has gone: only ever up."""

    NONE = 0  # nothing sent
    STOP = 1  # the stop signal (stop(), or the run was cancelled)
    KILL = 2  # SIGKILL (kill(), or stop_timeout passed)


StateHook = Callable[["Cmd"], None]
OutputHook = Callable[["Cmd", int, list[str]], None]


# -- validators and converters: bad input fails where it was typed ----------


def _check_name(_: Any, __: Any, name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"Cmd needs a non-empty executable name or path, got {name!r}")
    if "\0" in name:
        raise ValueError(f"Cmd name {name!r} contains a NUL byte")


def _to_args(args: Sequence[str | os.PathLike[str]]) -> tuple[str, ...]:
    if isinstance(args, str | bytes):
        raise TypeError(f"Cmd args must be a sequence of strings, not a single string: {args!r}")
    out = []
    for arg in args:
        if isinstance(arg, os.PathLike):
            arg = os.fspath(arg)
        if not isinstance(arg, str):
            raise TypeError(f"Cmd args must be strings, got {arg!r} in {args!r}")
        if "\0" in arg:
            raise ValueError(f"Cmd argument {arg!r} contains a NUL byte")
        out.append(arg)
    return tuple(out)


def _check_group(_: Any, __: Any, group: object) -> None:
    if not isinstance(group, str):
        raise TypeError(f"Cmd group must be a string ('' for none), got {group!r}")


def _check_flag(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    # A flag given as a string ("no", "false") would be true: refuse it.
    if not isinstance(value, bool):
        raise TypeError(f"Cmd {attribute.name} must be True or False, got {value!r}")


def _to_dir(path: str | os.PathLike[str] | None) -> str | None:
    if path is None:
        return None
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"Cmd dir must be a path (str or os.PathLike), got {path!r}")
    text = os.fspath(path)
    if not isinstance(text, str) or not text:
        raise ValueError(f"Cmd dir must be a non-empty path, got {path!r}")
    return text


def _to_env(env: Mapping[str, str] | None) -> dict[str, str] | None:
    if env is None:
        return None
    if not isinstance(env, Mapping):
        raise TypeError(f"Cmd env must be a mapping of str to str, got {env!r}")
    out = {}
    for key, value in env.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"Cmd env must map str to str, got {key!r}: {value!r}")
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise ValueError(f"Cmd env has an invalid entry {key!r}: {value!r}")
        out[key] = value
    return out


def _check_signal(_: Any, __: Any, sig: object) -> None:
    if not isinstance(sig, int) or isinstance(sig, bool):
        raise ValueError(f"stop_signal must be a signal number, got {sig!r}")
    try:
        parse_signal(sig)
    except ValueError as exc:
        raise ValueError(f"stop_signal: {exc}") from None


def _to_ladder(value: object) -> Ladder | None:
    if value is None:
        return None
    try:
        return parse_ladder(value)
    except ValueError as exc:
        raise ValueError(f"stop_signals: {exc}") from None


def _non_negative(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"Cmd {attribute.name} must be a number, got {value!r}")
    if not value >= 0 or math.isinf(value):
        raise ValueError(f"Cmd {attribute.name} must be a finite number >= 0, got {value!r}")


def _check_line_size(_: Any, __: Any, size: object) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 4:
        raise ValueError(f"line_buffer_size must be an int >= 4 (bytes), got {size!r}")


def _check_retries(_: Any, __: Any, n: object) -> None:
    if n == math.inf and isinstance(n, float):
        return  # no limit
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"retry_times must be an int >= 0 or math.inf (no limit), got {n!r}")


# on_setattr=NO_OP: options are validated when the Cmd is made (where the user
# typed them); the private fields change on every state change and line, and a
# generated __setattr__ would sit on that hot path.
@attrs.define(eq=False, repr=False, on_setattr=attrs.setters.NO_OP)
class Cmd:
    """One process, run once: spawn, stream its output, stop it, reap it.

    `delay_start` and `retry_times` are used by `Overseer.supervise`, which
    runs a fresh `clone()` for each restart; `run()` itself starts at once
    and runs once.  With `streaming=True`, `stdout`/`stderr` are unbounded
    channels of lines (the child is never slowed by a slow reader; memory is
    the reader's to bound).
    """

    name: str = attrs.field(validator=_check_name)
    args: tuple[str, ...] = attrs.field(default=(), converter=_to_args)
    group: str = attrs.field(default="", kw_only=True, validator=_check_group)
    dir: str | None = attrs.field(default=None, kw_only=True, converter=_to_dir)
    env: dict[str, str] | None = attrs.field(default=None, kw_only=True, converter=_to_env)
    buffered: bool = attrs.field(default=True, kw_only=True, validator=_check_flag)
    streaming: bool = attrs.field(default=False, kw_only=True, validator=_check_flag)
    line_buffer_size: int = attrs.field(default=16384, kw_only=True, validator=_check_line_size)
    stop_signal: int = attrs.field(default=_signal.SIGTERM, kw_only=True, validator=_check_signal)
    stop_timeout: float = attrs.field(default=5.0, kw_only=True, validator=_non_negative)
    # The stop escalation: (signal, seconds) steps, SIGKILL after the last; None:
    # the one step (stop_signal, stop_timeout).  Given, it sets those two to its
    # first signal and its total time (see __attrs_post_init__).
    stop_signals: Ladder | None = attrs.field(default=None, kw_only=True, converter=_to_ladder)
    delay_start: float = attrs.field(default=0.0, kw_only=True, validator=_non_negative)
    # An int, or math.inf (no limit).
    retry_times: float = attrs.field(default=0, kw_only=True, validator=_check_retries)
    # True or (columns, rows): stdout and stderr are one pseudo-terminal (see _pty).
    pty: bool | tuple[int, int] = attrs.field(
        default=False, kw_only=True, converter=check_pty_option
    )

    stdout: trio.MemoryReceiveChannel[str] | None = attrs.field(init=False, default=None)
    stderr: trio.MemoryReceiveChannel[str] | None = attrs.field(init=False, default=None)

    # The run's state; changed only by _fire, which announces it in the same stretch.
    _machine: StateMachine = attrs.field(init=False, factory=StateMachine)
    _run_called: bool = attrs.field(init=False, default=False)  # run() began: never again
    _proc: ChildProcess | None = attrs.field(init=False, default=None)  # set once spawned
    _exit: int = attrs.field(init=False, default=-1)  # the return code once final, else -1
    _error: str | None = attrs.field(init=False, default=None)  # why, once fatal/signalled
    _start_ts: float = attrs.field(init=False, default=0.0)  # wall clock at SPAWNED, else 0
    _stop_ts: float = attrs.field(init=False, default=0.0)  # wall clock once final, else 0
    _start_mono: float = attrs.field(init=False, default=0.0)  # _start_ts, monotonic
    _stop_mono: float = attrs.field(init=False, default=0.0)  # _stop_ts, monotonic
    # The lines so far; appended only while `buffered`.
    _out_lines: list[str] = attrs.field(init=False, factory=list)
    _err_lines: list[str] = attrs.field(init=False, factory=list)
    # The send sides of `stdout`/`stderr` (`streaming` only); closed at the end.
    _out_send: trio.MemorySendChannel[str] | None = attrs.field(init=False, default=None)
    _err_send: trio.MemorySendChannel[str] | None = attrs.field(init=False, default=None)
    _done: trio.Event = attrs.field(init=False, factory=trio.Event)  # set once final
    # How far the stop has gone: only ever up (NONE -> STOP -> KILL).
    _sent: Escalation = attrs.field(init=False, default=Escalation.NONE)
    # How many steps of the ladder were sent (1 from the first stop signal on).
    _steps: int = attrs.field(init=False, default=0)
    # A stop() (STOP) or kill() (KILL) while _spawning: done once the process exists.
    _pending: Escalation = attrs.field(init=False, default=Escalation.NONE)
    # Between START and the process's existence (the spawn may wait in a thread).
    _spawning: bool = attrs.field(init=False, default=False)
    # Cancelled by stop()/kill(): ends the wait for the leader's exit.
    _stop_scope: trio.CancelScope = attrs.field(init=False, factory=trio.CancelScope)
    # The stop_timeout wait of _end_group while in it; kill() cancels it: SIGKILL at once.
    _grace_scope: trio.CancelScope | None = attrs.field(init=False, default=None)
    _stop_event: trio.Event = attrs.field(init=False, factory=trio.Event)  # stop()/kill() seen
    _pumps_left: int = attrs.field(init=False, default=0)  # pipes not yet at EOF
    # The wait of a drain that a stop would cut short, while in it; the last pump cancels it.
    _drain_scope: trio.CancelScope | None = attrs.field(init=False, default=None)
    # Set by the Overseer (before run()): called on every state change / batch of lines.
    _on_state: StateHook | None = attrs.field(init=False, default=None)
    _on_output: OutputHook | None = attrs.field(init=False, default=None)
    # The run's tag (env TAG_VAR, inherited by every descendant; set by run())
    # and the scanner that finds descendants which escaped the group (see _sweep).
    _tag: str = attrs.field(init=False, default="")
    _tag_prefix: str = attrs.field(init=False, default="")  # the Overseer's, else random
    _scanner: Scanner | None = attrs.field(init=False, default=None)
    # Flow control (set by the Overseer): while held, live pumps wait in one
    # of `_holds`; `_draining` (the group is gone) makes them read regardless.
    _gate: OutputGate | None = attrs.field(init=False, default=None)
    _holds: list[trio.CancelScope] = attrs.field(init=False, factory=list)
    _draining: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        if self.stop_signals is not None:
            self.stop_signal = self.stop_signals[0][0]
            self.stop_timeout = sum(seconds for _, seconds in self.stop_signals)
        if self.streaming:
            self._out_send, self.stdout = trio.open_memory_channel[str](math.inf)
            self._err_send, self.stderr = trio.open_memory_channel[str](math.inf)

    def __repr__(self) -> str:
        pid = f" pid {self._proc.pid}" if self._proc else ""
        return f"<Cmd {self.name!r} {self.state.value}{pid}>"

    # -- state ---------------------------------------------------------------

    @property
    def state(self) -> State:
        """The state of this run."""
        return self._machine.state

    def is_initial_state(self) -> bool:
        """Not started yet."""
        return self._machine.state is State.INITIAL

    def is_running_state(self) -> bool:
        """Starting, running or stopping."""
        return self._machine.state in RUNNING_STATES

    def is_final_state(self) -> bool:
        """Finished, interrupted or fatal: nothing more will happen."""
        return self._machine.state in FINAL_STATES

    def status(self) -> Status:
        """A snapshot of this run; safe at any time."""
        if self._stop_mono:
            runtime = self._stop_mono - self._start_mono
        elif self._start_mono:
            runtime = time.monotonic() - self._start_mono
        else:
            runtime = 0.0
        return Status(
            cmd=self.name,
            pid=self._proc.pid if self._proc else 0,
            exit=self._exit,
            error=self._error,
            start_ts=self._start_ts,
            stop_ts=self._stop_ts,
            runtime=runtime,
            stdout=tuple(self._out_lines),
            stderr=tuple(self._err_lines),
        )

    def _brief(self) -> Brief:
        """What a state event needs, without copying lines (see `status`)."""
        return Brief(self._proc.pid if self._proc else 0, self._exit, self._error, self._start_ts)

    @property
    def _max_stop_time(self) -> float:
        """The longest a stop (or a cancellation) of this run takes until `run()`
        returns, when its processes resist: `stop_timeout`, then SIGKILL and
        `KILL_WAIT` for the group, the sweep of descendants that left it, and
        the last lines' drain."""
        return (
            self.stop_timeout + KILL_WAIT + Scanner.max_sweep_time(self.stop_timeout) + _DRAIN_GRACE
        )

    def clone(self) -> Cmd:
        """A fresh Cmd with the same options, ready to run."""
        return attrs.evolve(self)

    def _fire(self, trigger: Trigger) -> None:
        self._machine.fire(trigger)
        if self._on_state is not None:
            self._on_state(self)

    def _attach(
        self,
        on_state: StateHook,
        on_output: OutputHook,
        tag_prefix: str,
        scanner: Scanner,
        gate: OutputGate | None = None,
    ) -> None:
        """Let the Overseer observe state changes and lines, and tag the run (before run())."""
        self._on_state = on_state
        self._on_output = on_output
        self._tag_prefix = tag_prefix
        self._scanner = scanner
        self._gate = gate

    def _child_env(self) -> dict[bytes, bytes]:
        """The child's environment: `env` (or ours) plus the run's tag.

        Built as bytes: `Popen` would encode every variable of a str mapping.
        """
        if self.env is None:
            # os.environb's own dict of bytes: dict(os.environb) would go
            # through its Mapping methods, key by key (30 µs for 35 variables).
            data = getattr(os.environb, "_data", None)
            env = dict(data) if isinstance(data, dict) else dict(os.environb)
        else:
            env = {os.fsencode(k): os.fsencode(v) for k, v in self.env.items()}
        env[_TAG_KEY] = self._tag.encode()
        return env

    # -- control -------------------------------------------------------------

    def stop(self) -> None:
        """Stop: `stop_signal` to the group, SIGKILL after `stop_timeout`.

        Sync and non-blocking; idempotent; a no-op before start and after the
        end.  Sets `retry_times` to 0 so a supervisor will not restart it.
        Await `wait()` for the end.
        """
        self._stop(kill=False)

    def kill(self) -> None:
        """Like `stop()`, but SIGKILL to the group at once."""
        self._stop(kill=True)

    def _stop(self, *, kill: bool) -> None:
        if self._spawning:  # done as soon as there is a process to stop
            self.retry_times = 0
            self._pending = max(self._pending, Escalation.KILL if kill else Escalation.STOP)
            return
        if self._machine.state not in RUNNING_STATES or self._proc is None:
            return
        self.retry_times = 0
        if self._machine.state is State.RUNNING:
            self._fire(Trigger.STOP)
        if kill:
            if self._sent is not Escalation.KILL:
                self._sent = Escalation.KILL
                self._send(_signal.SIGKILL)
            if self._grace_scope is not None:
                self._grace_scope.cancel()
        elif self._sent is Escalation.NONE:
            self._sent = Escalation.STOP
            self._steps = 1
            self._send(self.stop_signal)
        self._stop_scope.cancel()
        self._stop_event.set()

    def signal(self, sig: int) -> None:
        """Send exactly `sig` to the process group; a no-op when not running."""
        if self._machine.state in RUNNING_STATES and self._proc is not None:
            self._send(sig)

    def _send(self, sig: int) -> None:
        """Signal the group, and the leader too if it left the group."""
        assert self._proc is not None
        pid = self._proc.pid
        signal_group(pid, sig)
        if self._proc.returncode is None:
            try:
                if os.getpgid(pid) != pid:
                    os.kill(pid, sig)
            except ProcessLookupError:
                pass

    # -- running -------------------------------------------------------------

    async def wait(self) -> Status:
        """Wait for the end of the run (any number of tasks may wait).

        Cancellation: safe; the run goes on.
        """
        await self._done.wait()
        return self.status()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> Status:
        """Run the process to its end and return the final `Status`.

        With ``nursery.start(cmd.run)``, reports started once the process is
        running, or has failed to start (state `fatal`, `Status.error` says
        why: failing to start does not raise).

        Cancellation: the process group gets `stop_signal`, then SIGKILL after
        `stop_timeout`, and is reaped before the cancellation propagates.

        Raises:
          CmdAlreadyStartedError: on a second call; use `clone()`.
        """
        if self._run_called:
            raise CmdAlreadyStartedError(
                f"Cmd {self.name!r} was already started; a Cmd runs once, "
                "run a fresh copy made with cmd.clone()"
            )
        self._run_called = True
        self._tag = f"{self._tag_prefix or secrets.token_hex(6)}.{secrets.token_hex(6)}"
        self._fire(Trigger.START)
        capture = self.buffered or self.streaming or self._on_output is not None
        pty = None if self.pty is False else DEFAULT_SIZE if self.pty is True else self.pty
        self._spawning = True
        try:
            proc, out, err = await spawn(
                [self.name, *self.args],
                cwd=self.dir,
                env=self._child_env(),
                capture=capture,
                pty=pty,
            )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            self._error = self._spawn_error(exc)
            self._stop_ts = time.time()
            self._fire(Trigger.SPAWN_FAILED)
            self._finish()
            task_status.started()
            return self.status()
        finally:
            self._spawning = False
        self._proc = proc
        self._start_ts = time.time()
        self._start_mono = time.monotonic()
        self._fire(Trigger.SPAWNED)
        if self._pending:  # stop() or kill() while it was being spawned
            self._stop(kill=self._pending is Escalation.KILL)
        task_status.started()
        try:
            await self._watch(proc, out, err)
        finally:
            self._record_exit(proc)
        return self.status()

    def _refuse(self, error: str) -> None:
        """End this run fatal without starting it (a supervisor's verdict, e.g. a
        requirement that failed): starting, then fatal with `error`, as a spawn
        the OS refused.  Sync; a no-op unless the run is still initial."""
        if self._run_called:
            return
        self._run_called = True
        self._fire(Trigger.START)
        self._error = error
        self._stop_ts = time.time()
        self._fire(Trigger.SPAWN_FAILED)
        self._finish()

    def _spawn_error(self, exc: BaseException) -> str:
        where = f" in dir {self.dir!r}" if self.dir else ""
        if isinstance(exc, OSError):
            cause = exc.strerror or str(exc)
            if exc.filename is not None:
                cause = f"{cause}: {exc.filename!r}"
            if hint := _SPAWN_HINTS.get(exc.errno or 0):
                cause = f"{cause} ({hint})"
        else:
            cause = str(exc)
        return f"cannot start {self.name!r}{where}: {cause}"

    async def _watch(self, proc: ChildProcess, out: Reader | None, err: Reader | None) -> None:
        pumps = [(out, STDOUT, trio.CancelScope(shield=True))]
        pumps.append((err, STDERR, trio.CancelScope(shield=True)))
        async with trio.open_nursery() as nursery:
            for stream, kind, scope in pumps:
                if stream is not None:
                    self._pumps_left += 1
                    nursery.start_soon(self._pump, stream, kind, scope)
            try:
                with self._stop_scope:
                    await proc.wait()
            finally:
                with trio.CancelScope(shield=True):
                    await self._end_group(proc)
                    swept = self._sent is not Escalation.NONE
                    if swept:
                        await self._sweep_escaped()
                deadline = trio.current_time() + _DRAIN_GRACE
                for _, _, scope in pumps:
                    scope.deadline = deadline
                self._draining = True  # what is left is bounded: read it whatever the gate
                for hold in self._holds:
                    hold.cancel()
                if not swept:
                    await self._sweep_if_stopped_while_draining(deadline)

    async def _end_group(self, proc: ChildProcess) -> None:
        """Make sure no process of the group is left, and the leader is reaped.

        Each step of the ladder (`stop_signals`, or the one step `stop_signal`,
        `stop_timeout`) sends its signal to the group and waits up to its time
        for the whole group to be gone; then SIGKILL.  A kill() meanwhile
        skips to SIGKILL at once.  Bounded: at most stop_timeout (the ladder's
        total) + KILL_WAIT seconds.
        """
        pgid = proc.pid
        if proc.returncode is not None and not group_exists(pgid):
            return
        if proc.returncode is None and self._machine.state is State.RUNNING:
            self._fire(Trigger.STOP)  # cancelled from outside
        ladder = self.stop_signals or ((self.stop_signal, self.stop_timeout),)
        for step, (sig, seconds) in enumerate(ladder):
            if self._sent is Escalation.KILL:
                break
            if self._steps <= step:  # stop() sent the first one already
                self._sent = Escalation.STOP
                self._steps = step + 1
                self._send(sig)
            with trio.move_on_after(seconds) as grace:
                self._grace_scope = grace
                await self._wait_gone(proc)
            self._grace_scope = None
            if not grace.cancelled_caught:
                return
            if self._sent is not Escalation.KILL:
                then = "killing" if step == len(ladder) - 1 else "escalating: next step for"
                logger.info(
                    "%r did not stop within %.3g s of %s; %s its process group",
                    self,
                    seconds,
                    describe_signal(sig),
                    then,
                )
        self._sent = Escalation.KILL
        self._send(_signal.SIGKILL)
        with trio.move_on_after(KILL_WAIT) as last:
            await self._wait_gone(proc)
        if last.cancelled_caught:
            logger.error("%r: process group %d survived SIGKILL for %s s", self, pgid, KILL_WAIT)

    async def _sweep_if_stopped_while_draining(self, deadline: float) -> None:
        """The leader is gone but a pipe is still open: a stop now sweeps what holds it.

        Ends when the pumps do (EOF), at the drain deadline, or after the sweep.
        """
        if self._pumps_left == 0:
            return
        with trio.CancelScope(shield=True, deadline=deadline) as drain:
            self._drain_scope = drain
            await self._stop_event.wait()
            # From here the sweep runs to its end (it is bounded by itself),
            # even when the pipes close as the escaped ones let go of them.
            self._drain_scope = None
            drain.deadline = math.inf
            await self._sweep_escaped()
        self._drain_scope = None

    async def _sweep_escaped(self) -> None:
        """End descendants that left the process group (setsid, daemons)."""
        scanner = self._scanner or Scanner()
        sig = _signal.SIGKILL if self._sent is Escalation.KILL else self.stop_signal
        await scanner.sweep(self._tag.encode(), sig, self.stop_timeout)

    @staticmethod
    async def _wait_gone(proc: ChildProcess) -> None:
        """Wait until the leader is reaped and no member of its group is left."""
        await proc.wait()
        delay = _POLL_MIN
        while group_exists(proc.pid):  # no event tells when a non-child exits
            await trio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)

    async def _pump(self, stream: Reader, kind: int, scope: trio.CancelScope) -> None:
        """Read one pipe to EOF (or the drain deadline), emitting whole lines."""
        splitter = LineSplitter(self.line_buffer_size)
        emit = self._emit
        gate = self._gate
        try:
            with scope:
                while True:
                    if gate is not None and not gate.is_open and not self._draining:
                        await self._held(gate)
                    data = await stream.receive_some(_READ_SIZE)
                    if not data:
                        break
                    if lines := splitter.feed(data):
                        emit(kind, lines)
        finally:
            stream.close()
            self._pumps_left -= 1
            if self._pumps_left == 0 and self._drain_scope is not None:
                self._drain_scope.cancel()
        if lines := splitter.flush():
            emit(kind, lines)

    async def _held(self, gate: OutputGate) -> None:
        """Wait until `gate` is released or the drain begins."""
        with trio.CancelScope() as hold:
            self._holds.append(hold)
            try:
                await gate.wait_open()
            finally:
                self._holds.remove(hold)

    def _emit(self, kind: int, lines: list[str]) -> None:
        if self.buffered:
            (self._out_lines if kind == STDOUT else self._err_lines).extend(lines)
        channel = self._out_send if kind == STDOUT else self._err_send
        if channel is not None:
            try:
                for line in lines:
                    channel.send_nowait(line)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the reader closed its end: it wants no more
        if self._on_output is not None:
            self._on_output(self, kind, lines)

    def _record_exit(self, proc: ChildProcess) -> None:
        code = proc.returncode
        if code is None:  # survived SIGKILL (uninterruptible sleep): report, do not hang
            code = -_signal.SIGKILL
            self._error = f"process {proc.pid} could not be reaped"
        elif code < 0:
            self._error = f"signal: {describe_signal(-code)}"
        proc.close()
        self._exit = code
        self._stop_ts = time.time()
        self._stop_mono = time.monotonic()
        self._fire(exit_trigger(code))
        self._finish()

    def _finish(self) -> None:
        for channel in (self._out_send, self._err_send):
            if channel is not None:
                channel.close()
        self._done.set()
