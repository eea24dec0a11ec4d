"""The record of one registered proc: its options, its latest run, its supervision.

The Overseer keeps one `Proc` per id; the supervision loop reads it as its
`Runs` (the current run, the next one, sweeping a failed one), readiness as
its `Watched`, the requirement gating (`_dependencies`) as a proc that may
require others or be required.  Every field states who changes it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import attrs
import trio

from ._cmd import Cmd, OutputGate
from ._ready import Readiness
from ._supervision import RestartRules, Supervision
from ._tail import LineTail

__all__ = ["TAIL_LINES", "Proc"]

TAIL_LINES = 200  # recent lines kept per proc for wait_for_log and error reports


@attrs.define(eq=False)
class Proc:
    """One registered proc: its latest run and its supervision (the `Runs` of `_supervision`)."""

    id: str
    cmd: Cmd  # the latest run; replaced by a clone for each new run
    retry_times: float  # the configured budget (cmd.stop() zeroes the Cmd's own copy)
    rules: RestartRules  # which runs are restarted
    readiness: Readiness
    cmdline: str
    attach: Callable[[Cmd], None]  # hooks a new run up to the Overseer (before it runs)
    # Waits until the procs of `requires` are ready (see `_dependencies`).
    required: Callable[[], Awaitable[str | None]]
    # The procs that must be ready before each run (ids; validated at start).
    requires: tuple[str, ...] = ()
    # Those of `requires` whose end stops this proc's run, to run again once ready.
    restart_with: frozenset[str] = frozenset()
    # Those of `requires` not ready yet, while a run waits for them (BLOCKED).
    waiting_for: tuple[str, ...] = ()
    # Set (and dropped) at the next state change or supervision end; made by
    # whoever waits for one (a dependent waiting for this proc to be ready).
    changed: trio.Event | None = None
    # The run for which the ready_* probes held when a dependent asked.
    ready_run: Cmd | None = None
    out_log: logging.Logger | None = None  # made on first use: see _overseer._out_logger
    # The current supervision, or the last one (None: never supervised).
    supervision: Supervision | None = None
    # stop() seen since the last claim: status() shows retry_times 0 (as the
    # Go original) until the next supervision begins.
    stopped: bool = False
    tail: LineTail = attrs.field(factory=lambda: LineTail(TAIL_LINES))
    # Holds back the reading of this proc's pipes (and of all: its parent is
    # the Overseer's gate); see Overseer._hold_output.
    gate: OutputGate = attrs.field(factory=OutputGate)
    # The run (Cmd) that printed a line matching readiness.line, if the
    # latest did: judged on every line, not only on the tail (see _ready).
    ready_seen: Cmd | None = None

    @property
    def supervised(self) -> bool:
        """Whether a supervision is in progress (claimed and not ended)."""
        return self.supervision is not None and self.supervision.active

    def next_run(self) -> Cmd:
        """The Cmd to run next: the current one if it never ran, else a fresh clone."""
        if self.cmd.is_initial_state():
            return self.cmd
        cmd = self.cmd.clone()
        cmd.retry_times = self.retry_times
        self.attach(cmd)
        self.cmd = cmd
        self.tail.clear()
        return cmd

    async def sweep(self, cmd: Cmd) -> None:
        """End what `cmd` left outside its process group (bounded)."""
        await cmd._sweep_escaped()

    async def until_required(self) -> str | None:
        """Wait until every proc of `requires` is ready: None; or why one never will be."""
        return await self.required()

    def refuse(self, cmd: Cmd, why: str) -> None:
        """End `cmd` (not started) fatal without running it: `why` is its error."""
        cmd._refuse(why)

    def notify(self) -> None:
        """Wake whoever waits for a change of this proc (see `changed`)."""
        if self.changed is not None:
            self.changed.set()
            self.changed = None
