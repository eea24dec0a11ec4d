"""Requirements at run time (``add(..., requires=...)``): what gates a run, and the stop order.

Theory of operation.  A run of a proc that requires others waits (its
supervision BLOCKED) until each of them is ready: its ``ready_*`` probes
hold for one of its runs (`_ready.judge_ready`), or it runs, for one
without probes; a one-shot job that ended with success counts as done.  A
requirement that will never be ready (it could not start, gave up, was
stopped, is not ready in time) refuses the run, naming itself.  While it
waits, the proc's `waiting_for` names what it still waits for, and each
change is published.  A proc of `restart_with` that ends stops the runs of
the procs that restart with it, to run again once it is ready.
`stop_ordered` stops dependents before what they require: a proc others
require is held back (`deferred`) until none of them runs any more.

The graph itself (closure, cycles, depth) is pure: `_requires`.  This
module works on the Overseer's records (`_proc.Proc`) through what the
Overseer hands in (its lookups, claim, stop, publishing and readiness
judgement), so it imports nothing from `_overseer`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

import attrs
import trio

from ._errors import RequirementError
from ._proc import Proc
from ._ready import Readiness
from ._records import ProcessInfo
from ._requires import closure as requirement_closure
from ._requires import problems as requirement_problems
from ._state import State
from ._supervision import Supervision

__all__ = ["Dependencies"]

logger = logging.getLogger("trio_overseer")


@attrs.define(eq=False)
class Dependencies:
    """The requirements of an Overseer's procs, as they run; see the module docs."""

    _procs: Mapping[str, Proc]  # the Overseer's registry (read here, never changed)
    _get: Callable[[str], Proc]  # the record of an id; UnknownProcError if none
    _claim: Callable[[str], tuple[Proc, Supervision]]  # begin a supervision
    _stop: Callable[..., None]  # stop(id, kill=False): no restart, as the Overseer decides
    _info: Callable[[Proc], ProcessInfo]  # a proc's ProcessInfo now
    _publish: Callable[[Proc, ProcessInfo], None]  # announce it
    # Until a proc's probes hold for a run (None), or why they never will.
    _judge: Callable[[str, Readiness, trio.Event], Awaitable[str | None]]
    # Procs a stop_all() holds back until no running proc requires them.
    deferred: set[str] = attrs.field(init=False, factory=set)
    _bound: int = attrs.field(init=False, default=0)  # procs with restart_with

    def added(self, rec: Proc) -> None:
        """A proc was registered."""
        self._bound += bool(rec.restart_with)

    def removed(self, rec: Proc) -> None:
        """A proc was unregistered."""
        self._bound -= bool(rec.restart_with)

    def run_ended(self, id: str) -> None:
        """The current run of `id` ended: the procs that restart with it stop theirs."""
        if self._bound:
            self.restart_bound(id)

    def supervision_ended(self) -> None:
        """A supervision ended: a proc held back for it may be stopped now."""
        if self.deferred:
            self.stop_deferred()

    def check(self, ids: list[str] | None = None) -> None:
        """Refuse to start `ids` (every proc when None) whose requirements cannot be met.

        Raises:
          RequirementError: an unknown id is required, or the requirements form a cycle.
        """
        if ids is None:
            if not any(rec.requires for rec in self._procs.values()):
                return
        elif not any(self._get(id).requires for id in ids):
            return
        graph = {id: rec.requires for id, rec in self._procs.items()}
        problems = requirement_problems(graph, ids)
        if problems:
            raise RequirementError("; ".join(problems) + "; nothing was started")

    def claim_required(self, id: str) -> list[tuple[Proc, Supervision]]:
        """Claim what `id` requires (transitively) and is not supervised, requirements first."""
        if not self._procs[id].requires:
            return []
        graph = {id: rec.requires for id, rec in self._procs.items()}
        claimed = []
        for other in requirement_closure(graph, [id])[:-1]:  # the last one is `id` itself
            if not self._procs[other].supervised:
                claimed.append(self._claim(other))
        return claimed

    async def until_required(self, rec: Proc) -> str | None:
        """Wait until each proc `rec` requires is ready: None; or why one never will be.

        While it waits, `rec.waiting_for` names those not ready yet, and each
        change of it is published (`ProcessInfo.waiting_for`).
        """
        pending = []
        for required in rec.requires:
            ready, why = self._judge_now(required)
            if why is not None:
                return why
            if not ready:
                pending.append(required)
        if not pending:
            return None
        failures: list[str] = []
        rec.waiting_for = tuple(pending)
        self._publish(rec, self._info(rec))

        async def one(required: str, scope: trio.CancelScope) -> None:
            why = await self._requirement_ready(required)
            if why is not None:
                failures.append(why)
                scope.cancel()  # the first failure decides
                return
            rec.waiting_for = tuple(r for r in rec.waiting_for if r != required)
            if rec.waiting_for:
                self._publish(rec, self._info(rec))

        decided = False
        try:
            async with trio.open_nursery() as nursery:
                for required in pending:
                    nursery.start_soon(one, required, nursery.cancel_scope)
            decided = True
        finally:
            interrupted = not decided and rec.waiting_for
            rec.waiting_for = ()
            if interrupted:  # stopped (or cancelled) while waiting: it waits no more
                self._publish(rec, self._info(rec))
        return failures[0] if failures else None

    def _judge_now(self, id: str) -> tuple[bool, str | None]:
        """Whether requirement `id` is ready right now; or why it never will be
        (False, None: it may be, later).  Probes are not tried here."""
        rec = self._procs.get(id)
        sup = None if rec is None else rec.supervision
        if rec is None or sup is None:
            return False, None  # `_requirement_ready` says why
        if not sup.active or sup.stop_requested:
            if rec.readiness:
                return False, None  # the last run is judged on its probes
            why = self._why_ended(rec, ready=True)
            return why is None, why
        ready = rec.cmd.state is State.RUNNING
        return ready and (not rec.readiness or rec.ready_run is rec.cmd), None

    async def _requirement_ready(self, id: str) -> str | None:
        """Wait until requirement `id` is ready: None; or why it never will be."""
        rec = self._procs.get(id)
        if rec is None:  # removed meanwhile
            return f"requirement {id!r} is not registered"
        sup = rec.supervision
        if sup is None:
            return f"requirement {id!r} was never started"
        if rec.readiness:
            why = await self._judge(id, rec.readiness, sup.done)
            if why is None:
                rec.ready_run = rec.cmd
                return None
            if sup.active:  # not ready in time: stopped, as start() does
                self._stop(id)
                detail = why.splitlines()[0].removeprefix(f"proc {id!r} was not ready ")
                return f"requirement {id!r} was not ready {detail}"
            return self._why_ended(rec, ready=False)
        while True:
            ready, why = self._judge_now(id)
            if ready or why is not None:
                return why
            if rec.changed is None:
                rec.changed = trio.Event()
            await rec.changed.wait()

    def _why_ended(self, rec: Proc, *, ready: bool) -> str | None:
        """Why a requirement whose supervision ended (or is ending) is not ready: None
        when it is, the last run having done its work (`ready`: it ran, no probes)."""
        sup = rec.supervision
        assert sup is not None
        info = self._info(rec)
        if sup.stop_requested or info.state is State.INITIAL:
            return f"requirement {rec.id!r} was stopped"
        if info.state is State.FATAL:
            return f"requirement {rec.id!r} could not start: {info.error}"
        if ready and info.state is State.FINISHED and info.exit_code in rec.rules.success_codes:
            return None  # it did its work (a one-shot job)
        how = info.error or f"exit code {info.exit_code}"
        if sup.gave_up:
            restarts = f"{sup.restarts} restart{'s' if sup.restarts != 1 else ''}"
            return f"requirement {rec.id!r} gave up after {restarts} ({how})"
        return f"requirement {rec.id!r} ended before it was ready ({how})"

    def restart_bound(self, id: str) -> None:
        """A run of `id` ended: stop the runs of the procs that restart with it."""
        for rec in self._procs.values():
            sup = rec.supervision
            if id in rec.restart_with and sup is not None and sup.requeue():
                logger.info("proc %r restarts with %r: stopping its run", rec.id, id)
                rec.cmd.stop()

    def stop_ordered(self, ids: list[str], *, kill: bool = False) -> None:
        """Stop `ids`: at once those no running proc requires, the others as
        the last of their dependents ends (`stop_deferred`)."""
        if kill or not any(self._procs[id].requires for id in self._procs):
            for id in ids:
                self._stop(id, kill=kill)
            return
        for id in ids:  # no restart of any of them from now on
            rec = self._procs[id]
            rec.stopped = True
            if rec.supervision is not None:
                rec.supervision.stop()
        self.deferred.update(ids)
        self.stop_deferred()

    def stop_deferred(self) -> None:
        """Stop the procs `stop_ordered` holds back that no running proc requires any more."""
        procs = self._procs.values()
        running = (rec for rec in procs if rec.supervised or rec.cmd.is_running_state())
        busy = {required for rec in running for required in rec.requires}
        for id in [id for id in self.deferred if id not in busy]:
            self.deferred.discard(id)
            if id in self._procs:
                self._stop(id)
