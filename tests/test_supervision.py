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
from hypothesis import example, given
from hypothesis import strategies as st
from tables import walk

from trio_overseer._state import PHASE_MOVES, IllegalTransitionError, Phase, PhaseMachine
from trio_overseer._supervision import (
    Backoff,
    Decision,
    RestartPolicy,
    RestartRules,
    Supervision,
    make_rules,
    restart_decision,
    restart_delay,
    restarts_counted,
)

# The phase table of the design, written out again independently of the code.
PHASE_TABLE = {
    ("claimed", "waiting"),
    ("claimed", "running"),
    ("claimed", "done"),
    ("claimed", "blocked"),
    ("waiting", "blocked"),
    ("blocked", "running"),
    ("blocked", "done"),
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
@example(k=1024, delay=0.0, base=5e-324, cap=1.0)  # a tiny base: 2 ** 1023 is no overflow yet
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


def model_decision(
    exit_code: int,
    stopped: bool,
    restarts: int,
    budget: float,
    policy: str,
    codes: frozenset[int],
) -> Decision:
    """The restart rules of the docs, written out again as a table of cases."""
    ok = exit_code in codes
    if stopped:
        return Decision.STOPPED
    wants = {"always": True, "never": False, "on-failure": not ok}[policy]
    if not wants:
        return Decision.SUCCESS if ok else Decision.FAILED
    if budget == 0:  # never allowed a restart: nothing was given up
        return Decision.SUCCESS if ok else Decision.FAILED
    return Decision.RESTART if restarts < budget else Decision.GAVE_UP


policies = st.sampled_from(RestartPolicy)
budgets = st.one_of(st.integers(0, 10), st.just(math.inf))
code_sets = st.frozensets(st.integers(0, 255), max_size=4)


@given(st.integers(-64, 255), st.booleans(), st.integers(0, 10), budgets, policies, code_sets)
def test_restart_decision(
    exit_code: int,
    stopped: bool,
    restarts: int,
    retries: float,
    policy: RestartPolicy,
    codes: frozenset[int],
) -> None:
    got = restart_decision(
        exit_code=exit_code,
        stopped=stopped,
        restarts=restarts,
        retry_times=retries,
        policy=policy,
        success_codes=codes,
    )
    assert got is model_decision(exit_code, stopped, restarts, retries, policy.value, codes)


def test_restart_decision_defaults_are_on_failure_with_success_0() -> None:
    def decide(code: int) -> Decision:
        return restart_decision(exit_code=code, stopped=False, restarts=0, retry_times=1)

    assert decide(0) is Decision.SUCCESS
    assert [decide(c) for c in (1, -15, -1)] == [Decision.RESTART] * 3


@given(st.integers(0, 10**6), seconds, seconds)
def test_restarts_counted(restarts: int, uptime: float, reset_after: float) -> None:
    got = restarts_counted(restarts, uptime=uptime, reset_after=reset_after)
    assert got == (0 if uptime >= reset_after else restarts)
    assert restarts_counted(restarts, uptime=uptime, reset_after=math.inf) == restarts


@given(policies, code_sets, budgets, st.lists(st.tuples(st.integers(-9, 9), seconds), max_size=30))
def test_a_supervision_of_many_runs_follows_the_model(
    policy: RestartPolicy,
    codes: frozenset[int],
    budget: float,
    runs: list[tuple[int, float]],
) -> None:
    """Run after run (exit code, uptime): the count, the reset and the decision
    of the pure functions agree with a model that counts by hand, and a
    supervision never runs more than budget + 1 runs between stable ones."""
    reset_after = 5.0
    counted = 0  # the code's count
    model = 0  # the model's
    since_stable = 0
    for exit_code, uptime in runs:
        counted = restarts_counted(counted, uptime=uptime, reset_after=reset_after)
        if uptime >= reset_after:
            model = since_stable = 0
        got = restart_decision(
            exit_code=exit_code,
            stopped=False,
            restarts=counted,
            retry_times=budget,
            policy=policy,
            success_codes=codes,
        )
        assert got is model_decision(exit_code, False, model, budget, policy.value, codes)
        if got is not Decision.RESTART:
            break
        counted += 1
        model += 1
        since_stable += 1
        assert since_stable <= budget


def test_make_rules_refuses_bad_input() -> None:
    assert make_rules(restart="always", success_codes=[0, 2], reset_after=0) == RestartRules(
        RestartPolicy.ALWAYS, frozenset({0, 2}), 0.0
    )
    with pytest.raises(ValueError, match="restart must be one of 'on-failure', 'always', 'never'"):
        make_rules(restart="sometimes", success_codes=(0,), reset_after=1)
    with pytest.raises(ValueError, match="reset_after must be a number of seconds >= 0"):
        make_rules(restart="never", success_codes=(0,), reset_after=-1)
    with pytest.raises(ValueError, match="reset_after"):
        make_rules(restart="never", success_codes=(0,), reset_after=math.nan)
    with pytest.raises(TypeError, match="reset_after"):
        make_rules(restart="never", success_codes=(0,), reset_after="60")
    with pytest.raises(ValueError, match="success_codes must hold exit codes from 0 to 255"):
        make_rules(restart="never", success_codes=(0, 256), reset_after=1)
    with pytest.raises(ValueError, match="success_codes"):
        make_rules(restart="never", success_codes=(-15,), reset_after=1)
    with pytest.raises(TypeError, match="success_codes must be a collection"):
        make_rules(restart="never", success_codes=0, reset_after=1)


# --- the phase table ----------------------------------------------------------------------


def test_phase_table() -> None:
    pairs = {(a.value, b.value) for a, targets in PHASE_MOVES.items() for b in targets}
    assert pairs == PHASE_TABLE
    assert set(PHASE_MOVES) == set(Phase)


@given(st.lists(st.sampled_from(Phase), max_size=12))
def test_any_move_sequence_follows_the_table(moves: list[Phase]) -> None:
    machine = PhaseMachine()
    path = walk(lambda: machine.phase, moves, machine.can_move, machine.move, PHASE_TABLE)
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
    retry_times: float = 0
    ran: bool = False
    refused: str | None = None

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
    retry_times: float
    delay_start: float = 0.0
    durations: list[float] | None = None  # of each run (default 1 s)
    requires: tuple[str, ...] = ()
    # What until_required answers, in turn (after a 1 s wait each): None, or why not.
    verdicts: list[str | None] = attrs.field(factory=list)
    runs: list[FakeCmd] = attrs.field(factory=list)
    swept: list[FakeCmd] = attrs.field(factory=list)
    phases: list[Phase] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        self.runs.append(self.fresh())

    def fresh(self) -> FakeCmd:
        n = len(self.runs)
        return FakeCmd(
            self.sup,
            self.exits[n],
            duration=1.0 if self.durations is None else self.durations[n],
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

    async def until_required(self) -> str | None:
        await trio.sleep(1)
        return self.verdicts.pop(0)

    def refuse(self, cmd: FakeCmd, why: str) -> None:
        cmd.ran, cmd.refused = True, why
        self.sup.run_ended(exit_code=-1, retry_times=cmd.retry_times, delay_start=0)


def supervision(
    ended: list[Supervision], base: float = 1.0, rules: RestartRules | None = None
) -> Supervision:
    return Supervision(Backoff(base, 1000.0), lambda: 0.5, ended.append, rules or RestartRules())


async def test_supervision_restarts_failures_until_success(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ended: list[Supervision] = []
    sup = supervision(ended)
    runs = FakeRuns(sup, [1, 1, 0], retry_times=5, delay_start=2.0)
    start = trio.current_time()
    assert await sup.run(runs) == 0  # type: ignore[arg-type]
    assert len(runs.runs) == 3
    assert sup.restarts == 2
    assert runs.swept == runs.runs[:2]  # each failed run is swept before its restart
    # delay_start, run, delay_start + 0.75 (d = 1), run, delay_start + 1.5 (d = 2), run
    assert trio.current_time() - start == pytest.approx(2 + 1 + 2.75 + 1 + 3.5 + 1)
    assert sup.phase is Phase.DONE
    assert sup.done.is_set()
    assert ended == [sup]
    assert sup.restart_in is None


async def test_supervision_gives_up(autojump_clock: trio.testing.MockClock) -> None:
    ended: list[Supervision] = []
    sup = supervision(ended)
    runs = FakeRuns(sup, [3, 3, 3, 3], retry_times=2)
    assert await sup.run(runs) == 3  # type: ignore[arg-type]
    assert (len(runs.runs), sup.restarts, ended) == (3, 2, [sup])


async def test_supervision_gives_up_and_says_so(autojump_clock: trio.testing.MockClock) -> None:
    sup = supervision([])
    runs = FakeRuns(sup, [3, 3, 3], retry_times=2)
    assert await sup.run(runs) == 3  # type: ignore[arg-type]
    assert sup.gave_up
    sup = supervision([])
    runs = FakeRuns(sup, [3], retry_times=0)  # no budget: nothing given up
    assert await sup.run(runs) == 3  # type: ignore[arg-type]
    assert not sup.gave_up


@pytest.mark.parametrize(
    ("policy", "exits", "budget", "ran"),
    [
        ("always", [0, 0, 0, 0], 2, 3),  # retry_times bounds every policy
        ("always", [0, 1, 0, 0], 2, 3),
        ("never", [1, 1], 5, 1),
        ("never", [0, 0], 5, 1),
        ("on-failure", [1, 0, 1], 5, 2),
        ("on-failure", [1] * 20, math.inf, 20),  # no limit: 19 failures, then a success
    ],
)
async def test_policies(
    autojump_clock: trio.testing.MockClock, policy: str, exits: list[int], budget: float, ran: int
) -> None:
    rules = make_rules(restart=policy, success_codes=(0,), reset_after=math.inf)
    sup = supervision([], base=0.001, rules=rules)
    if math.isinf(budget):
        exits = [*exits[:-1], 0]  # the last one succeeds
    runs = FakeRuns(sup, exits, retry_times=budget)
    await sup.run(runs)  # type: ignore[arg-type]
    assert len(runs.runs) == ran


async def test_a_stable_run_resets_the_count_and_the_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rules = make_rules(restart="on-failure", success_codes=(0,), reset_after=10)
    sup = supervision([], base=1.0, rules=rules)
    # Two quick failures spend the budget of 2; a run up 10 s forgives them,
    # then two more quick failures, then a third: given up.
    durations = [1.0, 1.0, 10.0, 1.0, 1.0, 1.0]
    runs = FakeRuns(sup, [1] * 6, retry_times=2, durations=durations)
    start = trio.current_time()
    assert await sup.run(runs) == 1  # type: ignore[arg-type]
    assert len(runs.runs) == 5
    assert sup.gave_up
    assert sup.restarts == 2
    # Backoff (jitter 0.5: 0.75 d): d = 1, 2, then 1 again after the stable run, 2.
    waits = 0.75 + 1.5 + 0.75 + 1.5
    assert trio.current_time() - start == pytest.approx(sum(durations[:5]) + waits)


async def test_stop_while_waiting_ends_at_once(autojump_clock: trio.testing.MockClock) -> None:
    ended: list[Supervision] = []
    sup = supervision(ended, base=100.0)
    runs = FakeRuns(sup, [1, 1], retry_times=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup.run, runs)  # type: ignore[arg-type]
        await trio.sleep(1.5)  # the first run ended, the restart waits 50..100 s
        assert sup.phase is Phase.WAITING
        assert sup.restart_in == 75.0
        sup.stop()
        assert sup.phase is Phase.DONE
        assert sup.done.is_set()
        assert ended == [sup]
        assert sup.restart_in is None
    assert len(runs.runs) == 1
    assert trio.current_time() < 2


async def test_stop_before_the_task_begins(autojump_clock: trio.testing.MockClock) -> None:
    ended: list[Supervision] = []
    sup = supervision(ended)
    runs = FakeRuns(sup, [0], retry_times=0)
    assert sup.phase is Phase.CLAIMED
    sup.stop()
    assert sup.phase is Phase.CLAIMED  # its task ends it
    assert await sup.run(runs) == -1  # type: ignore[arg-type]
    assert not runs.cmd.ran
    assert ended == [sup]


async def test_end_is_once(autojump_clock: trio.testing.MockClock) -> None:
    ended: list[Supervision] = []
    sup = supervision(ended)
    sup.end()
    with pytest.raises(IllegalTransitionError):
        sup.end()
    assert ended == [sup]


async def test_blocked_until_the_requirements_are_ready(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sup = supervision([])
    runs = FakeRuns(sup, [1, 0], retry_times=1, requires=("db",), verdicts=[None, None])
    start = trio.current_time()
    assert await sup.run(runs) == 0  # type: ignore[arg-type]
    # gate (1 s), run (1 s), backoff 0.75 s, gate again before the restart (1 s), run
    assert trio.current_time() - start == pytest.approx(1 + 1 + 0.75 + 1 + 1)
    assert sup.restarts == 1
    assert not runs.verdicts


async def test_a_failed_requirement_refuses_the_run(autojump_clock: trio.testing.MockClock) -> None:
    sup = supervision([])
    runs = FakeRuns(sup, [1, 1], retry_times=5, requires=("db",), verdicts=[None, "db gave up"])
    assert await sup.run(runs) == -1  # type: ignore[arg-type]
    first, second = runs.runs
    assert first.refused is None
    assert second.refused == "db gave up"
    assert sup.phase is Phase.DONE
    assert sup.restart_in is None
    assert not sup.gave_up
    assert sup.restarts == 0  # a refused run is no restart


async def test_stop_while_blocked_ends_at_once(autojump_clock: trio.testing.MockClock) -> None:
    sup = supervision([])
    runs = FakeRuns(sup, [0], retry_times=0, requires=("db",), verdicts=[None])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup.run, runs)  # type: ignore[arg-type]
        await trio.sleep(0.5)
        assert sup.phase is Phase.BLOCKED
        sup.stop()
        assert sup.phase is Phase.DONE
    assert not runs.cmd.ran
    assert trio.current_time() < 1


async def test_a_requeued_run_runs_again_without_a_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sup = supervision([])
    runs = FakeRuns(sup, [-15, 0], retry_times=0, requires=("db",), verdicts=[None, None])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup.run, runs)  # type: ignore[arg-type]
        await trio.sleep(1.5)  # the first run is running
        assert sup.requeue()
    assert len(runs.runs) == 2
    assert sup.restarts == 0
    sup.stop()
    assert not sup.requeue()  # not while no run is in progress


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
