"""Pseudo-terminals for procs run with ``pty=True``: open one, size it, read it.

Why: most programs (Python, anything on C stdio) write their output in
blocks when it goes to a pipe and line by line, often in colour, when it
goes to a terminal.  With ``pty=True`` the child's stdout and stderr are
the slave side of a pseudo-terminal, so it prints as it would in a shell;
the parent reads the master side and splits lines as it does for pipes.

How it reads (all decided here, once):

* The slave's ONLCR is off: a ``\\n`` reaches the master as ``\\n``, not
  ``\\r\\n``, so lines come out exactly as printed (a ``\\r`` of a progress
  bar stays in its line; a program that turns ONLCR back on still reads
  right, since ``\\r\\n`` also ends a line).
* The window size is set on the slave (TIOCSWINSZ); ``(80, 24)`` unless
  the caller gives another.
* No controlling terminal: the child stays the leader of its own process
  group in the parent's session (signals, stops and sweeps are unchanged),
  and the parent opens the slave with O_NOCTTY (openpty does), so neither
  side acquires the terminal.  The slave is closed in the parent right
  after the spawn: only the child's group holds it.
* Reading the master after every slave descriptor has been closed fails
  with EIO on Linux (macOS returns 0): `PtyStream` reads that as EOF.
  What the child wrote before closing is still read first, nothing is lost.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import termios

import trio

__all__ = ["DEFAULT_SIZE", "PtyStream", "PtyUnavailableError", "check_pty_option", "open_pty"]

#: (columns, rows) of a pty whose size is not given.
DEFAULT_SIZE = (80, 24)

# Causes a generic spawn error would not explain (EMFILE, ENFILE are the spawn's).
_HINTS = {
    errno.ENOENT: "no /dev/ptmx: is devpts mounted?",
    errno.ENOSPC: "the system's limit on ptys, /proc/sys/kernel/pty/max, is reached",
    errno.EIO: "the pty could not be set up",
}


class PtyUnavailableError(OSError):
    """No pseudo-terminal could be opened: the OS error's errno, its text saying so."""

    def __init__(self, code: int, strerror: str | None) -> None:
        text = strerror or os.strerror(code)
        if hint := _HINTS.get(code):
            text = f"{text} ({hint})"
        super().__init__(code, f"no pseudo-terminal could be opened for pty=True: {text}")


def check_pty_option(value: object) -> bool | tuple[int, int]:
    """The ``pty`` option: False, True (80x24) or (columns, rows), as given.

    Raises ValueError or TypeError naming the option; ValueError for
    ``pty=True`` on a platform without pseudo-terminals.
    """
    if isinstance(value, bool):
        size: bool | tuple[int, int] = value
    elif isinstance(value, tuple | list) and len(value) == 2:
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in value):
            raise TypeError(f"pty size must be two ints (columns, rows), got {value!r}")
        if not all(1 <= n <= 0xFFFF for n in value):
            raise ValueError(f"pty size must be (columns, rows), each 1 to 65535, got {value!r}")
        size = (value[0], value[1])
    else:
        raise TypeError(f"pty must be True, False or (columns, rows), got {value!r}")
    if size is not False and not hasattr(os, "openpty"):  # pragma: no cover - POSIX has ptys
        raise ValueError("pty=True: this platform has no pseudo-terminals")
    return size


def open_pty(size: tuple[int, int] = DEFAULT_SIZE) -> tuple[int, int]:
    """Open a pty of `size` (columns, rows): (master, slave), neither inheritable.

    Raises:
      PtyUnavailableError: the OS refused (EMFILE, ENOSPC, ENOENT...).
    """
    try:
        master, slave = os.openpty()
    except OSError as exc:
        raise PtyUnavailableError(exc.errno or errno.EIO, exc.strerror) from None
    try:
        columns, rows = size
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        mode = termios.tcgetattr(slave)
        mode[1] &= ~termios.ONLCR  # oflag: "\n" stays "\n"
        termios.tcsetattr(slave, termios.TCSANOW, mode)
    except (OSError, termios.error) as exc:
        os.close(master)
        os.close(slave)
        # termios.error is no OSError: its args are (errno, text).
        code, text = (*exc.args, 0, None)[:2]
        code = code if isinstance(code, int) and code else errno.EIO
        raise PtyUnavailableError(code, text if isinstance(text, str) else None) from None
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    return master, slave


class PtyStream:
    """The master side of a pty, read like a pipe: EIO (no slave left) is EOF.

    Takes ownership of `fd` (made non-blocking); `close()` releases it.
    """

    __slots__ = ("_stream",)

    def __init__(self, fd: int) -> None:
        self._stream = trio.lowlevel.FdStream(fd)

    async def receive_some(self, max_bytes: int) -> bytes:
        """Up to `max_bytes` bytes; b"" once every slave descriptor is closed.

        Cancellation: safe (nothing read is lost).
        """
        try:
            return await self._stream.receive_some(max_bytes)
        except trio.BrokenResourceError as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError) and cause.errno == errno.EIO:
                return b""
            raise

    def close(self) -> None:
        """Close the master."""
        self._stream.close()
