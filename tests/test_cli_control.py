"""The control socket under attack: any request gets one answer and changes nothing (issue 10).

Items 2 (a deeply nested request), 3 (a request without a newline, then
EOF), 10 (another uid's stale socket), 11 (odd signal values, a client gone
mid-request) and 12 (idle connections, floods of blank lines).  The
installed command runs in a temporary directory; the tests talk to its
socket directly, as ``nc -U`` would.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from cli_children import (
    IGNORE_SIGTERM,
    INSTALLED,
    SLEEP_FOREVER,
    T,
    Tool,
    ask,
    request,
    run_tool,
    wait_for_socket,
    write_yaml,
)

from trio_overseer._cli._control import Controlled, ControlServer, RequestError
from trio_overseer._cli._dispatch import Follower
from trio_overseer._records import STDOUT, LogBatch

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the tests watch processes through /proc"
)

SOCK = ".trio-overseer.sock"


async def error_of(sock: Path, raw: bytes) -> str:
    answers = await ask(sock, raw)
    assert len(answers) == 1, answers
    assert answers[0]["ok"] is False, answers
    return str(answers[0]["error"])


async def status(sock: Path) -> list[dict[str, Any]]:
    reply = await request(sock, {"cmd": "status"})
    assert reply["ok"], reply
    return list(reply["procs"])


def no_traceback(tool: Tool) -> None:
    text = tool.err.text
    assert "Traceback" not in text, text
    assert "internal error" not in text, text


@asynccontextmanager
async def instance(
    tmp_path: Path, procs: dict[str, Any] | None = None
) -> AsyncIterator[tuple[Tool, Path]]:
    """The installed CLI running `procs` (by default one sleeper, "web") and its
    control socket, once every proc is ready (the server answers before the
    procs start).  At the end it must stop on a request, with status 0 and no
    traceback."""
    write_yaml(tmp_path, procs or {"web": {"cmd": SLEEP_FOREVER}})
    sock = tmp_path / SOCK
    async with run_tool(tmp_path, "start", tool=INSTALLED) as tool:
        await wait_for_socket(sock)
        for id in procs or ["web"]:
            await tool.out.wait_for(rf"{id} +\| ready")
        yield tool, sock
        await request(sock, {"cmd": "stop", "all": True})
        assert await tool.wait() == 0
    no_traceback(tool)


async def test_deeply_nested_request_gets_an_error(tmp_path: Path) -> None:
    async with instance(tmp_path) as (_tool, sock):
        [before] = await status(sock)
        for raw in (b"[" * 50000 + b"\n", b'{"cmd": ' * 7000 + b"\n"):
            assert "malformed request" in await error_of(sock, raw)
        [after] = await status(sock)
        assert (after["state"], after["PID"]) == ("running", before["PID"])


async def test_request_without_newline_is_answered_once(tmp_path: Path) -> None:
    async with instance(tmp_path) as (tool, sock):
        [before] = await status(sock)
        with trio.fail_after(T):
            stream = await trio.open_unix_socket(os.fspath(sock))
            async with stream:
                await stream.send_all(b'{"cmd": "restart", "id": "web"}')
                await stream.send_eof()  # what `printf ... | nc -NU` does
                received = b""
                while data := await stream.receive_some():  # the server ends the connection
                    received += data
        answers = [json.loads(line) for line in received.splitlines()]
        assert len(answers) == 1, answers
        assert answers[0]["ok"], answers
        new_pid = answers[0]["proc"]["PID"]
        assert new_pid != before["PID"]
        [after] = await status(sock)
        assert (after["state"], after["PID"], after["restarts"]) == ("running", new_pid, 0)
    restarts = [line for line in tool.out.lines if "web" in line and "running (pid" in line]
    assert len(restarts) == 2, tool.out.text  # the first run and one restart


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"\\u00b2"', "unknown signal"),  # "²" is a digit to str.isdigit(), not to int()
        ('"' + "1" * 5000 + '"', "no signal number"),
        ("1" * 4000, "no signal number"),
        ("1" * 5000, "malformed request"),  # more digits than json reads
        ('"\\u0661"', "unknown signal"),  # an Arabic-Indic one
    ],
    ids=["superscript", "digits-string", "digits-number", "too-many-digits", "arabic-indic"],
)
async def test_odd_signal_values_get_clear_errors(
    tmp_path: Path, value: str, expected: str
) -> None:
    async with instance(tmp_path) as (_tool, sock):
        raw = b'{"cmd": "signal", "id": "web", "signal": ' + value.encode() + b"}\n"
        error = await error_of(sock, raw)
        assert expected in error, error
        assert len(error) < 300, error
        [after] = await status(sock)
        assert after["state"] == "running"


async def test_client_gone_while_its_stop_is_served(tmp_path: Path) -> None:
    procs = {"slow": {"cmd": IGNORE_SIGTERM, "stop_timeout": 0.5}, "web": {"cmd": SLEEP_FOREVER}}
    async with instance(tmp_path, procs) as (tool, sock):
        for message in ({"cmd": "stop", "id": "slow"}, {"cmd": "restart", "id": "web"}):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
                gone.connect(os.fspath(sock))
                gone.sendall(json.dumps(message).encode() + b"\n")
            # Gone before the answer: the stop (or restart) still happens.
        await tool.out.wait_for(r"slow +\| killed \(signal: SIGKILL\)|slow +\| stopped")
        await tool.out.wait_for(r"web +\| running", guard=T)
        rows = {row["id"]: row for row in await status(sock)}
        assert rows["slow"]["state"] in ("interrupted", "finished")


async def test_idle_connections_do_not_lock_the_owner_out(tmp_path: Path) -> None:
    async with instance(tmp_path) as (_tool, sock):
        silent = []
        try:
            for index in range(100):  # more than the server serves at once
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                silent.append(conn)
                conn.connect(os.fspath(sock))
                if index % 2:
                    with contextlib.suppress(OSError):  # evicted already
                        conn.sendall(b'{"cmd": "sta')  # half a request, then nothing
            for _ in range(5):
                assert (await status(sock))[0]["state"] == "running"
        finally:
            for conn in silent:
                conn.close()


async def test_blank_lines_are_cheap(tmp_path: Path) -> None:
    async with instance(tmp_path) as (_tool, sock):
        # 8 MB of blank lines, then a request: was quadratic (minutes of CPU).
        answers = await ask(sock, b"\n" * (8 << 20) + b'{"cmd": "status"}\n')
        assert len(answers) == 1, answers
        assert answers[0]["ok"], answers


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a socket of another uid")
async def test_another_users_socket_is_never_taken(tmp_path: Path) -> None:
    write_yaml(tmp_path, {"web": {"cmd": SLEEP_FOREVER}})
    public = Path(tempfile.mkdtemp(prefix="trio-overseer-test-"))
    try:
        public.chmod(0o1777)  # sticky, as /tmp: only the owner may remove the file
        path = public / "control.sock"
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(os.fspath(path))
        stale.close()  # nobody listens: as after a crash
        os.chown(path, 65534, 65534)
        async with run_tool(tmp_path, "start", "--socket", os.fspath(path), tool=INSTALLED) as tool:
            assert await tool.wait() == 2
        assert tool.out.text == ""
        assert f"control socket {path} belongs to another user (uid 65534)" in tool.err.text
        no_traceback(tool)
        info = os.lstat(path)
        assert stat.S_ISSOCK(info.st_mode)
        assert info.st_uid == 65534
    finally:
        for child in public.iterdir():
            child.unlink()
        public.rmdir()


async def test_long_values_in_requests_are_shown_short(tmp_path: Path) -> None:
    async with instance(tmp_path) as (_tool, sock):
        for raw in (
            b'{"cmd": "logs", "id": "web", "lines": -' + b"1" * 4000 + b"}\n",
            b'{"cmd": "stop", "id": [' + b"1, " * 10000 + b"1]}\n",
            b'{"cmd": "stop", "ids": "' + b"x" * 60000 + b'"}\n',
            b'{"cmd": "' + b"y" * 60000 + b'"}\n',
        ):
            error = await error_of(sock, raw)
            assert len(error) < 300, error


# --- the protocol, in-process: the server against a fake instance ------------------


class FakeLogs:
    """A `LogSource`: two recent lines of "web"; followers get what `feed` sends."""

    def __init__(self) -> None:
        self.followers: list[Follower] = []

    def recent(self, id: str | None, count: int | None = None) -> list[LogBatch]:
        lines = ("one", "two")[-count:] if count else ("one", "two")
        return [LogBatch("web", STDOUT, 0.0, lines)] if id in (None, "web") else []

    def follow(self, id: str | None) -> Follower:
        follower = Follower(id)
        self.followers.append(follower)
        return follower

    def unfollow(self, follower: Follower) -> None:
        follower.send.close()


class FakeInstance:
    """A `Controlled` with one proc "web": records what it was asked."""

    def __init__(self) -> None:
        self.dispatcher = FakeLogs()
        self.asked: list[tuple[Any, ...]] = []

    def row(self, id: str) -> dict[str, Any]:
        return {"id": id, "state": "running", "PID": 42}

    def rows(self) -> list[dict[str, Any]]:
        return [self.row("web")]

    def check_id(self, id: str) -> object:
        if id != "web":
            raise RequestError(f"no proc {id!r} (known: web)")
        return id

    def resolve(self, names: Sequence[str]) -> list[str]:
        for name in names:
            self.check_id(name.removesuffix(".*"))
        return ["web"]

    async def stop(self, id: str) -> dict[str, Any]:
        self.asked.append(("stop", self.check_id(id)))
        return self.row(id)

    async def stop_many(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        self.asked.append(("stop_many", *ids))
        return [self.row(id) for id in ids]

    async def stop_all(self) -> list[dict[str, Any]]:
        self.asked.append(("stop_all",))
        return self.rows()

    async def restart(self, id: str) -> dict[str, Any]:
        self.asked.append(("restart", self.check_id(id)))
        return self.row(id)

    async def restart_many(
        self, ids: Sequence[str], *, only_ended: bool = False
    ) -> list[dict[str, Any]]:
        self.asked.append(("start" if only_ended else "restart_many", *ids))
        return [self.row(id) for id in ids]

    def send_signal(self, id: str, sig: int) -> dict[str, Any]:
        self.asked.append(("signal", self.check_id(id), sig))
        return self.row(id)

    def signal_many(self, ids: Sequence[str], sig: int) -> list[dict[str, Any]]:
        self.asked.append(("signal_many", *ids, sig))
        return [self.row(id) for id in ids]

    async def reload(self) -> dict[str, Any]:
        raise RequestError("this instance cannot reload (it was not started from a file)")


async def test_control_protocol_in_process(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    server = ControlServer.bind(os.fspath(path))
    instance = FakeInstance()
    controlled: Controlled = instance  # the fake is what the server serves
    try:
        with trio.fail_after(T):
            async with trio.open_nursery() as nursery:
                await nursery.start(server.serve, controlled)

                async def answer(message: dict[str, Any]) -> Any:
                    return await request(path, message)

                assert (await answer({"cmd": "status"}))["procs"] == instance.rows()
                assert (await answer({"cmd": "stop", "id": "web"}))["proc"]["id"] == "web"
                await answer({"cmd": "stop", "ids": ["web.*"]})
                await answer({"cmd": "stop", "all": True})
                await answer({"cmd": "restart", "id": "web"})
                await answer({"cmd": "start", "ids": ["web"]})
                reply = await answer({"cmd": "signal", "id": "web", "signal": "usr1"})
                assert reply["signal"] == "SIGUSR1"
                assert "no proc 'db'" in (await answer({"cmd": "stop", "id": "db"}))["error"]
                assert "cannot reload" in (await answer({"cmd": "reload"}))["error"]
                assert (
                    "signal name or number"
                    in (await answer({"cmd": "signal", "id": "web", "signal": 1.5}))["error"]
                )
                logs = await ask(path, b'{"cmd": "logs", "id": "web", "lines": 1}\n')
                assert [line.get("text") for line in logs] == ["two", None]
                assert logs[-1] == {"ok": True}
                await server.shutdown()
                nursery.cancel_scope.cancel()
    finally:
        server.close()
    assert instance.asked == [
        ("stop", "web"),
        ("stop_many", "web"),
        ("stop_all",),
        ("restart", "web"),
        ("start", "web"),
        ("signal", "web", signal.SIGUSR1),
    ]
    assert not path.exists()  # the server removed its socket file
