"""Hardening: random programs of Overseer operations, run on real processes.

Hypothesis draws a *program*, a short list of operations (add, remove,
start, supervise in the background, stop, kill, signal, stop_all, subscribe,
unsubscribe, close a subscriber's receive side, drain a subscriber, pause,
settle), and each example runs it under its own ``trio.run`` against one
``open_overseer()`` block, with processes from the zoo of ``zoo.py``
(each on pipes or, as drawn, on a pty: ``pty=True``).  A
shrunk failure reads as the program itself, one Python-like line per step.

The oracle is exact whatever the timing, because it never guesses: one
unbounded channel subscribed to both ``watch_state`` and ``watch_logs``
records everything the Overseer publishes, in one total order, and the
executor drains it (``receive_nowait``) right before each operation, in the
same synchronous stretch as the call.  So the model knows exactly which
procs are being supervised when an operation runs, and checks:

- every documented error is raised exactly when API.md says
  (`ProcExistsError`, `UnknownProcError`, `ProcRunningError`, `ValueError`),
  and no other;
- each proc's state events, split into runs at each ``starting``, are paths
  of the API.md table with consistent fields; restarts happen exactly when
  the policy says; a run nobody disturbed ends as its zoo animal must, with
  exactly its lines; every line of a run comes between ``running`` and its
  final state; a stopped run left none of its descendants alive;
- `status()`, `list_all()` and `is_running()` agree with the events;
- each subscriber receives exactly the messages published while it was
  subscribed, in order, and is cut off (channel closed) exactly when its
  buffer overflows; channels are closed at block exit, unsubscribed ones
  are left open;
- after each example, no process of it is alive or a zombie (by the test's
  environment tag) and the test process holds no more fds than before.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import re
import signal
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from children import (
    ALLOWED,
    EXIT_1,
    FINAL,
    PY,
    TAG_VAR,
    T,
    describe,
    my_zombies,
    pid_alive,
    tagged_env,
    tagged_pids,
    wait_pid_gone,
)
from hypothesis import note, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, multiple, rule
from zoo import (
    FAST_LINES,
    MARK_VAR,
    SPAWN_ESCAPED_LETTING_GO,
    SPAWN_ESCAPED_THEN_EXIT_1,
    SPAWN_TREE,
    ZOO,
    Kind,
    marked_pids,
)

from trio_overseer import (
    STDERR,
    STDOUT,
    LogBatch,
    LogMsg,
    Overseer,
    ProcessInfo,
    ProcExistsError,
    ProcRunningError,
    State,
    UnknownProcError,
    open_overseer,
)

# Profiles (registered in conftest.py): "ci" (the default) bounds the example
# count; "long" is the long campaign, --hypothesis-profile=long.  Applied to
# this module's test only: loading a profile here would change the settings
# of every @given test decorated after this import, and of none before it.
_ACTIVE = settings.get_current_profile_name()
PROFILE = settings.get_profile("ci" if _ACTIVE == "default" else _ACTIVE)

STOP_TIMEOUT = 0.2


# --- the program: operations as data ------------------------------------------------


class Op:
    """One step of a program; `str()` is its Python-like line."""

    async def apply(self, ex: Executor) -> None:
        raise NotImplementedError


def _sig(sig: int) -> str:
    return signal.Signals(sig).name


@attrs.frozen
class Add(Op):
    id: str
    kind: str  # a ZOO key, or "" for an empty executable
    retry_times: int = 0
    pty: bool = False

    def __str__(self) -> str:
        what = f"*{self.kind}" if self.kind else "''"
        retry = f", retry_times={self.retry_times}" if self.retry_times else ""
        pty = ", pty=True" if self.pty else ""
        return f"ovr.add({self.id!r}, {what}{retry}{pty})"

    async def apply(self, ex: Executor) -> None:
        ex.add(self)


@attrs.frozen
class Remove(Op):
    id: str

    def __str__(self) -> str:
        return f"ovr.remove({self.id!r})"

    async def apply(self, ex: Executor) -> None:
        ex.remove(self.id)


@attrs.frozen
class Start(Op):
    id: str
    settle: bool = False  # then wait as Settle does

    def __str__(self) -> str:
        then = f"; await settle({self.id!r})" if self.settle else ""
        return f"await ovr.start({self.id!r}){then}"

    async def apply(self, ex: Executor) -> None:
        await ex.start(self.id)
        if self.settle:
            await ex.settle(self.id)


@attrs.frozen
class Supervise(Op):
    id: str

    def __str__(self) -> str:
        return f"await background.start(ovr.supervise, {self.id!r})"

    async def apply(self, ex: Executor) -> None:
        await ex.supervise(self.id)


@attrs.frozen
class Stop(Op):
    id: str
    kill: bool = False

    def __str__(self) -> str:
        return f"ovr.stop({self.id!r}{', kill=True' if self.kill else ''})"

    async def apply(self, ex: Executor) -> None:
        await ex.stop(self.id, self.kill)


@attrs.frozen
class Signal(Op):
    id: str
    sig: int

    def __str__(self) -> str:
        return f"ovr.signal({self.id!r}, {_sig(self.sig)})"

    async def apply(self, ex: Executor) -> None:
        ex.signal(self.id, self.sig)


@attrs.frozen
class StopAll(Op):
    kill: bool = False

    def __str__(self) -> str:
        return f"ovr.stop_all(kill={self.kill})"

    async def apply(self, ex: Executor) -> None:
        await ex.stop_all(self.kill)


@attrs.frozen
class Watch(Op):
    what: str  # "state" or "logs"
    size: float
    batched: bool = False

    def __str__(self) -> str:
        size = "math.inf" if self.size == math.inf else str(int(self.size))
        batched = ", batched=True" if self.what == "logs" and self.batched else ""
        return f"subN = watch_{self.what}(buffer={size}{batched})"

    async def apply(self, ex: Executor) -> None:
        ex.watch(self)


@attrs.frozen
class Unwatch(Op):
    sub: int

    def __str__(self) -> str:
        return f"ovr.unwatch_*(sub{self.sub})"

    async def apply(self, ex: Executor) -> None:
        ex.unwatch(self.sub)


@attrs.frozen
class CloseReceive(Op):
    sub: int

    def __str__(self) -> str:
        return f"sub{self.sub}.receive_channel.close()"

    async def apply(self, ex: Executor) -> None:
        ex.close_receive(self.sub)


@attrs.frozen
class Drain(Op):
    sub: int

    def __str__(self) -> str:
        return f"drain(sub{self.sub})  # receive_nowait() until WouldBlock/EndOfChannel"

    async def apply(self, ex: Executor) -> None:
        ex.drain(self.sub)


@attrs.frozen
class Pause(Op):
    seconds: float

    def __str__(self) -> str:
        return f"await trio.sleep({self.seconds})"

    async def apply(self, ex: Executor) -> None:
        await trio.sleep(self.seconds)


@attrs.frozen
class Settle(Op):
    id: str

    def __str__(self) -> str:
        return f"await settle({self.id!r})  # until its supervision ends, or it is ready"

    async def apply(self, ex: Executor) -> None:
        await ex.settle(self.id)


@attrs.frozen
class Program:
    ops: tuple[Op, ...]

    def lines(self) -> list[str]:
        out = []
        subs = 0
        for op in self.ops:
            line = str(op)
            if isinstance(op, Watch) and op.size != 0:
                line = line.replace("subN", f"sub{subs}")
                subs += 1
            elif isinstance(op, Watch):
                line = line.replace("subN = ", "")
            out.append(line)
        return out

    def __repr__(self) -> str:
        body = "".join(f"\n    {line}" for line in self.lines())
        return f"Program(  # inside: async with open_overseer() as ovr:{body}\n)"


KINDS = st.sampled_from(list(ZOO))
SIGNALS = [signal.SIGTERM, signal.SIGKILL, signal.SIGUSR1, signal.SIGSTOP, signal.SIGCONT]


class Programs(RuleBasedStateMachine):
    """Draws a program: each rule appends one operation; teardown runs it.

    Ids come from the ``procs`` bundle (every id ever added, also by an add
    that must fail, or removed since: the unknown-id errors come from those),
    subscribers from the ``subs`` bundle.
    """

    procs = Bundle("procs")
    subs = Bundle("subs")

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[Op] = []
        self.watches = 0

    def _op(self, op: Op) -> None:
        self.ops.append(op)

    @initialize(target=procs, kind=KINDS, retry_times=st.integers(0, 2), pty=st.booleans())
    def add_a(self, kind: str, retry_times: int, pty: bool) -> str:
        self._op(Add("a", kind, retry_times, pty))
        return "a"

    @rule(
        target=procs,
        id=st.sampled_from(["b", "a", "c", ""]),
        kind=st.one_of(KINDS, st.just("")),
        retry_times=st.integers(0, 2),
        pty=st.booleans(),
    )
    def add(self, id: str, kind: str, retry_times: int, pty: bool) -> str:
        self._op(Add(id, kind, retry_times, pty))
        return id

    @rule(id=procs, settle=st.booleans())
    def start(self, id: str, settle: bool) -> None:
        self._op(Start(id, settle))

    @rule(id=procs)
    def supervise(self, id: str) -> None:
        self._op(Supervise(id))

    @rule(id=procs, kill=st.booleans())
    def stop(self, id: str, kill: bool) -> None:
        self._op(Stop(id, kill))

    @rule(id=procs)
    def settle(self, id: str) -> None:
        self._op(Settle(id))

    @rule(id=procs, sig=st.sampled_from(SIGNALS))
    def signal(self, id: str, sig: int) -> None:
        self._op(Signal(id, sig))

    @rule(kill=st.booleans())
    def stop_all(self, kill: bool) -> None:
        self._op(StopAll(kill))

    @rule(id=procs)
    def remove(self, id: str) -> None:
        self._op(Remove(id))

    @rule(
        target=subs,
        what=st.sampled_from(["state", "logs"]),
        size=st.sampled_from([1, 3, math.inf, 0]),
        batched=st.booleans(),
    )
    def watch(self, what: str, size: float, batched: bool) -> Any:
        self._op(Watch(what, size, batched))
        if size == 0:  # refused: no subscriber
            return multiple()
        self.watches += 1
        return self.watches - 1

    @rule(sub=subs)
    def drain(self, sub: int) -> None:
        self._op(Drain(sub))

    @rule(sub=subs)
    def unwatch(self, sub: int) -> None:
        self._op(Unwatch(sub))

    @rule(sub=subs)
    def close_receive(self, sub: int) -> None:
        self._op(CloseReceive(sub))

    @rule(seconds=st.sampled_from([0.0, 0.01, 0.05]))
    def pause(self, seconds: float) -> None:
        self._op(Pause(seconds))

    def teardown(self) -> None:
        run_and_check(Program(tuple(self.ops)))


# --- the model ------------------------------------------------------------------------


@attrs.define
class Run:
    """One run of a proc, as published."""

    infos: list[ProcessInfo] = attrs.field(factory=list)
    out: list[str] = attrs.field(factory=list)
    err: list[str] = attrs.field(factory=list)
    touched: bool = False  # stopped, killed or signalled while live
    stop_requested: bool = False
    frozen: bool = False  # SIGSTOPped (and not SIGCONTinued)

    @property
    def state(self) -> State:
        return self.infos[-1].state

    @property
    def live(self) -> bool:
        return self.state not in FINAL


@attrs.define
class Background:
    """A supervise() call in a background task."""

    id: str
    error: type[Exception] | None = None  # the error its call must raise
    exc: BaseException | None = None
    returned: int | None = None
    expected: int | None = None  # the exit code of its last run, once known


@attrs.define
class Reg:
    """One registration of a proc id, from add() to remove()."""

    id: str
    kind_name: str
    kind: Kind
    retry_times: int
    pty: bool = False  # stdout and stderr one terminal: every line is stdout
    busy: bool = False  # a supervision is in progress
    stop_requested: bool = False  # in the current supervision
    stopped: bool = False  # stop() since the last start: status() shows retry_times 0
    sup_runs: int = 0  # runs in the current supervision
    runs: list[Run] = attrs.field(factory=list)
    last: ProcessInfo | None = None
    background: Background | None = None

    def begin_supervision(self, background: Background | None = None) -> None:
        self.busy = True
        self.stop_requested = self.stopped = False
        self.sup_runs = 0
        self.background = background

    def end_supervision(self) -> None:
        self.busy = False
        if self.background is not None:
            self.background.expected = self.last.exit_code if self.last else -1
            self.background = None

    @property
    def live_run(self) -> Run | None:
        return self.runs[-1] if self.runs and self.runs[-1].live else None


@attrs.define
class Sub:
    """A lazy subscriber: it receives only when the program drains it."""

    name: str
    what: str
    size: float
    batched: bool
    send: trio.MemorySendChannel[Any]
    recv: trio.MemoryReceiveChannel[Any]
    pos: int  # index into the oracle's stream up to which it was simulated
    status: str = "on"  # on, off (unsubscribed), cut (cut off), closed (receive side)
    expected: list[Any] = attrs.field(factory=list)  # in its buffer, not yet drained


class Executor:
    def __init__(self, ovr: Overseer, background: trio.Nursery) -> None:
        self.ovr = ovr
        self.background = background
        self.oracle_send, self.oracle = trio.open_memory_channel[Any](math.inf)
        ovr.watch_state(self.oracle_send)
        ovr.watch_logs(self.oracle_send, batched=True)
        self.stream: list[Any] = []  # everything published, in order
        self.regs: dict[str, Reg] = {}
        self.subs: list[Sub] = []
        self.backgrounds: list[Background] = []
        self.oracle_closed = False
        self.trace: list[str] = []  # the program's lines and the events between them

    # -- the oracle --------------------------------------------------------------

    def sync(self) -> None:
        """Take in everything published so far; check the invariants."""
        while True:
            try:
                item = self.oracle.receive_nowait()
            except trio.WouldBlock:
                break
            except trio.EndOfChannel:
                self.oracle_closed = True
                break
            self.take(item)
        self.check_views()

    async def next_event(self) -> None:
        try:
            item = await self.oracle.receive()
        except trio.EndOfChannel:
            self.oracle_closed = True
            raise AssertionError("the oracle channel closed while the block was open") from None
        self.take(item)

    def take(self, item: Any) -> None:
        self.stream.append(item)
        self.trace.append(f"  event: {_show(item)}")
        if isinstance(item, ProcessInfo):
            self.on_state(item)
        else:
            assert isinstance(item, LogBatch), item
            assert len(item), item
            self.on_lines(item)

    def on_state(self, info: ProcessInfo) -> None:
        reg = self.regs.get(info.id)
        assert reg is not None, f"state event of an unregistered proc: {info}"
        assert reg.busy, f"state event of {info.id!r} outside any supervision: {info}"
        if info.state is State.STARTING:
            assert reg.live_run is None, f"a run began before the last ended: {info}"
            if reg.sup_runs:
                assert reg.last is not None, f"restart without a scheduled restart: {info}"
                assert reg.last.restart_in is not None, (
                    f"restart without a scheduled restart: {info}"
                )
                assert not reg.stop_requested, f"restart after stop(): {info}"
            assert info.restarts == reg.sup_runs, info
            assert (info.pid, info.exit_code, info.error) == (0, -1, None), info
            reg.sup_runs += 1
            reg.runs.append(Run())
        else:
            run = reg.live_run
            assert run is not None, f"{info.state.value} outside a run: {info}"
            assert info.state in ALLOWED[run.state], (
                f"illegal transition {run.state.value} -> {info.state.value}: {info}"
            )
        run = reg.runs[-1]
        run.infos.append(info)
        reg.last = info
        assert info.retry_times == (0 if reg.stopped else reg.retry_times), info
        if info.state in (State.RUNNING, State.STOPPING):
            assert info.pid > 0, info
            assert info.exit_code == -1, info
        if info.state not in FINAL:
            assert info.restart_in is None, info
            return
        if info.state is State.FINISHED:
            assert info.exit_code >= 0, info
            assert info.error is None, info
            assert info.pid > 0, info
        elif info.state is State.INTERRUPTED:
            assert info.exit_code < 0, info
            assert info.pid > 0, info
            assert info.error == f"signal: {_sig(-info.exit_code)}", info
        else:
            assert info.pid == 0, info
            assert info.exit_code == -1, info
            assert info.error, info
        self.end_run(reg, run, info)

    def end_run(self, reg: Reg, run: Run, info: ProcessInfo) -> None:
        failed = info.exit_code != 0
        restart = failed and not reg.stop_requested and reg.sup_runs - 1 < reg.retry_times
        assert (info.restart_in is not None) == restart, (
            f"restart_in={info.restart_in} but a restart is {'' if restart else 'not '}due: {info}"
        )
        if not restart:
            reg.end_supervision()
        kind = reg.kind
        if not run.touched and kind.outcome is not None:
            got = (info.state.value, info.exit_code)
            assert got == (kind.outcome.state, kind.outcome.exit), f"{reg.kind_name}: {info}"
            if kind.outcome.error is None:
                assert info.error is None, info
            else:
                assert info.error is not None, info
                assert kind.outcome.error in info.error, info
        if reg.pty:
            assert not run.err, f"{reg.kind_name} on a pty printed on stderr: {run.err!r}"
        # On a pty, stderr is merged into stdout: exact only where it has nothing.
        if not run.touched and kind.lines is not None and not (reg.pty and kind.lines[1]):
            assert (tuple(run.out), tuple(run.err)) == kind.lines, (
                f"{reg.kind_name} printed {run.out[:5]!r}... / {run.err!r}"
            )
        if reg.kind_name == "PRINT_FAST":
            assert run.out == [str(i) for i in range(len(run.out))], "lines lost or reordered"
            assert len(run.out) <= FAST_LINES
        if reg.kind_name == "SPAWN_TREE" and run.stop_requested:
            # A run killed while it printed may have left half a line.
            found = (re.fullmatch(r"(?:group|escaped) (\d+)", line) for line in run.out)
            pids = [int(match[1]) for match in found if match]
            alive = [describe(pid) for pid in pids if pid_alive(pid)]
            assert not alive, f"stopped run of {reg.id!r} left descendants alive: {alive}"

    def on_lines(self, batch: LogBatch) -> None:
        msgs = list(batch)
        assert len(msgs) == len(batch.lines), batch
        for msg, line in zip(msgs, batch.lines, strict=True):
            assert isinstance(msg, LogMsg), msg
            assert (msg.id, msg.type, msg.text, msg.ts) == (batch.id, batch.type, line, batch.ts)
        assert batch.type in (STDOUT, STDERR), batch
        reg = self.regs.get(batch.id)
        assert reg is not None, f"lines of an unregistered proc: {batch}"
        run = reg.live_run
        assert run is not None, f"lines of {batch.id!r} outside running/stopping: {batch.lines}"
        assert run.state in (State.RUNNING, State.STOPPING), (
            f"lines of {batch.id!r} outside running/stopping: {batch.lines}"
        )
        (run.out if batch.type == STDOUT else run.err).extend(batch.lines)

    def check_views(self) -> None:
        """status(), list_all(), has_proc(), is_running() agree with the events."""
        ovr = self.ovr
        if self.oracle_closed:
            return
        assert ovr.list_all() == sorted(self.regs)
        for id, reg in self.regs.items():
            assert ovr.has_proc(id)
            info = ovr.status(id)
            if reg.last is None:
                assert (info.state, info.pid) == (State.INITIAL, 0), info
            else:
                last = reg.last
                got = (info.state, info.pid, info.exit_code, info.error, info.restarts)
                want = (last.state, last.pid, last.exit_code, last.error, last.restarts)
                assert got == want, f"status({id!r}) = {info}, last event {last}"
        assert ovr.is_running() == any(reg.busy for reg in self.regs.values())

    # -- calls and their documented errors ------------------------------------------

    @contextlib.contextmanager
    def expect(self, error: type[Exception] | None, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            if error is None or type(exc) is not error:
                want = error.__name__ if error else "no error"
                raise AssertionError(f"{what} raised {exc!r}; expected {want}") from exc
        else:
            assert error is None, f"{what} did not raise {error.__name__}"

    def lookup_error(self, id: str) -> type[Exception] | None:
        return None if id in self.regs else UnknownProcError

    def add(self, op: Add) -> None:
        self.sync()
        kind = ZOO[op.kind] if op.kind else Kind("", (), None)
        if not op.id or not kind.exec:
            error: type[Exception] | None = ValueError
        elif op.id in self.regs:
            error = ProcExistsError
        else:
            error = None
        with self.expect(error, str(op)):
            self.ovr.add(
                op.id,
                kind.exec,
                kind.args,
                retry_times=op.retry_times,
                stop_timeout=None,
                pty=op.pty,
            )
        if error is None:
            self.regs[op.id] = Reg(op.id, op.kind, kind, op.retry_times, pty=op.pty)
        self.sync()

    def remove(self, id: str) -> None:
        self.sync()
        error = self.lookup_error(id) or (ProcRunningError if self.regs[id].busy else None)
        with self.expect(error, f"remove({id!r})"):
            self.ovr.remove(id)
        if error is None:
            del self.regs[id]
        self.sync()

    async def start(self, id: str) -> None:
        self.sync()
        error = self.lookup_error(id) or (ProcRunningError if self.regs[id].busy else None)
        if error is None:
            self.regs[id].begin_supervision()
        info = None
        with self.expect(error, f"start({id!r})"), trio.fail_after(T):
            info = await self.ovr.start(id)
        if info is not None:
            assert info.id == id, info
            assert info.state not in (State.INITIAL, State.STARTING), info
        self.sync()

    async def supervise(self, id: str) -> None:
        job = Background(id)
        self.backgrounds.append(job)
        await self.background.start(self._supervise, job)
        # The claim (and its errors) happens before supervise()'s first
        # checkpoint, in the stretch where the task took in the oracle.
        with self.expect(job.error, f"supervise({id!r})"):
            if job.exc is not None:
                raise job.exc
        self.sync()

    async def _supervise(self, job: Background, *, task_status: trio.TaskStatus[None]) -> None:
        # The parent's nursery.start() let other tasks run: decide here, in the
        # same synchronous stretch as the call.
        self.sync()
        reg = self.regs.get(job.id)
        job.error = self.lookup_error(job.id) or (ProcRunningError if reg and reg.busy else None)
        if reg is not None and job.error is None:
            reg.begin_supervision(job)
        task_status.started()
        try:
            job.returned = await self.ovr.supervise(job.id)
        except (UnknownProcError, ProcRunningError) as exc:
            job.exc = exc

    def _stop_model(self, reg: Reg, *, kill: bool) -> None:
        run = reg.live_run
        reg.stopped = True
        if run is not None:
            run.touched = run.stop_requested = True
        if reg.busy:
            reg.stop_requested = True
            if run is None:  # between runs: the pending restart is cancelled, and
                reg.end_supervision()  # the supervision ends at once, without an event

    async def stop(self, id: str, kill: bool) -> None:
        self.sync()
        error = self.lookup_error(id)
        if error is None:
            self._stop_model(self.regs[id], kill=kill)
        with self.expect(error, f"stop({id!r})"):
            self.ovr.stop(id, kill=kill)
        self.sync()

    async def stop_all(self, kill: bool) -> None:
        self.sync()
        for reg in self.regs.values():
            self._stop_model(reg, kill=kill)
        self.ovr.stop_all(kill=kill)
        self.sync()

    def signal(self, id: str, sig: int) -> None:
        self.sync()
        error = self.lookup_error(id)
        if error is None and (run := self.regs[id].live_run) is not None:
            run.touched = True
            if sig == signal.SIGSTOP:
                run.frozen = True
            elif sig == signal.SIGCONT:
                run.frozen = False
        with self.expect(error, f"signal({id!r}, {_sig(sig)})"):
            self.ovr.signal(id, sig)
        self.sync()

    async def settle(self, id: str) -> None:
        """Wait for the supervision of `id` to end; for a child that runs until
        stopped, only until it is ready (or frozen by SIGSTOP)."""
        self.sync()
        with trio.fail_after(T):
            while (reg := self.regs.get(id)) is not None and reg.busy:
                run = reg.live_run
                ready = run is not None and reg.kind.outcome is None and "ready" in run.out
                if run is not None and not reg.stop_requested and (run.frozen or ready):
                    break
                await self.next_event()
        self.sync()

    # -- subscribers -------------------------------------------------------------

    def watch(self, op: Watch) -> None:
        self.sync()
        send, recv = trio.open_memory_channel[Any](op.size)
        subscribe = self.ovr.watch_state if op.what == "state" else self.ovr.watch_logs
        kwargs = {"batched": op.batched} if op.what == "logs" else {}
        with self.expect(ValueError if op.size == 0 else None, str(op)):
            subscribe(send, **kwargs)
        if op.size == 0:
            send.close()
            recv.close()
        else:
            name = f"sub{len(self.subs)}"
            self.subs.append(Sub(name, op.what, op.size, op.batched, send, recv, len(self.stream)))
        self.sync()

    def simulate(self, sub: Sub) -> None:
        """What `sub` must hold now: what it was sent, until its buffer overflowed."""
        for item in self.stream[sub.pos :]:
            if sub.status != "on":
                break
            if isinstance(item, ProcessInfo) != (sub.what == "state"):
                continue
            units = [item] if sub.what == "state" or sub.batched else list(item)
            for unit in units:
                if len(sub.expected) >= sub.size:
                    sub.status = "cut"
                    break
                sub.expected.append(unit)
        sub.pos = len(self.stream)

    def _sub(self, index: int) -> Sub:
        self.sync()
        sub = self.subs[index]
        self.simulate(sub)
        return sub

    def unwatch(self, index: int) -> None:
        sub = self._sub(index)
        if sub.what == "state":
            self.ovr.unwatch_state(sub.send)
        else:
            self.ovr.unwatch_logs(sub.send)
        if sub.status == "on":
            sub.status = "off"

    def close_receive(self, index: int) -> None:
        sub = self._sub(index)
        sub.recv.close()
        if sub.status in ("on", "off", "cut"):
            sub.status = "closed"
        sub.expected.clear()

    def drain(self, index: int, *, block_closed: bool = False) -> None:
        sub = self._sub(index)
        if sub.status == "closed":
            return
        got: list[Any] = []
        ended = False
        while True:
            try:
                got.append(sub.recv.receive_nowait())
            except trio.WouldBlock:
                break
            except trio.EndOfChannel:
                ended = True
                break
        want, sub.expected = sub.expected, []
        assert got == want, (
            f"{sub.name} ({sub.what}, buffer {sub.size}) received {_show_all(got)}, "
            f"expected {_show_all(want)}"
        )
        should_end = sub.status == "cut" or (block_closed and sub.status == "on")
        assert ended == should_end, (
            f"{sub.name} ({sub.status}, buffer {sub.size}): channel "
            f"{'closed' if ended else 'open'}; expected {'closed' if should_end else 'open'}"
        )

    # -- the end -----------------------------------------------------------------

    def before_exit(self) -> None:
        """The block's exit calls stop_all() before anything else."""
        self.sync()
        for reg in self.regs.values():
            self._stop_model(reg, kill=False)

    def after_exit(self) -> None:
        self.sync()
        assert self.oracle_closed, "subscriber channels must be closed at block exit"
        for reg in self.regs.values():
            assert not reg.busy, f"{reg.id!r} still supervised after the block: {reg.last}"
        for index in range(len(self.subs)):
            self.drain(index, block_closed=True)

    def check_backgrounds(self) -> None:
        for job in self.backgrounds:
            if job.exc is not None:
                continue
            assert job.returned is not None, f"supervise({job.id!r}) did not return"
            assert job.returned == job.expected, (
                f"supervise({job.id!r}) returned {job.returned}, its last run ended {job.expected}"
            )


def _show(item: Any) -> str:
    if isinstance(item, ProcessInfo):
        extra = f" exit={item.exit_code}" if item.state in FINAL else ""
        extra += f" restart_in={item.restart_in:.3f}" if item.restart_in is not None else ""
        extra += f" error={item.error!r}" if item.error else ""
        return f"{item.id} {item.state.value} pid={item.pid}{extra}"
    if isinstance(item, LogMsg):
        return f"{item.id} {'out' if item.type == STDOUT else 'err'} {item.text[:30]!r}"
    lines = [text[:20] for text in item.lines[:3]]
    return f"{item.id} {'out' if item.type == STDOUT else 'err'} x{len(item)} {lines}"


def _show_all(items: list[Any]) -> str:
    shown = [_show(item) for item in items[:8]]
    return f"{len(items)} items {shown}{' ...' if len(items) > 8 else ''}"


def _fd_count() -> int:
    # Collect first: a bare Overseer dropped by an earlier test closes its
    # watchdog pipe only when it is garbage collected.
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


async def run_program(program: Program) -> None:
    ex: Executor | None = None
    try:
        with trio.fail_after(120):
            async with trio.open_nursery() as background:
                ovr_cm = open_overseer(
                    handle_signals=False, stop_timeout=STOP_TIMEOUT, backoff_base=0.01, seed=0
                )
                async with ovr_cm as ovr:
                    ex = Executor(ovr, background)
                    for op, line in zip(program.ops, program.lines(), strict=True):
                        ex.trace.append(line)
                        await op.apply(ex)
                    ex.before_exit()
                    ex.trace.append("(block exit)")
                ex.after_exit()
            ex.check_backgrounds()
    except BaseException as exc:
        if ex is not None:  # what happened, also in a failure Hypothesis cannot reproduce
            exc.add_note("trace:\n" + "\n".join(ex.trace))
        raise


def run_and_check(program: Program) -> None:
    """Run one program; then nothing of it may be left: processes, zombies, fds."""
    note("program:\n" + "\n".join(program.lines()))
    tag = os.environ[TAG_VAR]
    fds = _fd_count()
    trio.run(run_program, program)
    survivors = tagged_pids(tag)
    assert not survivors, "alive after the example: " + "; ".join(map(describe, survivors))
    assert not my_zombies(), "zombie children: " + "; ".join(map(describe, my_zombies()))
    assert _fd_count() == fds, f"fds: {fds} before, {_fd_count()} after"


TestRandomPrograms = Programs.TestCase
TestRandomPrograms.settings = settings(PROFILE, stateful_step_count=16)


# --- bugs found by the random programs and the soak, as plain tests ---


async def test_restarts_do_not_pile_up_escaped_descendants() -> None:
    mark = f"restarts-{os.getpid()}-{id(object())}"
    async with open_overseer(handle_signals=False, backoff_base=0.01) as ovr:
        ovr.add(
            "p", PY, SPAWN_ESCAPED_THEN_EXIT_1, retry_times=3, env=tagged_env(**{MARK_VAR: mark})
        )
        with trio.fail_after(T):
            assert await ovr.supervise("p") == 1  # 4 runs, each leaving a daemon
        # At most the last run's daemon may be left (nothing restarts after it).
        assert len(marked_pids(mark)) <= 1, [describe(pid) for pid in marked_pids(mark)]


async def test_sweep_is_not_cut_short_when_the_pipes_close() -> None:
    async with open_overseer(handle_signals=False, stop_timeout=0.5) as ovr:
        ovr.add("p", PY, SPAWN_ESCAPED_LETTING_GO)
        with trio.fail_after(T):
            info = await ovr.start("p")
            escaped = int((await ovr.wait_for_log("p", "^escaped ")).text.split()[1])
            await ovr.wait_for_log("p", "^armed$")
            await ovr.wait_for_log("p", "^ready$")
            ovr.signal("p", signal.SIGKILL)  # the leader dies, the escaped one holds the pipes
            await wait_pid_gone(info.pid)
            await trio.testing.wait_all_tasks_blocked()  # the Overseer has seen the exit
            ovr.stop("p")  # sweeps: SIGTERM (it lets go of the pipes), SIGKILL 0.5 s later
            await ovr.wait_for_state("p", *FINAL)
        assert not pid_alive(escaped), "the stopped run's escaped descendant outlived it"


async def test_remove_sweeps_what_the_last_run_left() -> None:
    mark = f"remove-{os.getpid()}-{id(object())}"
    async with open_overseer(handle_signals=False, stop_timeout=0.5) as ovr:
        ovr.add("p", PY, SPAWN_ESCAPED_THEN_EXIT_1, env=tagged_env(**{MARK_VAR: mark}))
        with trio.fail_after(T):
            assert await ovr.supervise("p") == 1  # no restart: its daemon lives on
            [daemon] = marked_pids(mark)  # Popen returned after its exec
            ovr.remove("p")
            await wait_pid_gone(daemon)


async def test_removed_procs_leave_no_logger_behind() -> None:
    loggers = logging.Logger.manager.loggerDict
    async with open_overseer(handle_signals=False) as ovr:
        before = set(loggers)
        for i in range(100):
            ovr.add(f"churn-{os.getpid()}-{i}", PY, EXIT_1)
            ovr.remove(f"churn-{os.getpid()}-{i}")
        assert set(loggers) - before == set()


async def test_stop_after_the_leader_died_sweeps_escaped_descendants(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The drain lasts as long as the test needs (its 1 s grace can pass
    # before the test looks, on a loaded machine): the stop must come in it.
    monkeypatch.setattr("trio_overseer._cmd._DRAIN_GRACE", 3600.0)
    async with open_overseer(handle_signals=False, stop_timeout=0.5) as ovr:
        ovr.add("p", PY, SPAWN_TREE)
        with trio.fail_after(T):
            info = await ovr.start("p")
            member = int((await ovr.wait_for_log("p", "^group ")).text.split()[1])
            escaped = int((await ovr.wait_for_log("p", "^escaped ")).text.split()[1])
            await ovr.wait_for_log("p", "^ready$")
            # The member first: were it still dying when the Overseer sees the
            # leader's exit (a busy machine), its leftover would be stopped, and
            # a run that had to be stopped is swept before the test's stop.
            os.kill(member, signal.SIGKILL)
            await wait_pid_gone(member)
            ovr.signal("p", signal.SIGKILL)  # the group dies, the escaped one holds the pipes
            await wait_pid_gone(info.pid)
            await trio.testing.wait_all_tasks_blocked()  # the Overseer has seen the exit
            assert ovr.status("p").state is State.RUNNING  # draining the pipes
            ovr.stop("p")
            final = await ovr.wait_for_state("p", *FINAL)
        assert final.state is State.INTERRUPTED
        assert not pid_alive(escaped), "the stopped run's escaped descendant outlived it"


async def test_remove_after_stop_during_backoff() -> None:
    async with open_overseer(handle_signals=False, backoff_base=5.0) as ovr:
        ovr.add("p", PY, EXIT_1, retry_times=3)
        with trio.fail_after(T):
            await ovr.start("p")
            info = await ovr.wait_for_state("p", State.FINISHED)
        assert info.restart_in is not None  # a restart is pending, in 2.5 s or more
        ovr.stop("p")  # cancels it
        info = await ovr.wait_for_state("p", *FINAL)
        assert info.state is State.FINISHED
        assert info.restart_in is None
        assert not ovr.is_running()
        ovr.remove("p")  # "stop it and wait for it to end before remove()": done both


async def test_second_supervision_gets_the_whole_retry_budget() -> None:
    async with open_overseer(handle_signals=False, backoff_base=0.01) as ovr:
        send, recv = trio.open_memory_channel[ProcessInfo](math.inf)
        ovr.watch_state(send)
        ovr.add("p", PY, EXIT_1, retry_times=2)
        with trio.fail_after(T):
            assert await ovr.supervise("p") == 1
            assert await ovr.supervise("p") == 1
        starts = [info.restarts for info in _drain(recv) if info.state is State.STARTING]
        assert starts == [0, 1, 2, 0, 1, 2]


def _drain(recv: trio.MemoryReceiveChannel[Any]) -> list[Any]:
    items = []
    with contextlib.suppress(trio.WouldBlock, trio.EndOfChannel):
        while True:
            items.append(recv.receive_nowait())
    return items
