"""The two lifecycles of a proc as tables: pure data, no I/O, no clock, no trio.

Everything that affects a state and its transitions lives here.

A run (one `Cmd`): every run of a process moves through the states of
`State` along the transitions of `TRANSITIONS` (the table of API.md), driven
by `Trigger`s.  `Cmd` only reports what happened (`START`, `SPAWNED`,
`EXITED` with a return code...) and publishes the result of
`StateMachine.fire` in the same synchronous stretch.

A supervision (one `supervise()` or `start()` of a proc, possibly many
runs): its `Phase` moves along `PHASE_MOVES`, through `PhaseMachine.move`
only (see `_supervision`).

A move that a table does not allow raises `IllegalTransitionError` and
leaves the state unchanged: it is a bug in the caller, never a user error.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs


class State(enum.Enum):
    """Where a run of a process stands."""

    INITIAL = "initial"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    INTERRUPTED = "interrupted"
    FINISHED = "finished"
    FATAL = "fatal"

    def __repr__(self) -> str:
        return f"<State.{self.name}>"


class Trigger(enum.Enum):
    """What happened to a run; `StateMachine.fire` maps it to a state."""

    START = "start"  # the run begins: about to spawn
    SPAWNED = "spawned"  # the OS created the process
    SPAWN_FAILED = "spawn_failed"  # the OS refused (no such file, bad cwd...)
    STOP = "stop"  # a stop or kill was asked for, or the run was cancelled
    EXITED = "exited"  # the process ended with an exit code
    SIGNALLED = "signalled"  # the process was ended by a signal


#: Every legal move: state -> target states (the table of API.md).
TRANSITIONS: Mapping[State, frozenset[State]] = {
    State.INITIAL: frozenset({State.STARTING}),
    State.STARTING: frozenset({State.RUNNING, State.FATAL, State.STOPPING}),
    State.RUNNING: frozenset({State.STOPPING, State.FINISHED, State.INTERRUPTED}),
    State.STOPPING: frozenset({State.FINISHED, State.INTERRUPTED}),
    State.INTERRUPTED: frozenset(),
    State.FINISHED: frozenset(),
    State.FATAL: frozenset(),
}

#: Which state an trigger leads to.
_TARGET: Mapping[Trigger, State] = {
    Trigger.START: State.STARTING,
    Trigger.SPAWNED: State.RUNNING,
    Trigger.SPAWN_FAILED: State.FATAL,
    Trigger.STOP: State.STOPPING,
    Trigger.EXITED: State.FINISHED,
    Trigger.SIGNALLED: State.INTERRUPTED,
}

FINAL_STATES: frozenset[State] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
RUNNING_STATES: frozenset[State] = frozenset({State.STARTING, State.RUNNING, State.STOPPING})


def exit_trigger(returncode: int) -> Trigger:
    """The trigger for a process that ended with `returncode` (negative: signalled)."""
    return Trigger.SIGNALLED if returncode < 0 else Trigger.EXITED


class IllegalTransitionError(RuntimeError):
    """A trigger the transition table does not allow in the current state (a bug)."""


@attrs.define
class StateMachine:
    """The state of one run, changed only through `fire`."""

    state: State = State.INITIAL

    def can_fire(self, trigger: Trigger) -> bool:
        """Whether `trigger` is legal in the current state."""
        return _TARGET[trigger] in TRANSITIONS[self.state]

    def fire(self, trigger: Trigger) -> State:
        """Apply `trigger` and return the new state, or raise and change nothing."""
        target = _TARGET[trigger]
        if target not in TRANSITIONS[self.state]:
            raise IllegalTransitionError(
                f"trigger {trigger.value!r} is not allowed in state {self.state.value!r} "
                f"({self.state.value} -> {target.value} is not in the table)"
            )
        self.state = target
        return target


# -- one supervision -----------------------------------------------------------


class Phase(enum.Enum):
    """Where one supervision of a proc stands (`_supervision.Supervision`)."""

    CLAIMED = "claimed"  # supervise()/start() took the proc; its task has not begun
    WAITING = "waiting"  # delay_start, or the backoff before a restart
    BLOCKED = "blocked"  # a fresh run waits for the procs it requires to be ready
    RUNNING = "running"  # a run (a Cmd) is in progress
    DONE = "done"  # no run follows: the supervision has ended

    def __repr__(self) -> str:
        return f"<Phase.{self.name}>"


#: Every legal move of a supervision: phase -> next phases.
PHASE_MOVES: Mapping[Phase, frozenset[Phase]] = {
    Phase.CLAIMED: frozenset({Phase.WAITING, Phase.BLOCKED, Phase.RUNNING, Phase.DONE}),
    Phase.WAITING: frozenset({Phase.BLOCKED, Phase.RUNNING, Phase.DONE}),
    Phase.BLOCKED: frozenset({Phase.RUNNING, Phase.DONE}),
    Phase.RUNNING: frozenset({Phase.WAITING, Phase.DONE}),
    Phase.DONE: frozenset(),
}


@attrs.define
class PhaseMachine:
    """The phase of one supervision, changed only through `move`."""

    phase: Phase = Phase.CLAIMED

    def can_move(self, to: Phase) -> bool:
        """Whether the table allows moving to `to` now."""
        return to in PHASE_MOVES[self.phase]

    def move(self, to: Phase) -> Phase:
        """Move to `to`, or raise and change nothing."""
        if to not in PHASE_MOVES[self.phase]:
            raise IllegalTransitionError(
                f"a supervision cannot move from {self.phase.value!r} to {to.value!r}"
            )
        self.phase = to
        return to
