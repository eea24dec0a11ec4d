"""A watchdog process that ends the procs if the Overseer's process dies.

Nothing runs in a process killed by SIGKILL, so the cleanup must live
elsewhere: a small Python process, started once per Overseer, reads the
process groups of the running procs from a pipe.  When the pipe reaches EOF
without a goodbye (the parent died, however), it SIGKILLs those groups and
every process carrying the Overseer's tag (see `_sweep`), then exits.  Cost
per spawn: nothing where /proc exists (the tag finds them), else one small
write to a pipe.  The watchdog ignores SIGINT, SIGTERM
and SIGHUP and runs in its own session, so a Ctrl+C meant for the parent does
not disarm it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import weakref

from ._sweep import TAG_VAR

logger = logging.getLogger("trio_overseer")

# Where /proc shows environments, the watchdog finds every process by its tag,
# so groups need not be sent: a write that wakes the watchdog at each spawn
# costs more wall time than the spawn itself on a busy machine.
_BY_TAG = os.path.isdir("/proc/self")

_SCRIPT = r"""
import os, signal, sys
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
    signal.signal(s, signal.SIG_IGN)
needle = b"\0" + sys.argv[1].encode() + b"=" + sys.argv[2].encode()
groups, buf = set(), b""
while True:
    try:
        data = os.read(0, 65536)
    except InterruptedError:
        continue
    if not data:
        break
    *lines, buf = (buf + data).split(b"\n")
    for line in lines:
        if line == b"bye":
            sys.exit(0)
        if line[:1] == b"+":
            groups.add(int(line[1:]))
        elif line[:1] == b"-":
            groups.discard(int(line[1:]))
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
me = os.getpid()
for _ in range(5):
    hit = False
    for name in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open("/proc/%s/environ" % name, "rb") as f:
                environ = b"\0" + f.read()
        except OSError:
            continue
        if needle in environ:
            hit = True
            try:
                os.kill(int(name), signal.SIGKILL)
            except OSError:
                pass
    if not hit:
        break
"""


class Watchdog:
    """The parent side: tell the watchdog which groups are alive.

    The watchdog is not our child: a shell starts it in the background and
    exits, so nothing is left to reap and no close needs to wait.  It lives
    as long as this object: `close()` says goodbye; if the object is garbage
    collected (or this process ends) first, the pipe closes without one and
    the watchdog ends every tagged process, as after a SIGKILL.
    """

    __slots__ = ("__weakref__", "_fd", "_finalizer")

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd
        self._finalizer = weakref.finalize(self, os.close, fd)

    @classmethod
    def start(cls, token: str) -> Watchdog | None:
        """Start the watchdog of the procs tagged ``token.*``; None if that fails."""
        read_fd, write_fd = os.pipe()
        env = {"PATH": os.defpath}  # ours, not the user's: it inherits nothing
        # A background job of a non-interactive shell gets /dev/null as
        # stdin unless redirected explicitly: hence fd 3.
        launcher = 'exec 3<&0; "$@" <&3 3<&- >/dev/null 2>&1 & exit 0'
        argv = [sys.executable, "-I", "-S", "-c", _SCRIPT, TAG_VAR, token + "."]
        try:
            shell = subprocess.Popen(
                ["/bin/sh", "-c", launcher, "sh", *argv],
                stdin=read_fd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
            shell.wait()  # it only forks: a millisecond
        except OSError as exc:
            os.close(write_fd)
            logger.warning("cannot start the watchdog (%s): procs may outlive a SIGKILL", exc)
            return None
        finally:
            os.close(read_fd)
        os.set_blocking(write_fd, False)
        return cls(write_fd)

    def _send(self, message: bytes) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, message)
        except BlockingIOError:
            logger.warning("watchdog pipe full: a proc may outlive a SIGKILL of this process")
        except OSError:  # the watchdog died: nothing to tell any more
            self.close()

    def register(self, pgid: int) -> None:
        """A process group to kill if this process dies."""
        if not _BY_TAG:
            self._send(b"+%d\n" % pgid)

    def unregister(self, pgid: int) -> None:
        """That group is gone."""
        if not _BY_TAG:
            self._send(b"-%d\n" % pgid)

    def close(self) -> None:
        """Say goodbye: the watchdog exits without killing anything."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.write(self._fd, b"bye\n")
            self._fd = None
            self._finalizer()  # closes the pipe, once
