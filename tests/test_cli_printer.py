"""The pieces of the command-line tool that need no process: formatting and parsing."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import socket
import time

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from trio_overseer import STDERR, STDOUT, LogBatch, ProcessInfo, State
from trio_overseer._cli._client import format_status, log_batch, summary
from trio_overseer._cli._control import RequestError, _peer_uid, parse_signal
from trio_overseer._cli._printer import (
    Printer,
    describe_state,
    log_dict,
    log_json,
    state_dict,
    want_colour,
)

TS = 1_700_000_000.25
HHMMSS = time.strftime("%H:%M:%S", time.localtime(TS))


def info(id: str = "web", state: State = State.RUNNING, **changes: object) -> ProcessInfo:
    fields: dict[str, object] = {
        "id": id,
        "group": "",
        "cmd": "python3 -m http.server",
        "dir": "",
        "pid": 4242,
        "state": state,
        "exit_code": -1,
        "error": None,
        "start_time": TS,
        "delay_start": 0.0,
        "retry_times": 5,
    }
    fields.update(changes)
    return ProcessInfo(**fields)  # type: ignore[arg-type]


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


# --- human lines --------------------------------------------------------------------


def test_lines_are_prefixed_with_time_and_padded_id() -> None:
    printer = Printer(["web", "worker"])
    batch = LogBatch("web", STDOUT, TS, ("one", "two"))
    assert printer.lines(batch) == f"{HHMMSS} web     | one\n{HHMMSS} web     | two\n"
    assert printer.lines(LogBatch("worker", STDERR, TS, ("oops",))) == f"{HHMMSS} worker !| oops\n"
    assert printer.lines(LogBatch("web", STDOUT, TS, ())) == ""


def test_each_batch_gets_its_own_prefix() -> None:
    printer = Printer(["a", "b"])
    batches = (
        LogBatch("a", STDOUT, TS, ("1",)),
        LogBatch("b", STDOUT, TS, ("2",)),
        LogBatch("b", STDERR, TS, ("3", "4")),
        LogBatch("a", STDOUT, TS, ("", "5")),
    )
    assert "".join(map(printer.lines, batches)) == (
        f"{HHMMSS} a  | 1\n{HHMMSS} b  | 2\n{HHMMSS} b !| 3\n{HHMMSS} b !| 4\n"
        f"{HHMMSS} a  | \n{HHMMSS} a  | 5\n"
    )


def test_the_time_prefix_follows_the_clock() -> None:
    printer = Printer(["a"])
    later = TS + 3600
    printer.lines(LogBatch("a", STDOUT, TS, ("x",)))
    text = printer.lines(LogBatch("a", STDOUT, later, ("y",)))
    assert text == time.strftime("%H:%M:%S", time.localtime(later)) + " a  | y\n"


@pytest.mark.parametrize(
    ("state_info", "previous", "text"),
    [
        (info(), None, "running (pid 4242)"),
        (info(state=State.STOPPING), State.RUNNING, "stopping"),
        (info(state=State.FINISHED, exit_code=0), State.RUNNING, "exited 0"),
        (
            info(state=State.FINISHED, exit_code=1, restarts=1, restart_in=0.4),
            State.RUNNING,
            "exited 1, restart 2/5 in 0.4 s",
        ),
        (
            info(state=State.FINISHED, exit_code=1, restarts=0, restart_in=0.057),
            State.RUNNING,
            "exited 1, restart 1/5 in 0.06 s",
        ),
        (
            info(state=State.INTERRUPTED, exit_code=-15, error="signal: SIGTERM"),
            State.STOPPING,
            "stopped (signal: SIGTERM)",
        ),
        (
            info(state=State.INTERRUPTED, exit_code=-9, error="signal: SIGKILL"),
            State.RUNNING,
            "killed (signal: SIGKILL)",
        ),
        (
            info(state=State.FATAL, pid=0, error="cannot start 'x': No such file or directory"),
            State.STARTING,
            "fatal: cannot start 'x': No such file or directory",
        ),
        (
            info(state=State.FINISHED, exit_code=1, restarts=3, retry_times=math.inf, restart_in=1),
            State.RUNNING,
            "exited 1, restart 4/forever in 1.0 s",
        ),
        (
            info(state=State.FINISHED, exit_code=1, restarts=5, gave_up=True),
            State.RUNNING,
            "exited 1, gave up after 5 restarts",
        ),
        (
            info(state=State.FINISHED, exit_code=0, restarts=1, retry_times=1, gave_up=True),
            State.RUNNING,
            "exited 0, gave up after 1 restart",
        ),
        (info(state=State.STARTING), State.INITIAL, None),
        (
            info(state=State.INITIAL, pid=0, waiting_for=("db", "cache")),
            None,
            "waiting for db, cache",
        ),
        (info(state=State.INITIAL, pid=0), None, None),
        (info(state=State.INITIAL, pid=0), State.INITIAL, "not started (stopped while waiting)"),
    ],
)
def test_state_changes_in_words(
    state_info: ProcessInfo, previous: State | None, text: str | None
) -> None:
    assert describe_state(state_info, previous) == text


def test_state_lines() -> None:
    printer = Printer(["web", "db"])
    assert printer.state(info(state=State.STARTING), TS) == ""
    assert printer.state(info(), TS) == f"{HHMMSS} web  | running (pid 4242)\n"
    printer.state(info(state=State.STOPPING), TS)
    stopped = info(state=State.INTERRUPTED, exit_code=-15, error="signal: SIGTERM")
    assert printer.state(stopped, TS) == f"{HHMMSS} web  | stopped (signal: SIGTERM)\n"


# --- colour ----------------------------------------------------------------------------


def test_colour_per_proc_on_a_terminal() -> None:
    printer = Printer(["a", "b"], colour=True)
    a = printer.lines(LogBatch("a", STDOUT, TS, ("x",)))
    b = printer.lines(LogBatch("b", STDERR, TS, ("y",)))
    assert "\x1b[36ma  " in a
    assert a.endswith("x\n")
    assert "\x1b[33mb " in b
    assert "\x1b[1;31m!" in b
    assert "\x1b[" in printer.state(info("a"), TS)
    # An id the printer was not told about still gets a colour.
    assert "\x1b[" in printer.lines(LogBatch("new", STDOUT, TS, ("z",)))


def test_want_colour() -> None:
    tty, pipe = FakeTTY(), io.StringIO()
    assert want_colour(tty, environ={})
    assert not want_colour(pipe, environ={})
    assert not want_colour(tty, environ={"NO_COLOR": "1"})
    assert want_colour(tty, environ={"NO_COLOR": ""})  # set but empty: no effect (no-color.org)
    assert not want_colour(tty, environ={"TERM": "dumb"})
    assert not want_colour(tty, choice="never", environ={})
    assert want_colour(pipe, choice="always", environ={"NO_COLOR": "1"})


# --- JSON ---------------------------------------------------------------------------------


@given(st.text(), st.sampled_from([STDOUT, STDERR]))
def test_json_lines_round_trip(text: str, kind: int) -> None:
    printer = Printer(["web"], json_lines=True)
    batch = LogBatch("web", kind, TS, (text, text + "!"))
    msgs = list(batch)
    lines = printer.lines(batch).splitlines()
    assert [json.loads(line) for line in lines] == [log_dict(m) for m in msgs]
    assert [log_batch(json.loads(line)) for line in lines] == [
        LogBatch("web", kind, TS, (m.text,)) for m in msgs
    ]
    # What the control socket sends for `logs`: the same, byte for byte as json.dumps.
    assert log_json(batch) == "".join(json.dumps(log_dict(m)) + "\n" for m in msgs)


def test_json_state() -> None:
    printer = Printer(["web"], json_lines=True)
    ended = info(state=State.FINISHED, exit_code=1, restarts=2, restart_in=1.5)
    data = json.loads(printer.state(ended, TS))
    assert data == {
        **ended.to_dict(),
        "kind": "state",
        "restarts": 2,
        "restartIn": 1.5,
        "gaveUp": False,
        "waitingFor": [],
        "ts": TS,
    }
    waiting = state_dict(info(state=State.INITIAL, pid=0, waiting_for=("db", "cache")))
    assert waiting["waitingFor"] == ["db", "cache"]
    assert state_dict(info())["restartIn"] is None
    assert state_dict(info(state=State.FINISHED, gave_up=True))["gaveUp"] is True
    forever = state_dict(info(retry_times=math.inf))
    assert forever["retryTimes"] == -1
    json.dumps(forever, allow_nan=False)


# --- control: parsing and client formatting ------------------------------------------------


def test_parse_signal() -> None:
    for value in ("TERM", "SIGTERM", "term", " sigterm ", 15, "15"):
        assert parse_signal(value) == signal.SIGTERM
    assert parse_signal("usr1") == signal.SIGUSR1
    for bad in ("NOPE", 0, 999, "", None, 1.5, True, [15]):
        with pytest.raises(RequestError):
            parse_signal(bad)


def test_status_table() -> None:
    rows = [
        {**state_dict(info()), "uptime": 3725.0},
        {
            **state_dict(info("db", State.FINISHED, exit_code=1, restarts=1, restart_in=2.0)),
            "uptime": None,
            "group": "data",
        },
        {
            **state_dict(info("x", State.INTERRUPTED, exit_code=-15, error="signal: SIGTERM")),
            "uptime": None,
            "retryTimes": 0,
        },
        {
            **state_dict(info("y", State.FINISHED, exit_code=2, restarts=5, gave_up=True)),
            "uptime": None,
        },
        {**state_dict(info("z", retry_times=math.inf, restarts=7)), "uptime": 1.0},
    ]
    assert format_status(rows).splitlines() == [
        "ID   GROUP  STATE                      PID   UPTIME  RESTARTS   EXIT",
        "web  -      running                    4242  1h02m   0/5        -",
        "db   data   finished, restart in 2.0s  -     -       1/5        1",
        "x    -      interrupted                -     -       0          -15 (signal: SIGTERM)",
        "y    -      finished, gave up          -     -       5/5        2",
        "z    -      running                    4242  1s      7/forever  -",
    ]
    assert summary(rows[0]) == "running (pid 4242)"
    assert summary(rows[1]) == "exited 1"
    assert summary(rows[2]) == "stopped (signal: SIGTERM)"


@pytest.mark.skipif(not hasattr(socket, "SO_PEERCRED"), reason="Linux only")
async def test_peer_uid_is_read_from_the_socket() -> None:
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        assert _peer_uid(trio.socket.from_stdlib_socket(left)) == os.getuid()
