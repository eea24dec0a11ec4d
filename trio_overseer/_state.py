"""The proc state machine: pure data, no I/O, no clock, no trio.

Theory of operation: every run of a process moves through the states of
`State` along the transitions of `TRANSITIONS` (the table of API.md), driven
by `Trigger`s.  Everything that decides a state lives here; `Cmd` only reports
what happened (`START`, `SPAWNED`, `EXITED` with a return code...) and
publishes the result of `StateMachine.fire` in the same synchronous stretch.
A trigger that the table does not allow raises `IllegalTransitionError` and
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
