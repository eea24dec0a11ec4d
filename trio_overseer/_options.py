"""The options of a proc: one record, one definition of each option and its default.

`ProcOptions` is what `Overseer.add` takes (its keyword parameters are the
record's fields, with the same defaults: tests/test_overseer.py checks it),
what the CLI hands it for each proc of a config file, and where each run's
`Cmd` takes its own options from (the fields the two share, by name).  It is
a plain record: each option is checked where its concept lives (the `Cmd`
validators, `_supervision.make_rules`, `_ready.make_readiness`, `proc_ids`
here), when `Overseer.add` builds the proc, so that every error names the
proc.  Adding an option: a field here, its check, and its parameter of
`Overseer.add`.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from ._supervision import DEFAULT_RESET_AFTER

__all__ = ["ProcOptions", "proc_ids"]


@attrs.frozen(kw_only=True)
class ProcOptions:
    """Every option of a proc (see `Overseer.add`)."""

    group: str = ""
    """A group name, to address procs together (`list_group`, the CLI's ``GROUP:*``)."""
    dir: str | os.PathLike[str] | None = None
    """The working directory (None: ours)."""
    env: Mapping[str, str] | None = None
    """The environment, replacing ours (None: ours); the run's tag is added."""
    delay_start: float = 0.0
    """Seconds before each start."""
    retry_times: float = 0
    """Restarts at most (``math.inf``: no limit)."""
    restart: str = "on-failure"
    """Which ended runs are restarted: ``"on-failure"``, ``"always"``, ``"never"``."""
    success_codes: Iterable[int] = (0,)
    """The exit codes that count as success."""
    reset_after: float = DEFAULT_RESET_AFTER
    """Seconds of uptime after which a run is stable: the restart count starts again."""
    requires: Iterable[str] = ()
    """Procs that must be ready before each run."""
    restart_with: Iterable[str] = ()
    """Those of `requires` whose end stops this proc's run, to run again once ready."""
    buffered: bool = False
    """Keep every line in `Status.stdout` / `Status.stderr` of each run."""
    stop_signal: int = signal.SIGTERM
    """The signal that asks the process group to stop."""
    stop_timeout: float | None = None
    """Seconds from the stop signal to SIGKILL (None: the Overseer's)."""
    stop_signals: Sequence[tuple[int | str, float]] | None = None
    """A stop ladder, instead of the two above: (signal, seconds) steps, SIGKILL last."""
    pty: bool | tuple[int, int] = False
    """stdout and stderr on a pseudo-terminal (True: 80x24, or (columns, rows))."""
    ready_line: str | re.Pattern[str] | None = None
    """Ready once a line matches (``re.search``)."""
    ready_port: int | tuple[str, int] | None = None
    """Ready once this TCP port (on 127.0.0.1, or (host, port)) accepts connections."""
    ready_url: str | None = None
    """Ready once this HTTP URL answers below 500."""
    ready_path: str | os.PathLike[str] | None = None
    """Ready once this path exists."""
    ready_check: Callable[[], Awaitable[bool]] | None = None
    """Ready once this async predicate returns True."""
    ready_timeout: float = 30.0
    """Seconds to wait for all of the ``ready_*`` conditions."""

    def shared_with(self, names: Iterable[str]) -> dict[str, Any]:
        """The options among `names` (those of another record, a `Cmd`'s), by name."""
        return {name: getattr(self, name) for name in names if name in _FIELDS}


_FIELDS = frozenset(field.name for field in attrs.fields(ProcOptions))


def proc_ids(option: str, ids: object) -> tuple[str, ...]:
    """The ids of a `requires`-like option: a collection of non-empty strings, deduplicated."""
    if isinstance(ids, str | bytes) or not isinstance(ids, Iterable):
        raise TypeError(f"{option} must be a collection of proc ids, e.g. ('db',), got {ids!r}")
    out: dict[str, None] = {}
    for id in ids:
        if not isinstance(id, str) or not id:
            raise TypeError(f"{option} must hold proc ids (non-empty strings), got {id!r}")
        out[id] = None
    return tuple(out)
