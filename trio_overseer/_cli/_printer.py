"""What ``trio-overseer start`` prints: lines for people, or JSON Lines for machines.

Human lines read ``HH:MM:SS ID  | text``: the id is padded to the longest
id, a ``!`` before the bar marks the child's standard error, and state
changes are lines of their own (``web  | running (pid 4242)``).  On a
terminal the prefix takes a colour per proc.

Throughput matters (a chatty child can print millions of lines): a
`LogBatch` becomes one string with one join, around a prefix computed once
per proc, stream and second, and the caller writes it with a single write.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Iterable, Mapping
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any, TextIO

from .._records import STDERR, LogBatch, LogMsg, ProcessInfo, restart_count
from .._state import State

__all__ = [
    "Printer",
    "describe_state",
    "log_dict",
    "log_json",
    "state_dict",
    "want_colour",
]

# Foreground colours given to procs in turn (SGR codes): cyan, yellow, green,
# magenta, blue, then their bright variants.  Red is kept for stderr marks.
_PALETTE = ("36", "33", "32", "35", "34", "96", "93", "92", "95", "94")
_RESET = "\x1b[0m"
_DIM = "\x1b[2m"
_BOLD = "\x1b[1m"
_RED = "\x1b[1;31m"


def want_colour(
    stream: TextIO, *, choice: str = "auto", environ: Mapping[str, str] = os.environ
) -> bool:
    """Whether to colour output on `stream`.

    `choice` is ``"always"``, ``"never"`` or ``"auto"``: colour only on a
    terminal, and never when ``NO_COLOR`` is set to a non-empty value
    (https://no-color.org) or ``TERM`` is ``dumb``.
    """
    if choice == "always":
        return True
    if choice == "never" or environ.get("NO_COLOR") or environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def _seconds(delay: float) -> str:
    return f"{delay:.1f}" if delay >= 0.1 else f"{delay:.2f}"


def describe_state(info: ProcessInfo, previous: State | None = None) -> str | None:
    """A state change in words, or None for one not worth a line (starting).

    `previous` is the proc's state before this one: a run that ends
    ``interrupted`` after ``stopping`` was stopped, otherwise it was killed
    from outside.
    """
    state = info.state
    if info.waiting_for:
        return f"waiting for {', '.join(info.waiting_for)}"
    if state is State.RUNNING:
        return f"running (pid {info.pid})"
    if state is State.STOPPING:
        return "stopping"
    if state is State.FINISHED:
        text = f"exited {info.exit_code}"
    elif state is State.INTERRUPTED:
        how = "stopped" if previous is State.STOPPING else "killed"
        text = f"{how} ({info.error or f'exit code {info.exit_code}'})"
    elif state is State.FATAL:
        text = f"fatal: {info.error}"
    elif state is State.INITIAL and previous is State.INITIAL:
        return "not started (stopped while waiting)"  # see Dependencies.until_required
    else:  # initial, starting
        return None
    if info.restart_in is not None:
        text += f", restart {restart_count(info)} in {_seconds(info.restart_in)} s"
    elif info.gave_up:
        text += f", gave up after {info.restarts} restart{'s' if info.restarts != 1 else ''}"
    return text


def state_dict(info: ProcessInfo, ts: float | None = None) -> dict[str, Any]:
    """The JSON form of a state change: `ProcessInfo.to_dict` plus our keys."""
    data = info.to_dict()
    data["kind"] = "state"
    data["restarts"] = info.restarts
    data["restartIn"] = info.restart_in
    data["gaveUp"] = info.gave_up
    data["waitingFor"] = list(info.waiting_for)
    if ts is not None:
        data["ts"] = ts
    return data


def log_dict(msg: LogMsg) -> dict[str, Any]:
    """The JSON form of a line (what ``--json`` prints, as a dict)."""
    stream = "stderr" if msg.type == STDERR else "stdout"
    return {"kind": "log", "id": msg.id, "stream": stream, "text": msg.text, "ts": msg.ts}


def log_json(batch: LogBatch) -> str:
    """The lines of a batch as JSON Lines (`log_dict` of each), each ending in a newline."""
    stream = "stderr" if batch.type == STDERR else "stdout"
    prefix = f'{{"kind": "log", "id": {_json_str(batch.id)}, "stream": "{stream}", "text": '
    sep = f', "ts": {batch.ts!r}}}\n{prefix}'
    return f'{prefix}{sep.join(map(_json_str, batch.lines))}, "ts": {batch.ts!r}}}\n'


class Printer:
    """Formats state changes and batches of lines into text ready to write.

    Stateless but for caches and the last state of each proc; it never
    writes anything itself.
    """

    def __init__(
        self,
        ids: Iterable[str],
        *,
        colour: bool = False,
        json_lines: bool = False,
        prefix: bool = True,
        timestamp_format: str | None = "%H:%M:%S",
    ) -> None:
        self._ids = list(ids)
        self.colour = colour
        self.json_lines = json_lines
        self.prefix = prefix  # False: lines as the procs wrote them (`--no-prefix`)
        self.timestamp_format = timestamp_format  # None: no time (`--no-timestamp`)
        # With sub-second precision, prefixes cannot be cached per second.
        self._subsecond = timestamp_format is not None and "%f" in timestamp_format
        self.width = max(map(len, self._ids), default=0)
        self._colours = {id: _PALETTE[i % len(_PALETTE)] for i, id in enumerate(self._ids)}
        # (id, stream) -> (whole second, prefix); lines of a batch share both.
        self._prefixes: dict[tuple[str, int], tuple[int, str]] = {}
        self._clock: tuple[int, str] = (-1, "")
        self._previous: dict[str, State] = {}

    def track(self, ids: Iterable[str]) -> None:
        """Make room for new procs (after a reload): a colour each, the width."""
        for id in ids:
            if id not in self._colours:
                self._colours[id] = _PALETTE[len(self._colours) % len(_PALETTE)]
            if len(id) > self.width:
                self.width = len(id)
                self._prefixes.clear()

    def _hhmmss(self, ts: float) -> tuple[int, str]:
        if self.timestamp_format is None:
            return (-1, "")
        second = int(ts)
        if self._subsecond:
            text = datetime.datetime.fromtimestamp(ts).strftime(self.timestamp_format)
            return (-1, text)
        if second != self._clock[0]:
            when = datetime.datetime.fromtimestamp(second)
            self._clock = (second, when.strftime(self.timestamp_format))
        return self._clock

    def head_width(self) -> int:
        """How many columns the prefix of a line takes on a terminal (0: none)."""
        if self.json_lines or not self.prefix:
            return 0
        hhmmss = self._hhmmss(time.time())[1]
        return (len(hhmmss) + 1 if hhmmss else 0) + self.width + len(" !| ")

    def _head(self, id: str, mark: str, hhmmss: str) -> str:
        """``HH:MM:SS id   <mark>| ``, coloured when asked."""
        if not self.prefix:
            return ""
        padded = id.ljust(self.width)
        if hhmmss and self.colour:
            hhmmss = f"{_DIM}{hhmmss}{_RESET} "
        elif hhmmss:
            hhmmss += " "
        if not self.colour:
            return f"{hhmmss}{padded} {mark}| "
        colour = self._colours.get(id)
        if colour is None:
            colour = self._colours[id] = _PALETTE[len(self._colours) % len(_PALETTE)]
        mark = f"{_RED}{mark}{_RESET}\x1b[{colour}m" if mark != " " else mark
        return f"{hhmmss}\x1b[{colour}m{padded} {mark}|{_RESET} "

    def _prefix(self, id: str, kind: int, ts: float) -> str:
        key = (id, kind)
        second = int(ts)
        cached = self._prefixes.get(key)
        if cached is not None and cached[0] == second and not self._subsecond:
            return cached[1]
        if self.json_lines:
            stream = "stderr" if kind == STDERR else "stdout"
            prefix = f'{{"kind": "log", "id": {_json_str(id)}, "stream": "{stream}", '
            # The ts differs below the second: JSON prefixes are made per batch.
            return f'{prefix}"ts": {ts!r}, "text": '
        prefix = self._head(id, "!" if kind == STDERR else " ", self._hhmmss(ts)[1])
        self._prefixes[key] = (second, prefix)
        return prefix

    def lines(self, batch: LogBatch) -> str:
        """The lines of a batch, formatted, each ending in a newline: one join."""
        lines = batch.lines
        if not lines:
            return ""
        prefix = self._prefix(batch.id, batch.type, batch.ts)
        # One f-string around one join: the text is copied once more, not twice.
        if self.json_lines:
            body = ("}\n" + prefix).join(map(_json_str, lines))
            return f"{prefix}{body}}}\n"
        body = ("\n" + prefix).join(lines)
        return f"{prefix}{body}\n"

    def state(self, info: ProcessInfo, ts: float) -> str:
        """A state change as a line ("" when not worth one), or as JSON."""
        previous = self._previous.get(info.id)
        self._previous[info.id] = info.state
        if self.json_lines:
            return json.dumps(state_dict(info, ts)) + "\n"
        text = describe_state(info, previous)
        if text is None:
            return ""
        if not self.prefix:
            return f"{info.id}: {text}\n"
        head = self._head(info.id, " ", self._hhmmss(ts)[1])
        if self.colour:
            colour = self._colours.get(info.id, "0")
            return f"{head}\x1b[{colour}m{_BOLD}{text}{_RESET}\n"
        return f"{head}{text}\n"
