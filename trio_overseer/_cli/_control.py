"""The control socket of ``trio-overseer start``: a Unix socket for other terminals.

Protocol: the client sends one JSON object per line, ``{"cmd": "status"}``;
the server answers each with one or more JSON lines.  The last line of an
answer carries ``"ok"``: ``{"ok": true, ...}`` or ``{"ok": false, "error":
"..."}``; ``logs`` sends ``{"kind": "log", ...}`` lines before it.  Commands:

    {"cmd": "status"}
    {"cmd": "stop", "id": "web"}            {"cmd": "stop", "all": true}
    {"cmd": "restart", "id": "web"}
    {"cmd": "signal", "id": "web", "signal": "USR1"}   (a name or a number)
    {"cmd": "logs", "id": "web" | null, "lines": 100 | null, "follow": false}
    {"cmd": "start", "ids": ["web"]}        (procs that ended: run them again)
    {"cmd": "reload"}                       (re-read the config file)

``stop``, ``restart``, ``start`` and ``signal`` take ``"ids"``, a list of
ids, types (``web`` for ``web.1``, ``web.2``), groups (``GROUP:*``) or
patterns (``web.*``), instead of ``"id"``; the answer then has ``"procs"``.

Safety: the socket file is created mode 0600 and, on Linux, a peer of
another uid is refused (SO_PEERCRED); a socket file of another user is
never used or replaced.  A request is read with a bounded buffer: a line
longer than `MAX_REQUEST` bytes gets an error and the connection is closed.
Any request, however malformed (nested 50,000 deep, no newline before EOF,
odd values), gets exactly one answer and changes nothing it does not ask
for.  Blank lines are skipped in bulk.  Every connection is its own task
and every send has a timeout, so a stuck client only ever holds up itself;
at `MAX_CLIENTS` connections, a new one evicts the connection that has
waited longest on its client (for a request, or to take an answer), so
idle connections never lock anyone out.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import socket
import stat
import struct
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import trio

from .. import _signals
from .._errors import UnknownProcError
from .._records import LogBatch
from .._text import shorten
from ._printer import log_json

if TYPE_CHECKING:
    from ._dispatch import Follower

__all__ = [
    "MAX_REQUEST",
    "ControlServer",
    "ControlSocketError",
    "Controlled",
    "LogSource",
    "RequestError",
    "bind_control_socket",
    "parse_signal",
]

logger = logging.getLogger("trio_overseer.cli")

MAX_REQUEST = 64 * 1024  # bytes in one request line
MAX_CLIENTS = 64  # connections served at once; a new one evicts the longest waiting on its client
SEND_TIMEOUT = 5.0  # seconds a client may take to accept one reply
IDLE_TIMEOUT = 300.0  # seconds a connection may wait before sending a request
_BACKLOG = 128  # connections waiting to be accepted: a flood of them must not refuse the owner
_BLANK = re.compile(rb"\s*")  # blank lines and the spaces before a request
_SHUTDOWN_GRACE = 1.0  # seconds for answers in flight when the instance ends


class ControlSocketError(Exception):
    """The control socket cannot be set up; the message says why and what to do."""


class RequestError(Exception):
    """A request cannot be served; the message goes back to the client."""


def parse_signal(value: object) -> int:
    """A signal given as a number or a name (``TERM``, ``SIGTERM``, ``usr1``)."""
    try:
        return _signals.parse_signal(value)
    except ValueError as exc:
        raise RequestError(str(exc)) from None


# -- what the server serves -----------------------------------------------------


class LogSource(Protocol):
    """The recent lines of the procs, and their new ones as they come (`_dispatch.Dispatcher`)."""

    def recent(self, id: str | None, count: int | None = None) -> list[LogBatch]:
        """The batches of the last `count` lines kept of `id` (of every proc when None)."""

    def follow(self, id: str | None) -> Follower:
        """Start forwarding new lines of `id` (every proc when None)."""

    def unfollow(self, follower: Follower) -> None:
        """Stop forwarding to `follower` and close its channel."""


class Controlled(Protocol):
    """What the control socket serves: a running instance (`_start.Instance`).

    Each request maps to one of these; `RequestError` (a bad id, a proc that
    is not running, an instance shutting down) goes back to the client.
    """

    @property
    def dispatcher(self) -> LogSource:
        """Where ``logs`` reads lines."""

    def rows(self) -> list[dict[str, Any]]:
        """Every proc's state, for ``status``."""

    def check_id(self, id: str) -> object:
        """Raise `RequestError` unless `id` is a proc."""

    def resolve(self, names: Sequence[str]) -> list[str]:
        """The ids that ids, types, ``GROUP:*`` and patterns address."""

    async def stop(self, id: str) -> dict[str, Any]:
        """Stop `id` for good and wait until it has ended."""

    async def stop_many(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Stop each of `ids` and wait until all have ended."""

    async def stop_all(self) -> list[dict[str, Any]]:
        """Stop every proc (the instance then ends) and wait."""

    async def restart(self, id: str) -> dict[str, Any]:
        """Stop `id` if it runs, start it again."""

    async def restart_many(
        self, ids: Sequence[str], *, only_ended: bool = False
    ) -> list[dict[str, Any]]:
        """Restart each of `ids` (with `only_ended`: start those that ended)."""

    def send_signal(self, id: str, sig: int) -> dict[str, Any]:
        """Send `sig` to the process group of `id`."""

    def signal_many(self, ids: Sequence[str], sig: int) -> list[dict[str, Any]]:
        """Send `sig` to each of `ids`."""

    async def reload(self) -> dict[str, Any]:
        """Re-read the config and apply what changed."""


# -- the socket file ----------------------------------------------------------


def bind_control_socket(path: str) -> tuple[socket.socket, tuple[int, int]]:
    """Bind and listen on `path` (mode 0600); return the socket and the file's identity.

    A leftover socket file nobody listens on (a crashed run) is replaced; a
    socket someone answers on is never taken over.

    Raises:
      ControlSocketError: the path is in use or unusable.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ControlSocketError(f"cannot use control socket {path}: {exc.strerror}") from None
    else:
        if not stat.S_ISSOCK(info.st_mode):
            raise ControlSocketError(
                f"{path} exists and is not a socket; remove it or choose another "
                "path with --socket PATH"
            )
        if info.st_uid != os.getuid():  # never talk to, nor replace, another user's socket
            raise ControlSocketError(
                f"control socket {path} belongs to another user (uid {info.st_uid}); "
                "choose another path with --socket PATH"
            )
        if _answers(path):
            raise ControlSocketError(
                f"another trio-overseer is running with control socket {path}; "
                "stop it first (trio-overseer stop --all) or use --socket PATH"
            )
        logger.warning(
            "replacing stale control socket %s (left by a run that ended abruptly)", path
        )
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ControlSocketError(
                f"cannot replace the stale control socket {path}: {exc.strerror}; "
                "remove it or choose another path with --socket PATH"
            ) from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o177)  # created 0600: never readable by others, not even briefly
        try:
            sock.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        sock.listen(_BACKLOG)
        created = os.stat(path)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ControlSocketError(
                f"control socket {path} was just taken by another process; use --socket PATH"
            ) from None
        raise ControlSocketError(f"cannot listen on control socket {path}: {exc}") from None
    return sock, (created.st_dev, created.st_ino)


def _answers(path: str) -> bool:
    """Whether a process listens on the socket file `path`."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return False  # stale: the socket file outlived its listener
    except OSError:
        return True  # e.g. a full backlog (timeout) or no permission: someone is there
    finally:
        probe.close()
    return True


def _peer_uid(sock: trio.socket.SocketType) -> int | None:
    """The uid of the peer, where the platform tells; None elsewhere."""
    if sys.platform.startswith("linux"):
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)  # struct ucred
        return int(uid)
    # Other platforms: Python exposes neither getpeereid() nor LOCAL_PEERCRED's
    # struct portably; the 0600 mode of the socket file is the guard there.
    return None


# -- the server ---------------------------------------------------------------


class ControlServer:
    """Serves control requests for a `Controlled` instance; see the module docs."""

    def __init__(self, sock: socket.socket, identity: tuple[int, int], path: str) -> None:
        self.path = path
        self._sock = sock
        self._identity = identity
        self._instance: Controlled | None = None
        self._accepting = trio.CancelScope()
        self._connections: trio.Nursery | None = None
        self._handlers = 0
        self._clients: set[_Client] = set()  # connections counted against MAX_CLIENTS
        self._idle = trio.Event()
        self._idle.set()

    @classmethod
    def bind(cls, path: str) -> ControlServer:
        """Listen on `path`; see `bind_control_socket`."""
        sock, identity = bind_control_socket(path)
        return cls(sock, identity, path)

    def close(self) -> None:
        """Close the socket and remove its file (only if it is still ours)."""
        self._sock.close()
        with contextlib.suppress(OSError):
            info = os.stat(self.path)
            if (info.st_dev, info.st_ino) == self._identity:
                os.unlink(self.path)

    async def serve(
        self,
        instance: Controlled,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept and serve connections until cancelled."""
        self._instance = instance
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(self._sock))
        async with trio.open_nursery() as nursery:
            self._connections = nursery
            task_status.started()
            with self._accepting:
                while True:
                    try:
                        stream = await listener.accept()
                    except OSError as exc:  # e.g. out of file descriptors: wait, go on
                        logger.warning("control socket: accept failed: %s", exc)
                        await trio.sleep(0.1)
                        continue
                    nursery.start_soon(self._handle, stream)

    async def shutdown(self) -> None:
        """Stop accepting; give answers in flight a moment, then drop every client.

        Cancellation: safe.
        """
        self._accepting.cancel()
        with trio.move_on_after(_SHUTDOWN_GRACE):
            await self._idle.wait()
        if self._connections is not None:
            self._connections.cancel_scope.cancel()

    # -- one connection -------------------------------------------------------

    async def _handle(self, stream: trio.SocketStream) -> None:
        self._handlers += 1
        self._idle = trio.Event() if self._handlers == 1 else self._idle
        client = _Client(stream)
        try:
            with client.scope:
                async with client:
                    await self._converse(client)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away
        finally:
            self._clients.discard(client)
            self._handlers -= 1
            if not self._handlers:
                self._idle.set()

    def _make_room(self) -> bool:
        """At `MAX_CLIENTS`, end the connection that has waited longest on its client.

        False when every connection is busy with the instance (a stop, a
        restart, a ``logs -f``): the new one is then turned away.
        """
        if len(self._clients) < MAX_CLIENTS:
            return True
        waiting = [c for c in self._clients if c.waiting_since is not None]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c.waiting_since or 0.0)
        self._clients.discard(oldest)
        oldest.scope.cancel()
        return True

    async def _converse(self, client: _Client) -> None:
        uid = _peer_uid(client.stream.socket)
        if uid is not None and uid != os.getuid():
            logger.warning("control socket: refused a connection from uid %d", uid)
            await _send(client, _error(f"permission denied: uid {uid} is not the owner"))
            return
        if not self._make_room():
            await _send(client, _error(f"busy: {MAX_CLIENTS} clients are being served"))
            return
        self._clients.add(client)
        while True:
            line: bytes | None = None
            with trio.move_on_after(IDLE_TIMEOUT):
                line = await client.read_line()
            if line is None:  # end of input, or idle for too long
                return
            if len(line) > MAX_REQUEST:
                await _send(
                    client, _error(f"request too long: the limit is {MAX_REQUEST} bytes per line")
                )
                return
            if not await self._serve(client, line):
                return

    async def _serve(self, client: _Client, line: bytes) -> bool:
        """Answer one request; False when the connection should end."""
        try:
            request = json.loads(line)
        except ValueError:  # also: a number of more than 4300 digits
            return await _send(client, _error("malformed request: not a line of JSON"))
        except RecursionError:
            return await _send(client, _error("malformed request: nested too deeply"))
        if not isinstance(request, dict):
            return await _send(
                client, _error('malformed request: expected a JSON object like {"cmd": "status"}')
            )
        command = request.get("cmd")
        handlers: dict[str, Callable[[_Client, dict[str, Any]], Awaitable[bool]]] = {
            "status": self._status,
            "stop": self._stop,
            "restart": self._restart,
            "signal": self._signal,
            "logs": self._logs,
            "start": self._start,
            "reload": self._reload,
        }
        handler = handlers.get(command) if isinstance(command, str) else None
        if handler is None:
            known = ", ".join(handlers)
            return await _send(
                client, _error(f"unknown command {shorten(command)} (known: {known})")
            )
        try:
            return await handler(client, request)
        except RequestError as exc:
            return await _send(client, _error(str(exc)))
        except UnknownProcError as exc:
            return await _send(client, _error(str(exc)))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False  # the client went away while its request was served
        except Exception as exc:  # a bug: answer it, never take the instance down
            logger.exception("control socket: %s request failed", command)
            return await _send(client, _error(f"internal error: {exc!r}"))

    @property
    def instance(self) -> Controlled:
        assert self._instance is not None
        return self._instance

    async def _status(self, client: _Client, request: dict[str, Any]) -> bool:
        return await _send(client, {"ok": True, "procs": self.instance.rows()})

    async def _stop(self, client: _Client, request: dict[str, Any]) -> bool:
        if request.get("all") is True:
            infos = await self.instance.stop_all()
            return await _send(client, {"ok": True, "procs": infos})
        if "ids" in request:
            infos = await self.instance.stop_many(self._ids(request))
            return await _send(client, {"ok": True, "procs": infos})
        info = await self.instance.stop(_id(request))
        return await _send(client, {"ok": True, "proc": info})

    async def _restart(self, client: _Client, request: dict[str, Any]) -> bool:
        if "ids" in request:
            infos = await self.instance.restart_many(self._ids(request))
            return await _send(client, {"ok": True, "procs": infos})
        info = await self.instance.restart(_id(request))
        return await _send(client, {"ok": True, "proc": info})

    async def _start(self, client: _Client, request: dict[str, Any]) -> bool:
        ids = self._ids(request) if "ids" in request else [_id(request)]
        infos = await self.instance.restart_many(ids, only_ended=True)
        return await _send(client, {"ok": True, "procs": infos})

    async def _signal(self, client: _Client, request: dict[str, Any]) -> bool:
        sig = parse_signal(request.get("signal"))
        name = _signals.signal_name(sig)
        if "ids" in request:
            infos = self.instance.signal_many(self._ids(request), sig)
            return await _send(client, {"ok": True, "procs": infos, "signal": name})
        info = self.instance.send_signal(_id(request), sig)
        return await _send(client, {"ok": True, "proc": info, "signal": name})

    async def _reload(self, client: _Client, request: dict[str, Any]) -> bool:
        answer = await self.instance.reload()
        return await _send(client, {"ok": True, **answer})

    def _ids(self, request: dict[str, Any]) -> list[str]:
        """The ids that the request's ``"ids"`` address (see `Instance.resolve`)."""
        names = request.get("ids")
        if (
            not isinstance(names, list)
            or not names
            or not all(isinstance(name, str) and name for name in names)
        ):
            raise RequestError(f"'ids' must be a non-empty list of proc ids, got {shorten(names)}")
        return self.instance.resolve(names)

    async def _logs(self, client: _Client, request: dict[str, Any]) -> bool:
        id = request.get("id")
        if id is not None:
            id = _id(request)
            self.instance.check_id(id)
        count = request.get("lines")
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or count < 0
        ):
            raise RequestError(f"'lines' must be a number >= 0, got {shorten(count)}")
        dispatcher = self.instance.dispatcher
        # Take the recent lines and subscribe in one synchronous stretch:
        # nothing is missed or repeated in between.
        recent = dispatcher.recent(id, count)
        follower = dispatcher.follow(id) if request.get("follow") is True else None
        try:
            if not await _send_lines(client, recent):
                return False
            if follower is not None:
                async with follower.receive:
                    async for batch in follower.receive:
                        if not await _send_lines(client, (batch,)):
                            return False
                if follower.cut_off:
                    return await _send(
                        client, _error("log stream cut off: this client fell too far behind")
                    )
                return await _send(client, {"ok": True, "end": "the instance has stopped"})
            return await _send(client, {"ok": True})
        finally:
            if follower is not None:
                dispatcher.unfollow(follower)


def _id(request: dict[str, Any]) -> str:
    id = request.get("id")
    if not isinstance(id, str) or not id:
        raise RequestError(f"this command needs a proc id ('id'), got {shorten(id)}")
    return id


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


async def _send(client: _Client, message: dict[str, Any]) -> bool:
    """Send one JSON line; False (and the client dropped) if it takes too long."""
    return await _send_text(client, json.dumps(message) + "\n")


async def _send_lines(client: _Client, batches: Iterable[LogBatch]) -> bool:
    text = "".join(map(log_json, batches))
    return await _send_text(client, text) if text else True


async def _send_text(client: _Client, text: str) -> bool:
    with trio.move_on_after(SEND_TIMEOUT):
        await client.send_all(text.encode())
        return True
    logger.warning("control socket: dropped a client that stopped reading")
    await trio.aclose_forcefully(client)
    return False


class _Client(trio.abc.AsyncResource):
    """One connection: its stream, its unread input, and whether it waits on the client."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.scope = trio.CancelScope()  # cancelled to evict it (see _make_room)
        # When it began to wait on the client (for a request, or for it to
        # take an answer); None while busy with the instance.
        self.waiting_since: float | None = None
        self._buffer = bytearray()
        self._eof = False

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def send_all(self, data: bytes) -> None:
        self.waiting_since = trio.current_time()
        try:
            await self.stream.send_all(data)
        finally:
            self.waiting_since = None

    async def read_line(self) -> bytes | None:
        """The next request line (without its newline), at most MAX_REQUEST + 1 bytes of it.

        Blank lines are skipped in bulk.  A longer line is returned cut at
        MAX_REQUEST + 1 bytes: the caller refuses it, and no more than that is
        ever buffered.  At the end of input, what is left is a last line
        (once); then None.
        """
        buffer = self._buffer
        while True:
            blank = _BLANK.match(buffer).end()  # type: ignore[union-attr]  # always matches
            if blank:
                del buffer[:blank]
            end = buffer.find(b"\n", 0, MAX_REQUEST + 1)
            if end >= 0:
                line = bytes(buffer[:end])
                del buffer[: end + 1]
                return line
            if len(buffer) > MAX_REQUEST:
                line = bytes(buffer[: MAX_REQUEST + 1])
                buffer.clear()
                return line
            if self._eof:
                rest = bytes(buffer)  # a request without its newline, answered once
                buffer.clear()
                return rest or None
            self.waiting_since = trio.current_time()
            try:
                data = await self.stream.receive_some(MAX_REQUEST + 1 - len(buffer))
            finally:
                self.waiting_since = None
            if data:
                buffer += data
            else:
                self._eof = True
