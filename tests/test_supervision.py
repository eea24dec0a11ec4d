"""`_supervision` and the phase table: the pure decisions with Hypothesis, the
supervision loop against fake runs (no process: the clock is Trio's autojump)."""

from __future__ import annotations

import itertools
import math
import random
import sys
from fractions import Fraction

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from trio_overseer._state import PHASE_MOVES, IllegalTransitionError, Phase, PhaseMachine
from trio_overseer._supervision import (
    Backoff,
    Decision,
    Supervision,
    restart_decision,
    restart_delay,
)

# The phase table of the design, written out again independently of the code.
PHASE_TABLE = {
    ("claimed", "waiting"),
    ("claimed", "running"),
    ("claimed", "done"),
    ("waiting", "running"),
    ("waiting", "done"),
    ("running", "waiting"),
    ("running", "done"),
}

seconds = st.floats(0, 1e6, allow_nan=False)
jitters = st.floats(0, 1, exclude_max=True)


def step(k: int, base: float, cap: float) -> float:
    """The exponential step of restart k (a finite cap), in exact arithmetic."""
    return float(min(Fraction(cap), Fraction(base) * 2 ** (k - 1)))


# --- the restart delay ----------------------------------------------------------------


@given(st.integers(1, 5000), seconds, seconds, st.floats(0, 1e9), jitters)
def test_restart_delay_bounds(k: int, delay: float, base: float, cap: float, u: float) -> None:
    got = restart_delay(k, delay_start=delay, backoff_base=base, backoff_max=cap, jitter=u)
    d = step(k, base, cap)
    assert math.isfinite(got)
    assert delay + d / 2 <= got * (1 + 1e-12)
    assert got <= (delay + d) * (1 + 1e-12)
    assert got - delay <= cap * (1 + 1e-9) + 1e-9  # never more than the cap


@given(st.integers(1, 5000), seconds, seconds, seconds)
def test_restart_delay_jitter_range(k: int, delay: float, base: float, cap: float) -> None:
    low = restart_delay(k, delay_start=delay, backoff_base=base, backoff_max=cap, jitter=0.0)
    high = restart_delay(k, delay_start=delay, backoff_base=base, backoff_max=cap, jitter=0.999999)
    d = step(k, base, cap)
    assert low == pytest.approx(delay + d / 2, rel=1e-9)
    assert high == pytest.approx(delay + d, rel=1e-5)


@given(seconds, seconds, jitters)
def test_restart_delay_step_doubles_up_to_the_cap(base: float, cap: float, u: float) -> None:
    delays = [
        restart_delay(k, delay_start=0.0, backoff_base=base, backoff_max=cap, jitter=u)
        for k in [*range(1, 64), *range(64, 2200, 50)]  # 2 ** 2100 > max / tiniest base
    ]
    assert all(a <= b for a, b in itertools.pairwise(delays))  # monotone: never shorter
    assert delays[-1] == pytest.approx(restart_delay(
        10**6, delay_start=0.0, backoff_base=base, backoff_max=cap, jitter=u
    ))  # fmt: skip


def test_restart_delay_never_overflows() -> None:
    huge = sys.float_info.max
    for k in (1024, 1025, 10**9):
        assert restart_delay(k, delay_start=0, backoff_base=1, backoff_max=30, jitter=0) == 15
        assert restart_delay(k, delay_start=0, backoff_base=0, backoff_max=30, jitter=0) == 0
        assert math.isfinite(
            restart_delay(k, delay_start=0, backoff_base=huge, backoff_max=math.inf, jitter=0.5)
        )


@given(st.integers(0, 2**32), st.integers(1, 60), seconds, seconds)
def test_restart_delay_draws_as_random_uniform(seed: int, k: int, base: float, cap: float) -> None:
    # The Overseer's `seed` gives the same restart delays as before the
    # decision became a pure function (it called random.uniform(d/2, d)).
    d = step(k, base, cap)
    expected = random.Random(seed).uniform(d / 2, d)
    jitter = random.Random(seed).random()
    got = restart_delay(k, delay_start=0.0, backoff_base=base, backoff_max=cap, jitter=jitter)
    assert got == expected


# --- the restart decision ---------------------------------------------------------------


@given(st.integers(-64, 255), st.booleans(), st.integers(0, 10), st.integers(0, 10))
def test_restart_decision(exit_code: int, stopped: bool, restarts: int, retries: int) -> None:
    got = restart_decision(
        exit_code=exit_code, stopped=stopped, restarts=restarts, retry_times=retries
    )
    if stopped:
        assert got is Decision.STOPPED
    elif exit_code == 0:
        assert got is Decision.SUCCESS
    elif restarts >= retries:
        assert got is Decision.GAVE_UP
    else:
        assert got is Decision.RESTART


# --- the phase table ----------------------------------------------------------------------


def test_phase_table() -> None:
    pairs = {(a.value, b.value) for a, targets in PHASE_MOVES.items() for b in targets}
    assert pairs == PHASE_TABLE
    assert set(PHASE_MOVES) == set(Phase)


@given(st.lists(st.sampled_from(Phase), max_size=12))
def test_any_move_sequence_follows_the_table(moves: list[Phase]) -> None:
    machine = PhaseMachine()
    path = [machine.phase]
    for to in moves:
        before = machine.phase
        legal = machine.can_move(to)
        try:
            machine.move(to)
        except IllegalTransitionError:
            assert not legal
            assert machine.phase is before
        else:
            assert legal
            path.append(machine.phase)
    for a, b in itertools.pairwise(path):
        assert (a.value, b.value) in PHASE_TABLE
    assert Phase.DONE not in path[:-1]  # DONE is absorbing


# --- the loop, against fake runs -----------------------------------------------------------


@attrs.define
class FakeStatus:
    exit: int


@attrs.define(eq=False)
class FakeCmd:
    """A run that ends with `exit` after `duration` seconds, told to the supervision."""

    sup: Supervision
    exit: int
    duration: float = 1.0
    delay_start: float = 0.0
    retry_times: int = 0
    ran: bool = False

    def is_initial_state(self) -> bool:
        return not self.ran

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> FakeStatus:
        self.ran = True
        task_status.started()
        await trio.sleep(self.duration)
        self.sup.run_ended(
            exit_code=self.exit, retry_times=self.retry_times, delay_start=self.delay_start
        )
        return FakeStatus(self.exit)


@attrs.define(eq=False)
class FakeRuns:
    """The proc: each run exits with the next code of `exits`."""

    sup: Supervision
    exits: list[int]
    retry_times: int
    delay_start: float = 0.0
    runs: list[FakeCmd] = attrs.field(factory=list)
    swept: list[FakeCmd] = attrs.field(factory=list)
    phases: list[Phase] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        self.runs.append(self.fresh())

    def fresh(self) -> FakeCmd:
        return FakeCmd(
            self.sup,
            self.exits[len(self.runs)],
            delay_start=self.delay_start,
            retry_times=self.retry_times,
        )

    @property
    def cmd(self) -> FakeCmd:
        return self.runs[-1]

    def next_run(self) -> FakeCmd:
        if self.cmd.ran:
            self.runs.append(self.fresh())
        return self.cmd

    async def sweep(self, cmd: FakeCmd) -> None:
        self.swept.append(cmd)


def supervision(ended: list[Supervision], base: float = 1.0) -> Supervision:
    return Supervision(Backoff(base, 1000.0), lambda: 0.5, ended.append)


async def test_supervision_restarts_failures_until_success(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ended: list[Supervision] = []
    sup = supervision(ended)
    runs = FakeRuns(sup, [1, 1, 0], retry_times=5, delay_start=2.0)
    start = trio.current_time()
    assert await sup.run(runs) == 0  # type: ignore[arg-type]
    assert len(runs.runs) == 3 and sup.restarts == 2
    assert runs.swept == runs.runs[:2]  # each failed run is swept before its restart
    # delay_start, run, delay_start + 0.75 (d = 1), run, delay_start + 1.5 (d = 2), run
    assert trio.current_time() - start == pytest.approx(2 + 1 + 2.75 + 1 + 3.5 + 1)
    assert sup.phase is Phase.DONE and sup.done.is_set() and ended == [sup]
    assert sup.restart_in is None


async def test_supervision_gives_up(autojump_clock: trio.testing.MockClock) -> None:
    ended: list[Supervision] = []
    sup = supervision(ended)
    runs = FakeRuns(sup, [3, 3, 3, 3], retry_times=2)
    assert await sup.run(runs) == 3  # type: ignore[arg-type]
    assert (len(runs.runs), sup.restarts, ended) == (3, 2, [sup])


async def test_stop_while_waiting_ends_at_once(autojump_clock: trio.testing.MockClock) -> None:
    ended: list[Supervision] = []
    sup = supervision(ended, base=100.0)
    runs = FakeRuns(sup, [1, 1], retry_times=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup.run, runs)
        await trio.sleep(1.5)  # the first run ended, the restart waits 50..100 s
        assert sup.phase is Phase.WAITING and sup.restart_in == 75.0
        sup.stop()
        assert sup.phase is Phase.DONE and sup.done.is_set() and ended == [sup]
        assert sup.restart_in is None
    assert len(runs.runs) == 1 and trio.current_time() < 2


async def test_stop_before_the_task_begins(autojump_clock: trio.testing.MockClock) -> None:
    ended: list[Supervision] = []
    sup = supervision(ended)
    runs = FakeRuns(sup, [0], retry_times=0)
    assert sup.phase is Phase.CLAIMED
    sup.stop()
    assert sup.phase is Phase.CLAIMED  # its task ends it
    assert await sup.run(runs) == -1  # type: ignore[arg-type]
    assert not runs.cmd.ran and ended == [sup]


async def test_end_is_once(autojump_clock: trio.testing.MockClock) -> None:
    ended: list[Supervision] = []
    sup = supervision(ended)
    sup.end()
    with pytest.raises(IllegalTransitionError):
        sup.end()
    assert ended == [sup]


def test_phases_of_a_supervision_follow_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Phase] = []
    move = PhaseMachine.move

    def spy(self: PhaseMachine, to: Phase) -> Phase:
        seen.append(to)
        return move(self, to)

    async def scenario() -> None:
        sup = supervision([])
        await sup.run(FakeRuns(sup, [1, 0], retry_times=1, delay_start=1.0))  # type: ignore[arg-type]

    monkeypatch.setattr(PhaseMachine, "move", spy)
    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))
    assert seen == [Phase.WAITING, Phase.RUNNING, Phase.WAITING, Phase.RUNNING, Phase.DONE]
