"""Every read of ``/proc``: states, process groups, tagged environments, command lines.

Pure (no trio): the spawner (is a process group empty?), the sweep (which
processes carry a run's tag?), the pytest plugin's leak verdict, and the
tests' and benchmarks' survivor checks all read ``/proc`` through here, so
its formats are parsed in one place.  What a lower module would otherwise
import (the tag's variable name, a reader) is an argument.

Where there is no ``/proc`` (macOS), `available()` is False, readers return
None and scans find nothing; each caller says what that means for it.  A
process may vanish between two reads: every reader treats a file it cannot
read as a process that is gone.  The watchdog's script (`_watchdog`) reads
``/proc`` too, on purpose standalone: it runs in a bare interpreter.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator
from typing import NamedTuple

__all__ = [
    "Stat",
    "alive",
    "available",
    "carries",
    "cmdline",
    "describe",
    "environ_value",
    "exec_pending",
    "group_members",
    "has_living_member",
    "pids",
    "read",
    "stat",
    "status_value",
    "tagged",
    "zombies_of",
]

PROC = "/proc"
_GONE = "ZX"  # zombie (exited, not reaped) and dead: not alive
_PF_KTHREAD = 0x00200000  # stat's flags: a kernel thread (no environment, ever)
_FLAGS, _ENV_END = 6, 48  # indexes of fields 9 and 51 of stat, counted from its state


def available() -> bool:
    """Whether this system shows processes in ``/proc`` (Linux)."""
    return os.path.isdir(f"{PROC}/self")


def read(pid: int | str, name: str) -> bytes | None:
    """The file ``/proc/<pid>/<name>`` (`pid` may be ``"self"``), None if unreadable.

    os.open + os.read: five times cheaper than ``open()``, which matters to
    a scan of every process.
    """
    try:
        fd = os.open(f"{PROC}/{pid}/{name}", os.O_RDONLY)
    except OSError:  # gone, not ours to read, or no /proc
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def pids() -> Iterator[int]:
    """Every process id ``/proc`` lists now (nothing without ``/proc``)."""
    try:
        names = os.listdir(PROC)
    except OSError:
        return iter(())
    return (int(name) for name in names if name.isdigit())


class Stat(NamedTuple):
    """What ``/proc/<pid>/stat`` says of a process."""

    state: str
    """One letter: ``R`` running, ``S`` sleeping, ``Z`` zombie, ``X`` dead..."""
    ppid: int
    """The parent's pid."""
    pgrp: int
    """The process group."""
    cpu_ticks: int
    """User + system CPU time, in clock ticks (``os.sysconf("SC_CLK_TCK")`` a second)."""


def stat(pid: int | str) -> Stat | None:
    """The state, parent, group and CPU time of `pid`, or None if it is gone."""
    data = read(pid, "stat")
    if not data:
        return None
    # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return Stat(
            fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[11]) + int(fields[12])
        )
    except (IndexError, ValueError):
        return None


def alive(pid: int) -> bool:
    """Whether `pid` runs: a zombie (dead, not yet reaped) counts as gone."""
    info = stat(pid)
    return info is not None and info.state not in _GONE


def group_members(pgid: int) -> list[int]:
    """The living (not zombie) processes of process group `pgid`."""
    return [pid for pid in pids() if (s := stat(pid)) and s.pgrp == pgid and s.state not in _GONE]


def has_living_member(pgid: int) -> bool:
    """Whether process group `pgid` has a living member; True when ``/proc`` cannot tell."""
    if not available():
        return True
    return any((s := stat(pid)) and s.pgrp == pgid and s.state not in _GONE for pid in pids())


def zombies_of(ppid: int) -> list[int]:
    """The children of `ppid` that exited and were never reaped."""
    return [pid for pid in pids() if (s := stat(pid)) and s.ppid == ppid and s.state == "Z"]


def tagged(
    var: str,
    values: Collection[bytes],
    *,
    exact: bool = False,
    exclude: Collection[int] = (),
    in_exec: list[int] | None = None,
) -> dict[bytes, list[int]]:
    """The pids whose environment holds ``var=value`` for one of `values`, by value.

    Without `exact`, a value is a prefix (``var=<value>...``).  Only the
    environment a process started with is visible (what it inherited, or
    was exec'd with).  This process and `exclude` are skipped.

    A process in the middle of an exec shows no environment at all, for
    as long as the kernel takes to load its new program (milliseconds, far
    longer on a busy machine), so a scan cannot tell whether it is tagged:
    given `in_exec`, such pids are appended to it, to look at again shortly
    (`exec_pending`).
    """
    found: dict[bytes, list[int]] = {}
    needles = [(value, _needle(var, value, exact)) for value in values]
    skip = {os.getpid(), *exclude}
    for pid in pids():
        if pid in skip:
            continue
        environ = _environ(pid)
        if not environ:  # None: not ours to read; empty: none, or an exec in progress
            if environ is not None and in_exec is not None and exec_pending(pid):
                in_exec.append(pid)
            continue
        for value, needle in needles:
            if needle in environ:
                found.setdefault(value, []).append(pid)
    return found


def exec_pending(pid: int) -> bool:
    """Whether `pid` is in the middle of an exec: its new program is loaded but
    its arguments and environment are not set up yet (its environment reads
    empty meanwhile).  False for kernel threads, zombies, and processes we
    may not inspect (the kernel shows them with those fields zeroed): call it
    only for a process whose environment could be read (even empty)."""
    data = read(pid, "stat")
    if not data:
        return False
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return (
            fields[0] not in (b"Z", b"X")
            and not int(fields[_FLAGS]) & _PF_KTHREAD
            and int(fields[_ENV_END]) == 0
        )
    except (IndexError, ValueError):  # before Linux 3.5: no such fields
        return False


def carries(pid: int, var: str, value: bytes, *, exact: bool = False) -> bool:
    """Whether the environment of `pid` holds ``var=value`` (a prefix without `exact`)."""
    return _needle(var, value, exact) in (_environ(pid) or b"")


def _needle(var: str, value: bytes, exact: bool) -> bytes:
    return b"\0" + var.encode() + b"=" + value + (b"\0" if exact else b"")


def _environ(pid: int) -> bytes | None:
    """The environment of `pid` as ``\\0NAME=value\\0...\\0``; b"" if it has
    none (or its exec is in progress), None if it is gone or not ours to read."""
    environ = read(pid, "environ")
    if not environ:
        return environ
    return b"\0" + environ if environ.endswith(b"\0") else b"\0" + environ + b"\0"


def environ_value(pid: int, var: str) -> str | None:
    """The value of `var` in the environment `pid` started with, or None."""
    prefix = var.encode() + b"="
    for entry in (read(pid, "environ") or b"").split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return None


def status_value(pid: int | str, field: str) -> str | None:
    """The first word of a line of ``/proc/<pid>/status`` (``VmRSS``, ``Uid``), or None."""
    prefix = field.encode() + b":"
    for line in (read(pid, "status") or b"").splitlines():
        if line.startswith(prefix):
            words = line[len(prefix) :].split()
            return words[0].decode() if words else None
    return None


def cmdline(pid: int) -> str:
    """The command line of `pid`, arguments joined by spaces ("" if gone)."""
    return (read(pid, "cmdline") or b"").replace(b"\0", b" ").strip().decode(errors="replace")


def describe(pid: int, limit: int = 120) -> str:
    """``pid 42 (python3 -c ...)``: a process named in a report."""
    text = cmdline(pid)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"pid {pid} ({text or '?'})"
