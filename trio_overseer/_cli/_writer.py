"""Writing to stdout or stderr without ever blocking the Trio thread.

A blocking ``write()`` to a pipe nobody reads (``trio-overseer start | sleep
600``) or to a paused terminal would hold the event loop, and with it
signals, the control socket and every stop.  CPython's buffered
``sys.stdout`` also drops the rest of a partial write interrupted by a
signal (SIGTSTP, SIGSTOP then SIGCONT): lines vanish or are torn.  A
`Writer` writes bytes with ``os.write`` until all of them are written, and
when the reader is behind it waits with ``trio.lowlevel.wait_writable``.

Non-blocking mode, without touching what others share.  O_NONBLOCK is a
flag of the open file description, which the shell, the other programs of a
pipeline and the programs run after us may share: setting it on our stdout
would make their writes fail with EAGAIN (and stay set if we were killed).
So the file is opened again instead, which makes a description of our own:

* a pipe, FIFO or terminal: reopened through ``/proc/self/fd/N`` (Linux) or
  its terminal name, with O_NONBLOCK on the new description only;
* a socket (e.g. systemd's journal): each send says ``MSG_DONTWAIT``;
* a FIFO that cannot be reopened (no /proc): O_NONBLOCK is set on the
  shared description and restored by `close()`;
* anything else (a regular file, /dev/null, a terminal that cannot be
  reopened): plain blocking writes, which do not stall for long.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import sys
from collections.abc import Callable
from typing import TextIO

import trio

__all__ = ["Messages", "Writer"]

_REOPEN_FLAGS = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


class Writer:
    """A file descriptor written without blocking the loop; see the module docs."""

    __slots__ = ("_close", "_fd", "_send", "_waits", "mode")

    def __init__(
        self,
        fd: int,
        send: Callable[[memoryview], int],
        *,
        waits: bool,
        mode: str,
        close: Callable[[], None] = lambda: None,
    ) -> None:
        self._fd = fd
        self._send = send
        self._waits = waits  # non-blocking: wait_writable when the reader is behind
        self._close = close
        self.mode = mode  # how it is written, for the docs and tests

    @classmethod
    def open(cls, fd: int) -> Writer:
        """A writer for `fd` (1 for stdout), chosen as the module docs say.

        Raises:
          OSError: `fd` is not open.
        """
        info = os.fstat(fd)
        if stat.S_ISSOCK(info.st_mode):
            sock = socket.socket(fileno=os.dup(fd))

            def send(data: memoryview) -> int:
                return sock.send(data, socket.MSG_DONTWAIT)

            return cls(sock.fileno(), send, waits=True, mode="socket", close=sock.close)
        is_tty = os.isatty(fd)
        if stat.S_ISFIFO(info.st_mode) or is_tty:
            own = _reopen(fd, info, is_tty)
            if own is not None:

                def close() -> None:
                    trio.lowlevel.notify_closing(own)
                    os.close(own)

                return cls(own, _writer_of(own), waits=True, mode="reopened", close=close)
            if not is_tty:
                flags = os.get_blocking(fd)
                os.set_blocking(fd, False)

                def restore() -> None:
                    with contextlib.suppress(OSError):
                        os.set_blocking(fd, flags)

                return cls(fd, _writer_of(fd), waits=True, mode="shared", close=restore)
        return cls(fd, _writer_of(fd), waits=False, mode="blocking")

    async def write(self, data: bytes, progress: Callable[[], None] | None = None) -> None:
        """Write all of `data`, waiting (not blocking the loop) while the reader is behind.

        `progress` is called after each partial write that had to wait.

        Cancellation: safe; what was written stays written, the rest is not.

        Raises:
          OSError: the write failed (BrokenPipeError: the reader went away).
        """
        view = memoryview(data)
        while view:
            try:
                written = self._send(view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._fd)
                continue
            view = view[written:]
            if view and progress is not None:
                progress()
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        """Release what `open` took (our own descriptor, or the flag we set)."""
        close, self._close = self._close, lambda: None
        close()


def _writer_of(fd: int) -> Callable[[memoryview], int]:
    def send(data: memoryview) -> int:
        return os.write(fd, data)

    return send


def _reopen(fd: int, info: os.stat_result, is_tty: bool) -> int | None:
    """A new, non-blocking open file description of what `fd` refers to; None if none."""
    candidates = [f"/proc/self/fd/{fd}"] if sys.platform.startswith("linux") else []
    if is_tty:
        with contextlib.suppress(OSError):
            candidates.append(os.ttyname(fd))
    for path in candidates:
        try:
            own = os.open(path, _REOPEN_FLAGS)
        except OSError:
            continue
        mine = os.fstat(own)
        if (mine.st_dev, mine.st_ino) == (info.st_dev, info.st_ino):
            return own
        os.close(own)
    return None


class Messages:
    """The instance's own lines for stderr, written without blocking the loop.

    A stderr nobody reads (``2>&1 | less``, not scrolled) must not stall
    signals or stops either.  While `run` runs, lines wait in a bounded queue
    (beyond `MAX_QUEUED` bytes they are dropped and counted); before and
    after, they are written to the stream as usual.  File-like (`write`,
    `flush`), so that a logging handler can write through it too.
    """

    MAX_QUEUED = 1 << 16

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._encoding = getattr(stream, "encoding", None) or "utf-8"
        self._queue = bytearray()
        self._dropped = 0  # lines dropped since the last written one
        self._more = trio.Event()
        self._running = False
        self._closing = False

    def write(self, text: str) -> int:
        """Queue `text` while running; write it at once otherwise."""
        if not self._running:
            with contextlib.suppress(OSError, ValueError):
                self._stream.write(text)
                self._stream.flush()
            return len(text)
        data = text.encode(self._encoding, "replace")
        if len(self._queue) + len(data) > self.MAX_QUEUED:
            self._dropped += 1
        else:
            self._queue += data
            self._more.set()
        return len(text)

    def flush(self) -> None:
        """Nothing to do: `run` writes as soon as stderr takes it."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write queued lines until `close()`, then what is left; cancel to drop it."""
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()
        try:
            writer = Writer.open(self._stream.fileno())
        except (OSError, ValueError):  # no stderr to write to: keep the plain way
            task_status.started()
            return
        self._running = True
        try:
            task_status.started()
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    self._more = trio.Event()
                    await self._more.wait()
                    continue
                data = bytes(self._queue)
                if self._dropped:
                    data += b"trio-overseer: %d messages dropped (stderr is not read)\n" % (
                        self._dropped
                    )
                    self._dropped = 0
                self._queue.clear()
                try:
                    await writer.write(data)
                except OSError:
                    return  # stderr is gone: nowhere to say anything
        finally:
            self._running = False
            writer.close()

    def close(self) -> None:
        """Let `run` return once the queue is written."""
        self._closing = True
        self._more.set()
