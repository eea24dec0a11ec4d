"""Frozen value records: `Status` of a run, `ProcessInfo` of a proc, `LogMsg`,
`LogBatch`, `OverseerStatistics`."""

from __future__ import annotations

import datetime as _dt
import gc
import math
from collections import deque as consume
from collections.abc import Callable, Iterable, Iterator
from itertools import repeat
from typing import Any

import attrs

from ._state import State

STDOUT = 1
"""`LogMsg.type` of a line the process wrote to its standard output."""
STDERR = 2
"""`LogMsg.type` of a line the process wrote to its standard error."""

_GO_ZERO_TIME = "0001-01-01T00:00:00Z"


def rfc3339(ts: float) -> str:
    """Unix seconds as an RFC 3339 UTC string (Go's zero time for 0.0)."""
    if not ts:
        return _GO_ZERO_TIME
    stamp = _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


@attrs.frozen
class Status:
    """A snapshot of one run of a `Cmd`."""

    cmd: str
    """The executable's name, as given to `Cmd`."""
    pid: int = 0
    """The process id; 0 before start."""
    exit: int = -1
    """The return code (negative signal number when signalled); -1 until the end."""
    error: str | None = None
    """None for a normal exit; ``"signal: SIGTERM"`` when signalled; why it could not start."""
    start_ts: float = 0.0
    """When the process started, Unix seconds; 0.0 if it did not."""
    stop_ts: float = 0.0
    """When the run ended, Unix seconds; 0.0 until then."""
    runtime: float = 0.0
    """Seconds from start to end, live while running."""
    stdout: tuple[str, ...] = ()
    """Every stdout line so far, when the Cmd is buffered."""
    stderr: tuple[str, ...] = ()
    """Every stderr line so far, when the Cmd is buffered."""


@attrs.frozen
class ProcessInfo:
    """A snapshot of a supervised proc, as published to `Overseer.watch_state`."""

    id: str
    """The proc id given to `Overseer.add`."""
    group: str
    """The proc's group ("" for none)."""
    cmd: str
    """The command line, shell-quoted."""
    dir: str
    """The working directory ("" for the parent's)."""
    pid: int
    """The process id of the current run; 0 before start."""
    state: State
    """The state of the current run."""
    exit_code: int
    """The return code of the current run; -1 until it ends."""
    error: str | None
    """Why the current run ended abnormally or could not start."""
    start_time: float
    """When the current run started, Unix seconds; 0.0 if it did not."""
    delay_start: float
    """Seconds waited before each start."""
    retry_times: float
    """How many restarts are allowed (``math.inf``: no limit); 0 after `stop()` until
    the next start."""
    restarts: int = 0
    """Restarts counted against `retry_times` in the current supervision: since it
    began, or since the last run that stayed up `reset_after` seconds (extension)."""
    restart_in: float | None = None
    """On a final state: seconds until the scheduled restart; None when none follows."""
    gave_up: bool = False
    """On a final state: a restart was due but `retry_times` restarts were spent."""
    waiting_for: tuple[str, ...] = ()
    """The procs it requires that are not ready yet, while its start waits for them."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict, with the keys of the original Go overseer.

        ``retryTimes`` is -1 for no limit (``math.inf``): JSON has no infinity.
        """
        return {
            "id": self.id,
            "group": self.group,
            "cmd": self.cmd,
            "dir": self.dir,
            "PID": self.pid,
            "state": self.state.value,
            "exitCode": self.exit_code,
            "error": self.error,
            "startTime": rfc3339(self.start_time),
            "delayStart": round(self.delay_start * 1000),
            "retryTimes": -1 if math.isinf(self.retry_times) else int(self.retry_times),
        }


ProcessJSON = ProcessInfo


def restart_count(info: ProcessInfo) -> str:
    """``"k/n"`` for the restart that follows `info` (``"k/forever"`` without a limit)."""
    limit = "forever" if math.isinf(info.retry_times) else f"{info.retry_times:g}"
    return f"{info.restarts + 1}/{limit}"


@attrs.frozen(weakref_slot=False)
class LogMsg:
    """One line of output of a supervised proc."""

    id: str
    """The proc that wrote it."""
    type: int
    """`STDOUT` or `STDERR`."""
    text: str
    """The line, without its line ending."""
    ts: float
    """When it was read, Unix seconds."""


def _as_lines(lines: Iterable[str]) -> tuple[str, ...]:
    return lines if type(lines) is tuple else tuple(lines)


@attrs.frozen(weakref_slot=False)
class LogBatch:
    """The lines of one proc's stream that arrived together (one read of its pipe).

    `len()` is the number of lines; iterating yields one `LogMsg` per line,
    made only as the iteration reaches it.
    """

    id: str
    """The proc that wrote them."""
    type: int
    """`STDOUT` or `STDERR`."""
    ts: float
    """When they were read, Unix seconds."""
    lines: tuple[str, ...] = attrs.field(converter=_as_lines)
    """The lines, in order, without their line endings."""

    def __len__(self) -> int:
        return len(self.lines)

    def __iter__(self) -> Iterator[LogMsg]:
        n = len(self.lines)
        id, type, ts = repeat(self.id, n), repeat(self.type, n), repeat(self.ts, n)
        return map(_new_log_msg, id, type, self.lines, ts)


def _make_builders() -> tuple[
    Callable[[str, int, str, float], LogMsg], Callable[[LogBatch], list[LogMsg]]
]:
    """Builders of LogMsg that skip the generated __init__ (hot paths).

    A chatty proc yields millions of lines.  The four slots are set directly
    (for a whole batch by C-level `map`s), and while a batch is built the
    cyclic garbage collector is paused (no other code runs then): a batch
    allocates thousands of tracked objects, each allocation can trigger a
    collection, and the collections dominated the cost.
    """
    new = object.__new__
    slots = LogMsg.__dict__
    set_id, set_type, set_text, set_ts = (
        slots[name].__set__ for name in ("id", "type", "text", "ts")
    )

    def one(id: str, type: int, text: str, ts: float) -> LogMsg:
        msg: LogMsg = new(LogMsg)
        set_id(msg, id)
        set_type(msg, type)
        set_text(msg, text)
        set_ts(msg, ts)
        return msg

    def build(batch: LogBatch) -> list[LogMsg]:
        lines = batch.lines
        n = len(lines)
        msgs: list[LogMsg] = list(map(new, repeat(LogMsg, n)))
        consume(map(set_id, msgs, repeat(batch.id, n)), 0)
        consume(map(set_type, msgs, repeat(batch.type, n)), 0)
        consume(map(set_text, msgs, lines), 0)
        consume(map(set_ts, msgs, repeat(batch.ts, n)), 0)
        return msgs

    def log_msgs(batch: LogBatch) -> list[LogMsg]:
        if not gc.isenabled():
            return build(batch)
        gc.disable()
        try:
            return build(batch)
        finally:
            gc.enable()

    return one, log_msgs


_new_log_msg, log_msgs = _make_builders()


@attrs.frozen
class OverseerStatistics:
    """A snapshot of an Overseer's counts (`Overseer.statistics()`), as trio's
    primitives give one (``trio.MemorySendChannel.statistics()``)."""

    procs: int
    """Registered procs."""
    supervised: int
    """Procs being supervised: a run in progress, or a restart pending."""
    running: int
    """Procs whose current run is starting, running or stopping."""
    subscribers: int
    """Channels subscribed to state changes or to lines (`watch_*`, `subscribe_*`)."""
    cut_off_subscribers: int
    """Subscribers cut off so far because they fell a whole buffer behind."""
