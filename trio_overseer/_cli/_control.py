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
another uid is refused (SO_PEERCRED).  A request is read with a bounded
buffer: a line longer than `MAX_REQUEST` bytes gets an error and the
connection is closed.  Every connection is its own task and every send has
a timeout, so a stuck client only ever holds up itself.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import socket
import stat
import struct
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import trio

from .._errors import UnknownProcError
from .._records import LogBatch
from ._printer import log_json

if TYPE_CHECKING:
    from ._start import Instance

__all__ = [
    "DEFAULT_SOCKET",
    "MAX_REQUEST",
    "ControlServer",
    "ControlSocketError",
    "RequestError",
    "bind_control_socket",
    "parse_signal",
]

logger = logging.getLogger("trio_overseer.cli")

DEFAULT_SOCKET = ".trio-overseer.sock"
MAX_REQUEST = 64 * 1024  # bytes in one request line
MAX_CLIENTS = 64  # connections served at once; more are turned away
SEND_TIMEOUT = 5.0  # seconds a client may take to accept one reply
IDLE_TIMEOUT = 300.0  # seconds a connection may wait before sending a request
_SHUTDOWN_GRACE = 1.0  # seconds for answers in flight when the instance ends


class ControlSocketError(Exception):
    """The control socket cannot be set up; the message says why and what to do."""


class RequestError(Exception):
    """A request cannot be served; the message goes back to the client."""


def parse_signal(value: object) -> int:
    """A signal given as a number or a name (``TERM``, ``SIGTERM``, ``usr1``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    elif isinstance(value, str):
        name = value.strip().upper()
        name = name if name.startswith("SIG") else "SIG" + name
        try:
            return int(signal.Signals[name])
        except KeyError:
            raise RequestError(
                f"unknown signal {value!r} (try TERM, HUP, USR1 or a number)"
            ) from None
    else:
        raise RequestError(f"a signal is a name or a number, got {value!r}")
    if not 0 < number < signal.NSIG:
        raise RequestError(f"no signal number {number} (1 to {signal.NSIG - 1})")
    return number


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
        if _answers(path):
            raise ControlSocketError(
                f"another trio-overseer is running with control socket {path}; "
                "stop it first (trio-overseer stop --all) or use --socket PATH"
            )
        logger.warning(
            "replacing stale control socket %s (left by a run that ended abruptly)", path
        )
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o177)  # created 0600: never readable by others, not even briefly
        try:
            sock.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        sock.listen(16)
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
    """Serves control requests for an `Instance`; see the module docs."""

    def __init__(self, sock: socket.socket, identity: tuple[int, int], path: str) -> None:
        self.path = path
        self._sock = sock
        self._identity = identity
        self._instance: Instance | None = None
        self._accepting = trio.CancelScope()
        self._connections: trio.Nursery | None = None
        self._handlers = 0
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
        self, instance: Instance, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
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
        try:
            async with stream:
                await self._converse(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away
        finally:
            self._handlers -= 1
            if not self._handlers:
                self._idle.set()

    async def _converse(self, stream: trio.SocketStream) -> None:
        uid = _peer_uid(stream.socket)
        if uid is not None and uid != os.getuid():
            logger.warning("control socket: refused a connection from uid %d", uid)
            await _send(stream, _error(f"permission denied: uid {uid} is not the owner"))
            return
        if self._handlers > MAX_CLIENTS:
            await _send(stream, _error(f"busy: more than {MAX_CLIENTS} clients connected"))
            return
        buffer = bytearray()
        while True:
            line: bytes | None = None
            with trio.move_on_after(IDLE_TIMEOUT):
                line = await _read_line(stream, buffer)
            if line is None:  # end of input, or idle for too long
                return
            if not line.strip():
                continue
            if len(line) > MAX_REQUEST:
                await _send(
                    stream, _error(f"request too long: the limit is {MAX_REQUEST} bytes per line")
                )
                return
            if not await self._serve(stream, line):
                return

    async def _serve(self, stream: trio.SocketStream, line: bytes) -> bool:
        """Answer one request; False when the connection should end."""
        try:
            request = json.loads(line)
        except ValueError:
            return await _send(stream, _error("malformed request: not a line of JSON"))
        if not isinstance(request, dict):
            return await _send(
                stream, _error('malformed request: expected a JSON object like {"cmd": "status"}')
            )
        command = request.get("cmd")
        handlers: dict[str, Callable[[trio.SocketStream, dict[str, Any]], Awaitable[bool]]] = {
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
            return await _send(stream, _error(f"unknown command {command!r} (known: {known})"))
        try:
            return await handler(stream, request)
        except RequestError as exc:
            return await _send(stream, _error(str(exc)))
        except UnknownProcError as exc:
            return await _send(stream, _error(str(exc)))
        except Exception as exc:  # a bug: answer it, never take the instance down
            logger.exception("control socket: %s request failed", command)
            return await _send(stream, _error(f"internal error: {exc!r}"))

    @property
    def instance(self) -> Instance:
        assert self._instance is not None
        return self._instance

    async def _status(self, stream: trio.SocketStream, request: dict[str, Any]) -> bool:
        return await _send(stream, {"ok": True, "procs": self.instance.rows()})

    async def _stop(self, stream: trio.SocketStream, request: dict[str, Any]) -> bool:
        if request.get("all") is True:
            infos = await self.instance.stop_all()
            return await _send(stream, {"ok": True, "procs": infos})
        if "ids" in request:
            infos = await self.instance.stop_many(self._ids(request))
            return await _send(stream, {"ok": True, "procs": infos})
        info = await self.instance.stop(_id(request))
        return await _send(stream, {"ok": True, "proc": info})

    async def _restart(self, stream: trio.SocketStream, request: dict[str, Any]) -> bool:
        if "ids" in request:
            infos = await self.instance.restart_many(self._ids(request))
            return await _send(stream, {"ok": True, "procs": infos})
        info = await self.instance.restart(_id(request))
        return await _send(stream, {"ok": True, "proc": info})

    async def _start(self, stream: trio.SocketStream, request: dict[str, Any]) -> bool:
        ids = self._ids(request) if "ids" in request else [_id(request)]
        infos = await self.instance.restart_many(ids, only_ended=True)
        return await _send(stream, {"ok": True, "procs": infos})

    async def _signal(self, stream: trio.SocketStream, request: dict[str, Any]) -> bool:
        sig = parse_signal(request.get("signal"))
        name = signal.Signals(sig).name
        if "ids" in request:
            infos = self.instance.signal_many(self._ids(request), sig)
            return await _send(stream, {"ok": True, "procs": infos, "signal": name})
        info = self.instance.send_signal(_id(request), sig)
        return await _send(stream, {"ok": True, "proc": info, "signal": name})

    async def _reload(self, stream: trio.SocketStream, request: dict[str, Any]) -> bool:
        answer = await self.instance.reload()
        return await _send(stream, {"ok": True, **answer})

    def _ids(self, request: dict[str, Any]) -> list[str]:
        """The ids that the request's ``"ids"`` address (see `Instance.resolve`)."""
        names = request.get("ids")
        if (
            not isinstance(names, list)
            or not names
            or not all(isinstance(name, str) and name for name in names)
        ):
            raise RequestError(f"'ids' must be a non-empty list of proc ids, got {names!r}")
        return self.instance.resolve(names)

    async def _logs(self, stream: trio.SocketStream, request: dict[str, Any]) -> bool:
        id = request.get("id")
        if id is not None:
            id = _id(request)
            self.instance.check_id(id)
        count = request.get("lines")
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or count < 0
        ):
            raise RequestError(f"'lines' must be a number >= 0, got {count!r}")
        dispatcher = self.instance.dispatcher
        # Take the recent lines and subscribe in one synchronous stretch:
        # nothing is missed or repeated in between.
        recent = dispatcher.recent(id, count)
        follower = dispatcher.follow(id) if request.get("follow") is True else None
        try:
            if not await _send_lines(stream, recent):
                return False
            if follower is not None:
                async with follower.receive:
                    async for batch in follower.receive:
                        if not await _send_lines(stream, (batch,)):
                            return False
                if follower.cut_off:
                    return await _send(
                        stream, _error("log stream cut off: this client fell too far behind")
                    )
                return await _send(stream, {"ok": True, "end": "the instance has stopped"})
            return await _send(stream, {"ok": True})
        finally:
            if follower is not None:
                dispatcher.unfollow(follower)


def _id(request: dict[str, Any]) -> str:
    id = request.get("id")
    if not isinstance(id, str) or not id:
        raise RequestError(f"this command needs a proc id ('id'), got {id!r}")
    return id


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


async def _read_line(stream: trio.SocketStream, buffer: bytearray) -> bytes | None:
    """The next line (without its newline), at most MAX_REQUEST + 1 bytes of it.

    A longer line is returned cut at MAX_REQUEST + 1 bytes: the caller refuses
    it, and no more than that is ever buffered.  None at the end of input.
    """
    while True:
        end = buffer.find(b"\n", 0, MAX_REQUEST + 1)
        if end >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            return line
        if len(buffer) > MAX_REQUEST:
            return bytes(buffer[: MAX_REQUEST + 1])
        data = await stream.receive_some(MAX_REQUEST + 1 - len(buffer))
        if not data:
            return bytes(buffer) if buffer.strip() else None
        buffer += data


async def _send(stream: trio.SocketStream, message: dict[str, Any]) -> bool:
    """Send one JSON line; False (and the client dropped) if it takes too long."""
    return await _send_text(stream, json.dumps(message) + "\n")


async def _send_lines(stream: trio.SocketStream, batches: Iterable[LogBatch]) -> bool:
    text = "".join(map(log_json, batches))
    return await _send_text(stream, text) if text else True


async def _send_text(stream: trio.SocketStream, text: str) -> bool:
    with trio.move_on_after(SEND_TIMEOUT):
        await stream.send_all(text.encode())
        return True
    logger.warning("control socket: dropped a client that stopped reading")
    await trio.aclose_forcefully(stream)
    return False
