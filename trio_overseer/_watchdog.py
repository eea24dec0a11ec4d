"""A watchdog process that ends the procs if the Overseer's process dies.

Nothing runs in a process killed by SIGKILL, so the cleanup must live
elsewhere: a small Python process, started once per Overseer, holds the
read end of a pipe from us.  When the pipe reaches EOF without a goodbye
(the parent died, however), it SIGKILLs every process group in the group
table and then every process carrying the Overseer's tag (see `_sweep`),
and exits.  Both are needed: the tag finds descendants that left their
group (setsid, daemons), the group finds members that cleared their
environment (``env -i``, a re-exec with an empty environment), which the
tag cannot see.

The group table is a file shared with the watchdog (a memfd on Linux, an
unlinked temporary file elsewhere): one 4-byte slot per running group,
written with ``pwrite`` when a run starts and zeroed when it ends.  Nobody
reads it until the parent is gone, so registering a group costs one small
write and wakes no one (a message on the pipe would wake the watchdog at
every spawn, which costs more wall time than the spawn on a busy machine).

The watchdog ignores SIGINT, SIGTERM and SIGHUP and runs in its own
session, so a Ctrl+C meant for the parent does not disarm it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import subprocess
import sys
import tempfile
import weakref

from ._sweep import TAG_VAR

logger = logging.getLogger("trio_overseer")

_SLOT = struct.Struct("=i")  # one process group id; 0 marks a free slot

_SCRIPT = r"""
import os, signal, struct, sys
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
    signal.signal(s, signal.SIG_IGN)
needle = b"\0" + sys.argv[1].encode() + b"=" + sys.argv[2].encode()
table = int(sys.argv[3])
buf = b""
while True:
    try:
        data = os.read(0, 65536)
    except InterruptedError:
        continue
    if not data:
        break
    buf = (buf + data)[-4:]
    if buf == b"bye\n":
        sys.exit(0)
try:
    size = os.fstat(table).st_size
    data = os.pread(table, size - size % 4, 0)
except OSError:
    data = b""
for (pgid,) in struct.iter_unpack("=i", data):
    if pgid > 0:
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
    """The parent side: keep the group table, say goodbye at the end.

    The watchdog is not our child: a shell starts it in the background and
    exits, so nothing is left to reap and no close needs to wait.  It lives
    as long as this object: `close()` says goodbye; if the object is garbage
    collected (or this process ends) first, the pipe closes without one and
    the watchdog ends every registered group and tagged process, as after a
    SIGKILL.
    """

    __slots__ = ("__weakref__", "_fd", "_finalizer", "_free", "_slots", "_table")

    def __init__(self, fd: int, table: int) -> None:
        self._fd: int | None = fd
        self._table = table
        self._slots: dict[int, int] = {}  # pgid -> its slot in the table
        self._free: list[int] = []  # slots zeroed, to be reused
        self._finalizer = weakref.finalize(self, _close_both, fd, table)

    @classmethod
    def start(cls, token: str) -> Watchdog | None:
        """Start the watchdog of the procs tagged ``token.*``; None if that fails."""
        try:
            table = _group_table()
        except OSError as exc:
            logger.warning("cannot start the watchdog (%s): procs may outlive a SIGKILL", exc)
            return None
        read_fd, write_fd = os.pipe()
        env = {"PATH": os.defpath}  # ours, not the user's: it inherits nothing
        # A background job of a non-interactive shell gets /dev/null as
        # stdin unless redirected explicitly: hence fd 3.
        launcher = 'exec 3<&0; "$@" <&3 3<&- >/dev/null 2>&1 & exit 0'
        argv = [sys.executable, "-I", "-S", "-c", _SCRIPT, TAG_VAR, token + ".", str(table)]
        try:
            shell = subprocess.Popen(
                ["/bin/sh", "-c", launcher, "sh", *argv],
                stdin=read_fd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                close_fds=True,
                pass_fds=(table,),
            )
            shell.wait()  # it only forks: a millisecond
        except OSError as exc:
            os.close(write_fd)
            os.close(table)
            logger.warning("cannot start the watchdog (%s): procs may outlive a SIGKILL", exc)
            return None
        finally:
            os.close(read_fd)
        os.set_blocking(write_fd, False)
        return cls(write_fd, table)

    def register(self, pgid: int) -> None:
        """A process group to kill if this process dies (one pwrite, wakes nobody)."""
        if self._fd is None or pgid in self._slots:
            return
        slot = self._free.pop() if self._free else len(self._slots)
        if self._write(slot, pgid):
            self._slots[pgid] = slot

    def unregister(self, pgid: int) -> None:
        """That group is gone."""
        slot = self._slots.pop(pgid, None)
        if slot is not None and self._fd is not None and self._write(slot, 0):
            self._free.append(slot)

    def _write(self, slot: int, pgid: int) -> bool:
        try:
            os.pwrite(self._table, _SLOT.pack(pgid), slot * _SLOT.size)
        except OSError as exc:  # e.g. out of memory for the memfd
            logger.warning("watchdog: cannot note process group %d (%s)", pgid, exc)
            return False
        return True

    def close(self) -> None:
        """Say goodbye: the watchdog exits without killing anything."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.write(self._fd, b"bye\n")
            self._fd = None
            self._finalizer()  # closes the pipe and the table, once


def _group_table() -> int:
    """A file for the group table that only we and the watchdog hold."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("trio-overseer-groups", os.MFD_CLOEXEC)
    with tempfile.TemporaryFile() as file:  # unlinked at once; the descriptor lives on
        return os.dup(file.fileno())


def _close_both(fd: int, table: int) -> None:
    for each in (fd, table):
        with contextlib.suppress(OSError):
            os.close(each)
