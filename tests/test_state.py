"""The pure state machine: the table of API.md, checked by Hypothesis."""

from __future__ import annotations

import pytest
from children import ALLOWED
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from tables import walk

from trio_overseer import State
from trio_overseer._state import (
    FINAL_STATES,
    TRANSITIONS,
    IllegalTransitionError,
    StateMachine,
    Trigger,
    exit_trigger,
)

# The table of API.md (written out again in children.py), as value pairs.
API_TABLE = {(a.value, b.value) for a, targets in ALLOWED.items() for b in targets}


def test_table_is_api_table() -> None:
    pairs = {(a.value, b.value) for a, targets in TRANSITIONS.items() for b in targets}
    assert pairs == API_TABLE
    assert len(API_TABLE) == 9
    assert {s.value for s in FINAL_STATES} == {"finished", "interrupted", "fatal"}
    assert [s.value for s in State] == [
        "initial", "starting", "running", "stopping", "interrupted", "finished", "fatal",
    ]  # fmt: skip


def test_exit_trigger() -> None:
    assert exit_trigger(0) is Trigger.EXITED
    assert exit_trigger(3) is Trigger.EXITED
    assert exit_trigger(-15) is Trigger.SIGNALLED


def test_illegal_event_changes_nothing() -> None:
    machine = StateMachine()
    with pytest.raises(IllegalTransitionError, match="'exited' is not allowed in state 'initial'"):
        machine.fire(Trigger.EXITED)
    assert machine.state is State.INITIAL


@given(st.lists(st.sampled_from(Trigger), max_size=12))
def test_any_trigger_sequence_follows_the_table(triggers: list[Trigger]) -> None:
    machine = StateMachine()
    path = walk(lambda: machine.state, triggers, machine.can_fire, machine.fire, API_TABLE)
    assert sum(s in FINAL_STATES for s in path) <= 1


class RunMachine(RuleBasedStateMachine):
    """Random event sequences on one run: every path is in the table."""

    def __init__(self) -> None:
        super().__init__()
        self.machine = StateMachine()
        self.path = [State.INITIAL]

    @rule(event=st.sampled_from(Trigger))
    def fire(self, event: Trigger) -> None:
        before = self.machine.state
        if self.machine.can_fire(event):
            self.path.append(self.machine.fire(event))
        else:
            with pytest.raises(IllegalTransitionError):
                self.machine.fire(event)
            assert self.machine.state is before

    @precondition(lambda self: self.machine.state in FINAL_STATES)
    @rule(event=st.sampled_from(Trigger))
    def final_is_absorbing(self, event: Trigger) -> None:
        final = self.machine.state
        with pytest.raises(IllegalTransitionError):
            self.machine.fire(event)
        assert self.machine.state is final

    @invariant()
    def path_is_in_table(self) -> None:
        for a, b in zip(self.path, self.path[1:], strict=False):
            assert (a.value, b.value) in API_TABLE
        assert self.path[-1] is self.machine.state

    @invariant()
    def at_most_one_final_state(self) -> None:
        finals = [s for s in self.path if s in FINAL_STATES]
        assert len(finals) <= 1
        if finals:
            assert self.path[-1] is finals[0]

    def teardown(self) -> None:
        # Every run that started can be driven to exactly one final state.
        for event in (Trigger.START, Trigger.SPAWNED, Trigger.STOP, Trigger.SIGNALLED):
            if self.machine.can_fire(event):
                self.path.append(self.machine.fire(event))
        if self.path[-1] is not State.INITIAL:
            assert self.machine.state in FINAL_STATES
            assert sum(s in FINAL_STATES for s in self.path) == 1


TestRunMachine = RunMachine.TestCase
