"""One supervision of a proc: runs it, restarts it on failure, and ends.

Theory of operation.  `Overseer.supervise(id)` and `Overseer.start(id)`
each make one `Supervision` (its identity is the supervision: a task still
waking from an ended one cannot touch the next) and run `Supervision.run`
in a task.  The task runs the proc's current `Cmd`, then fresh clones of it
(`Runs.next_run`), for as long as the restart decision says so; between
runs it waits in a cancel scope that `stop()` cancels.  Its `Phase` moves
along the table of `_state.PHASE_MOVES`:

    CLAIMED --> WAITING (delay_start) --> [BLOCKED] --> RUNNING --> DONE
       |           ^                                      |  ^
       |           +----------- WAITING (backoff) <-------+  |
       +-----------------------------------------------------+

A proc that requires others (``requires=``) waits in BLOCKED before each
run, its fresh `Cmd` in its initial state, until each of them is ready
(`Runs.until_required`, the Overseer's business).  If one of them never will
be (it failed, gave up, was stopped, was not ready in time), the run is
refused (`Runs.refuse`: it ends fatal without running, its error naming the
requirement) and the supervision ends: a refused run is never restarted.
A run stopped because a requirement it restarts with ended (`requeue`) is
followed by a new one, not counted as a restart, once the requirement is
ready again.

The decision is taken when a run's final state is published (the Overseer
calls `run_ended` in that synchronous stretch), so the published event says
whether and when a restart follows: `restart_decision` says whether (pure:
numbers in, a `Decision` out), `restart_delay` when.  Which runs are
restarted is the proc's `RestartRules`: its policy (``on-failure``, the
default: a run that did not exit with one of `success_codes`, was signalled
or could not start; ``always``; ``never``), and under every policy at most
`retry_times` restarts (``math.inf``: no limit).  A run that stayed up at
least `reset_after` seconds was a stable one: the restarts counted so far
are forgiven (the count, and with it the backoff, starts again), so a
service that crashes once a day never spends its budget.  Restart k
(1-based, counted since the last stable run) waits

    delay_start + uniform(d / 2, d),   d = min(backoff_max, backoff_base * 2 ** (k - 1))

("equal jitter": never less than half the exponential step, so restarts of
many procs spread out without ever hammering).  During the wait the last run
stays visible; `stop()` then ends the supervision at once.

This module talks to its proc through the small `Runs` protocol handed in by
the Overseer, and to the Overseer through one callback (`on_end`), so it
imports nothing from `_overseer`.
"""

from __future__ import annotations

import enum
import math
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

import attrs
import trio

from ._state import Phase, PhaseMachine

if TYPE_CHECKING:
    from ._cmd import Cmd

__all__ = [
    "DEFAULT_RESET_AFTER",
    "Backoff",
    "Decision",
    "RestartPolicy",
    "RestartRules",
    "Runs",
    "Supervision",
    "make_rules",
    "restart_decision",
    "restart_delay",
    "restarts_counted",
]

#: Seconds of uptime after which a run counts as stable (see `restarts_counted`).
#: A crash loop is a run that fails during its start-up: a bad config, a port
#: taken, a dependency down, often found only when a connect times out, and
#: the usual connect and start-up timeouts are 30 s or less; so a run that
#: lived twice that long was a working service that crashed later.  Short
#: enough that a service crashing every few hours gets its whole budget back.
#: supervisord's `startsecs` (1 s) counts a run that lives 1 s as a success, so
#: a proc that crashes after 2 s restarts forever.
DEFAULT_RESET_AFTER = 60.0


# -- the decisions (pure) --------------------------------------------------------


class RestartPolicy(enum.Enum):
    """Which ended runs are restarted (`Overseer.add(restart=...)`)."""

    ON_FAILURE = "on-failure"  # a run that did not succeed (the default)
    ALWAYS = "always"  # every run, also one that succeeded
    NEVER = "never"  # none


class Decision(enum.Enum):
    """What follows the end of a run: a restart, or why none."""

    RESTART = "restart"
    SUCCESS = "success"  # it succeeded and the policy restarts only failures (or nothing)
    FAILED = "failed"  # it failed, and the policy (or a budget of 0) allows no restart
    STOPPED = "stopped"  # stop() asked for the end
    GAVE_UP = "gave up"  # a restart was due, but the retry budget is spent


def restart_decision(
    *,
    exit_code: int,
    stopped: bool,
    restarts: int,
    retry_times: float,
    policy: RestartPolicy = RestartPolicy.ON_FAILURE,
    success_codes: frozenset[int] = frozenset({0}),
) -> Decision:
    """Whether a run that ended with `exit_code` is restarted.

    `restarts` is how many restarts were counted so far (see
    `restarts_counted`) and `retry_times` the budget (``math.inf``: none; 0
    once `Cmd.stop()` was called).  A run succeeds when its exit code is one
    of `success_codes`; it fails otherwise, also when it was signalled (a
    negative code) or could not start (-1).  A budget of 0 allows no restart
    at all: the run ends as it ended (`SUCCESS` or `FAILED`), nothing was
    given up.
    """
    if stopped:
        return Decision.STOPPED
    succeeded = exit_code in success_codes
    due = policy is RestartPolicy.ALWAYS or (policy is RestartPolicy.ON_FAILURE and not succeeded)
    if due and restarts < retry_times:
        return Decision.RESTART
    if due and retry_times > 0:
        return Decision.GAVE_UP
    return Decision.SUCCESS if succeeded else Decision.FAILED


def restarts_counted(restarts: int, *, uptime: float, reset_after: float) -> int:
    """The restarts that count against the budget once a run stayed up `uptime` s.

    A stable run (up at least `reset_after` seconds) forgives the earlier
    restarts: the count starts again from 0, and the backoff with it.
    """
    return 0 if uptime >= reset_after else restarts


def restart_delay(
    k: int, *, delay_start: float, backoff_base: float, backoff_max: float, jitter: float
) -> float:
    """Seconds before restart `k` (1-based): ``delay_start + uniform(d/2, d)``.

    ``d = min(backoff_max, backoff_base * 2 ** (k - 1))``, computed for any k
    without overflow; `jitter` in [0, 1) picks the point in [d/2, d] (it is
    ``random.random()``: the same numbers as ``random.uniform(d/2, d)``).
    """
    try:  # base * 2 ** (k - 1), exactly: 2.0 ** k alone overflows past 1023
        exact = math.ldexp(backoff_base, k - 1)
    except OverflowError:
        exact = math.inf
    step = min(backoff_max, exact, sys.float_info.max)
    low = step / 2
    return delay_start + (low + (step - low) * jitter)


def _to_policy(value: object) -> RestartPolicy:
    if isinstance(value, RestartPolicy):
        return value
    try:
        return RestartPolicy(value)
    except ValueError:
        choices = ", ".join(repr(p.value) for p in RestartPolicy)
        raise ValueError(f"restart must be one of {choices}, got {value!r}") from None


@attrs.frozen
class RestartRules:
    """Which runs of a proc are restarted: its policy, what succeeds, when a run is stable."""

    policy: RestartPolicy = RestartPolicy.ON_FAILURE
    """Which ended runs are restarted (at most `retry_times` times)."""
    success_codes: frozenset[int] = frozenset({0})
    """The exit codes that count as success."""
    reset_after: float = DEFAULT_RESET_AFTER
    """Seconds of uptime that make a run stable: the restart count starts again."""


def make_rules(*, restart: object, success_codes: object, reset_after: object) -> RestartRules:
    """Validate the restart options of `Overseer.add` (ValueError/TypeError naming the option)."""
    policy = _to_policy(restart)
    if isinstance(success_codes, str | bytes) or not isinstance(success_codes, Iterable):
        raise TypeError(
            f"success_codes must be a collection of exit codes, e.g. (0, 2), got {success_codes!r}"
        )
    codes = tuple(success_codes)
    for code in codes:
        if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 255:
            raise ValueError(
                f"success_codes must hold exit codes from 0 to 255, got {code!r} "
                "(a run killed by a signal or that could not start never succeeds)"
            )
    if isinstance(reset_after, bool) or not isinstance(reset_after, int | float):
        raise TypeError(f"reset_after must be a number of seconds, got {reset_after!r}")
    if not reset_after >= 0:  # also refuses NaN
        raise ValueError(
            f"reset_after must be a number of seconds >= 0 (math.inf: never), got {reset_after!r}"
        )
    return RestartRules(policy, frozenset(codes), float(reset_after))


@attrs.frozen
class Backoff:
    """The Overseer's restart pacing, handed to each supervision."""

    base: float
    """Seconds of the first restart's step (doubled for each further one)."""
    max: float
    """The cap of the step."""


# -- one supervision ---------------------------------------------------------------


class Runs(Protocol):
    """What a supervision needs of its proc (the Overseer's record of it)."""

    @property
    def cmd(self) -> Cmd:
        """The current run, or the last one."""

    def next_run(self) -> Cmd:
        """The Cmd to run next: the current one if it never ran, else a fresh clone."""

    async def sweep(self, cmd: Cmd) -> None:
        """End what `cmd` left outside its process group (bounded)."""

    @property
    def requires(self) -> tuple[str, ...]:
        """The procs that must be ready before each run ('' none)."""

    async def until_required(self) -> str | None:
        """Wait until every required proc is ready: None; or why one never will be."""

    def refuse(self, cmd: Cmd, why: str) -> None:
        """End `cmd` (not started) fatal without running it: `why` is its error."""


@attrs.define(eq=False, repr=False)
class Supervision:
    """One `supervise()` or `start()` of a proc, from its claim to its end."""

    backoff: Backoff
    jitter: Callable[[], float]  # a number in [0, 1) per restart (the Overseer's seeded RNG)
    on_end: Callable[[Supervision], None]  # told once, as the phase becomes DONE
    rules: RestartRules = RestartRules()  # the proc's restart policy

    _machine: PhaseMachine = attrs.field(init=False, factory=PhaseMachine)
    # stop() was asked for: no further run, and no restart decided from now on.
    stop_requested: bool = attrs.field(init=False, default=False)
    # Restarts begun so far, counted against the budget: since the supervision
    # began, or since the last stable run (see restarts_counted).
    restarts: int = attrs.field(init=False, default=0)
    # The last run ended with a restart due and the budget spent (GAVE_UP).
    gave_up: bool = attrs.field(init=False, default=False)
    # trio.current_time() when the current run began (for its uptime).
    _run_began: float = attrs.field(init=False, default=0.0)
    # Seconds until the restart that follows the last run (None: none follows),
    # decided when its final state was published; None once DONE.
    restart_in: float | None = attrs.field(init=False, default=None)
    done: trio.Event = attrs.field(init=False, factory=trio.Event)  # set as the phase is DONE
    # The WAITING sleep or BLOCKED wait while in it; stop() cancels it.
    _wait_scope: trio.CancelScope | None = attrs.field(init=False, default=None)
    # requeue() was called: the current run ends to be followed by a new one
    # once the requirements are ready again (not a restart: nothing counted).
    _requeued: bool = attrs.field(init=False, default=False)

    def __repr__(self) -> str:
        return f"<Supervision {self.phase.value}, {self.restarts} restarts>"

    @property
    def phase(self) -> Phase:
        """Where this supervision stands."""
        return self._machine.phase

    @property
    def active(self) -> bool:
        """Not DONE: a run is in progress or may follow."""
        return self._machine.phase is not Phase.DONE

    def stop(self) -> None:
        """No further run: a pending restart is cancelled, and between runs the
        supervision ends now.  Sync; the current run is the caller's to stop."""
        self.stop_requested = True
        self.restart_in = None
        if self._wait_scope is not None:
            self._wait_scope.cancel()
            self.end()

    def requeue(self) -> bool:
        """The current run is being stopped for a requirement it restarts with:
        a new run follows once the requirements are ready again.  False (and
        nothing changes) unless a run is in progress and no stop was asked."""
        if self.stop_requested or self.phase is not Phase.RUNNING:
            return False
        self._requeued = True
        return True

    def end(self) -> None:
        """End now: before its task began (a failed `start()`), or between runs."""
        self._machine.move(Phase.DONE)
        self._wait_scope = None
        self.restart_in = None
        self.done.set()
        self.on_end(self)

    def run_ended(self, *, exit_code: int, retry_times: float, delay_start: float) -> Decision:
        """A run's final state is being published: decide what follows (`restart_in`)."""
        if self.phase is Phase.BLOCKED or (self._requeued and not self.stop_requested):
            # Refused (a requirement failed), or requeued: no restart is scheduled.
            self.restart_in = None
            self.gave_up = False
            return Decision.FAILED if self.phase is Phase.BLOCKED else Decision.RESTART
        rules = self.rules
        if not self.stop_requested:
            uptime = trio.current_time() - self._run_began
            self.restarts = restarts_counted(
                self.restarts, uptime=uptime, reset_after=rules.reset_after
            )
        decision = restart_decision(
            exit_code=exit_code,
            stopped=self.stop_requested,
            restarts=self.restarts,
            retry_times=retry_times,
            policy=rules.policy,
            success_codes=rules.success_codes,
        )
        self.gave_up = decision is Decision.GAVE_UP
        if decision is not Decision.RESTART:
            self.restart_in = None
            return decision
        self.restart_in = restart_delay(
            self.restarts + 1,
            delay_start=delay_start,
            backoff_base=self.backoff.base,
            backoff_max=self.backoff.max,
            jitter=self.jitter(),
        )
        return decision

    async def run(
        self, runs: Runs, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> int:
        """Run, and restart, until no run follows; return the last exit code (-1: none ran).

        Reports started (`task_status`) once the first run runs or is fatal,
        or when the supervision ends without one.

        Cancellation: the current run is stopped and reaped (see `Cmd.run`),
        and the supervision ends, before the cancellation propagates.
        """
        reported = False
        exit_code = -1
        try:
            delay = runs.cmd.delay_start
            failed: Cmd | None = None  # the run before a restart
            while True:
                # The last run's final state stays visible during the wait.
                if (delay > 0 or failed is not None) and not self.stop_requested:
                    await self._wait(runs, delay, failed)
                if self.stop_requested or not self.active:
                    break
                cmd = runs.next_run()
                if runs.requires:
                    why = await self._blocked(runs)
                    if self.stop_requested or not self.active:
                        break
                    if why is not None:
                        runs.refuse(cmd, why)  # its final state: run_ended decides no restart
                        exit_code = -1
                        break
                if failed is not None and not self._requeued:
                    self.restarts += 1
                self._requeued = False
                self._machine.move(Phase.RUNNING)
                self.restart_in = None  # decided anew as this run ends (run_ended)
                self._run_began = trio.current_time()
                if reported:
                    status = await cmd.run()
                else:
                    reported = True
                    status = await cmd.run(task_status=task_status)
                exit_code = status.exit
                if self.stop_requested or (self.restart_in is None and not self._requeued):
                    break
                delay = self.restart_in or 0.0
                failed = cmd
        finally:
            if self.active:  # stop() between runs ended it already
                self.end()
        if not reported:
            task_status.started()
        return exit_code

    async def _blocked(self, runs: Runs) -> str | None:
        """BLOCKED: until the requirements are ready (None) or one never will be (why).

        A stop() meanwhile ends the supervision at once (None is returned).
        """
        self._machine.move(Phase.BLOCKED)
        why = None
        with trio.CancelScope() as scope:
            self._wait_scope = scope
            why = await runs.until_required()
        self._wait_scope = None
        return why

    async def _wait(self, runs: Runs, delay: float, failed: Cmd | None) -> None:
        """WAITING: `delay` seconds (from now), after sweeping what `failed` left.

        A stop() meanwhile ends the supervision at once; the sweep still
        finishes (it is bounded), so daemons of a failing launcher never
        pile up, one per run, until the Overseer closes.
        """
        self._machine.move(Phase.WAITING)
        with trio.CancelScope() as scope:
            self._wait_scope = scope
            until = trio.current_time() + delay
            if failed is not None:
                with trio.CancelScope(shield=True):
                    await runs.sweep(failed)
            await trio.sleep_until(until)
        self._wait_scope = None
