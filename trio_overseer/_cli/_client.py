"""The client side of the control socket: ``status``, ``stop``, ``restart``, ``signal``, ``logs``.

Plain blocking sockets: a client does one thing and waits for the answer.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from .._records import STDERR, STDOUT, LogBatch
from ._printer import Printer, want_colour

__all__ = ["ClientError", "format_status", "request", "summary"]

_CONNECT_TIMEOUT = 5.0


class ClientError(Exception):
    """The instance could not be reached, or refused the request."""


def request(path: str, message: dict[str, Any], *, timeout: float | None = None) -> Iterator[Any]:
    """Send one request to the instance listening on `path`; yield the answer's lines.

    The last line yielded is the one carrying ``"ok"``; an error answer
    raises `ClientError` instead.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(_CONNECT_TIMEOUT)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ClientError(
                f"no trio-overseer is running here (nothing listens on {path}); "
                "start one with 'trio-overseer start', or pass --socket PATH"
            ) from None
        except OSError as exc:
            raise ClientError(f"cannot connect to {path}: {exc.strerror or exc}") from None
        sock.settimeout(timeout)
        sock.sendall(json.dumps(message).encode() + b"\n")
        with sock.makefile("rb") as replies:
            for raw in replies:
                answer = json.loads(raw)
                if isinstance(answer, dict) and "ok" in answer:
                    if not answer["ok"]:
                        raise ClientError(str(answer.get("error", "request failed")))
                    yield answer
                    return
                yield answer
        raise ClientError("the instance closed the connection without an answer")
    except TimeoutError:
        raise ClientError(f"no answer from {path} in time") from None
    finally:
        sock.close()


def answer(path: str, message: dict[str, Any], *, timeout: float | None = None) -> Any:
    """The final line of the answer to a request that sends only that."""
    *_, final = request(path, message, timeout=timeout)
    return final


def summary(row: dict[str, Any]) -> str:
    """A proc's state in a few words, from its JSON form."""
    state = row.get("state")
    if state == "running":
        return f"running (pid {row.get('PID')})"
    if state == "finished":
        return f"exited {row.get('exitCode')}"
    if state == "interrupted":
        return f"stopped ({row.get('error')})"
    if state == "fatal":
        return f"fatal: {row.get('error')}"
    if state == "initial":
        return "not started"
    return str(state)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def format_status(rows: list[dict[str, Any]]) -> str:
    """The `status` table: id, group, state, pid, uptime, restarts, exit code."""
    header = ("ID", "GROUP", "STATE", "PID", "UPTIME", "RESTARTS", "EXIT")
    table = [header]
    for row in rows:
        live = row.get("state") in ("starting", "running", "stopping")
        final = row.get("state") in ("finished", "interrupted", "fatal")
        restarts = str(row.get("restarts", 0))
        if row.get("retryTimes") == -1:  # no limit
            restarts += "/forever"
        elif row.get("retryTimes"):
            restarts += f"/{row['retryTimes']}"
        exit_code = str(row.get("exitCode")) if final else "-"
        if final and row.get("error") and row.get("state") != "finished":
            exit_code += f" ({row['error']})"
        state = str(row.get("state"))
        if final and row.get("restartIn") is not None:
            state += f", restart in {row['restartIn']:.1f}s"
        elif final and row.get("gaveUp"):
            state += ", gave up"
        elif row.get("waitingFor"):
            state = f"waiting for {', '.join(row['waitingFor'])}"
        table.append(
            (
                str(row.get("id")),
                str(row.get("group") or "-"),
                state,
                str(row.get("PID")) if live and row.get("PID") else "-",
                _duration(row.get("uptime")),
                restarts,
                exit_code,
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header) - 1)]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False))
        + "  "
        + line[-1]
        + "\n"
        for line in table
    )


def log_batch(data: dict[str, Any]) -> LogBatch:
    """A line sent by `logs`, back as a `LogBatch` of one line."""
    kind = STDERR if data.get("stream") == "stderr" else STDOUT
    text = str(data.get("text"))
    return LogBatch(str(data.get("id")), kind, float(data.get("ts", 0.0)), (text,))


def print_logs(
    path: str,
    message: dict[str, Any],
    ids: list[str],
    *,
    out: TextIO = sys.stdout,
    json_lines: bool = False,
    colour: str = "auto",
) -> None:
    """Print the lines answering a `logs` request (as they come with ``follow``)."""
    follow = message.get("follow") is True
    printer = Printer(ids, colour=want_colour(out, choice=colour) and not json_lines)
    for line in request(path, message):
        if "ok" in line:
            break
        if json_lines:
            out.write(json.dumps(line) + "\n")
        else:
            out.write(printer.lines(log_batch(line)))
        if follow:
            out.flush()
    out.flush()


def is_running(path: str) -> bool:
    """Whether an instance answers on the control socket `path`."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(_CONNECT_TIMEOUT)
    try:
        sock.connect(path)
    except OSError:
        return False
    finally:
        sock.close()
    return True
