"""Finding and ending descendants that left their process group.

Every child is spawned with the environment variable `TAG_VAR` set to a tag
unique to its run (``<overseer token>.<run>``); descendants inherit it, also
those that call ``setsid()``, double-fork or daemonise, which signals to the
group no longer reach.  Linux shows each process's initial environment in
``/proc/<pid>/environ``, so a scan finds them by tag.  They are then ended by
pidfd (no pid-reuse race: the tag is read again after the pidfd is open) and
awaited by pidfd readability, not polling.  Where there is no /proc (macOS),
the scan finds nothing and the process group is the guarantee.

`Scanner` coalesces the scans of runs that end together (a `stop_all()` of
100 procs reads /proc once or twice, not 100 times).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal as _signal
from collections.abc import Callable

import trio

from . import _procfs

TAG_VAR = "TRIO_OVERSEER_TAG"
KILL_WAIT = 5.0  # seconds for SIGKILLed processes to disappear before giving up on them
_ROUNDS = 5  # rescans: an escaped process may fork while it is being ended
_EXEC_WAIT = 1.0  # seconds for processes in the middle of an exec to show their environment
_POLL_MIN, _POLL_MAX = 0.001, 0.05  # backoff of that wait (no event tells of an exec's end)

logger = logging.getLogger("trio_overseer")


class Scanner:
    """Coalesces concurrent /proc scans into one, and says what each sweep ends."""

    __slots__ = ("_batch", "on_sweep")

    def __init__(self) -> None:
        self._batch: _Batch | None = None
        # Told, before they are signalled (so they can still be described),
        # the pids each sweep found outside their group: the pytest plugin
        # reports them whatever the timing of the sweep.
        self.on_sweep: Callable[[list[int]], None] | None = None

    async def find(self, prefix: bytes) -> list[int]:
        """Pids tagged with `prefix`, from a scan that starts after this call.

        Processes that were in the middle of an exec during the scan (their
        environment unreadable) are looked at again once it is done:
        bounded by `_EXEC_WAIT`.
        """
        batch = self._batch
        if batch is not None:
            batch.prefixes.add(prefix)
            await batch.done.wait()
        else:
            batch = self._batch = _Batch({prefix})
            try:
                # Let runs that ended in the same instant join this scan.
                await trio.lowlevel.cancel_shielded_checkpoint()
            finally:
                self._batch = None
                batch.results.update(_procfs.tagged(TAG_VAR, batch.prefixes, in_exec=batch.in_exec))
                batch.done.set()
        found = batch.results.get(prefix, [])
        if batch.in_exec:
            found = found + await _after_exec(batch.in_exec, prefix)
        return found

    @staticmethod
    def max_sweep_time(grace: float) -> float:
        """The longest a `sweep` with this `grace` takes (processes that
        survive SIGKILL, in every round): each of its rounds may wait for
        processes in the middle of an exec, the first one `grace` for the
        signal, and each one `KILL_WAIT` for SIGKILL."""
        return grace + _ROUNDS * (_EXEC_WAIT + KILL_WAIT)

    async def sweep(self, prefix: bytes, sig: int, grace: float) -> list[int]:
        """End every process tagged with `prefix`: `sig`, then SIGKILL after `grace` s.

        Returns the pids found.  Bounded by `max_sweep_time` (grace).
        """
        ended: list[int] = []
        for attempt in range(_ROUNDS):
            pids = await self.find(prefix)
            if not pids:
                break
            ended += pids
            if self.on_sweep is not None:
                self.on_sweep(pids)
            logger.info(
                "ending %d process(es) that left their process group: %s",
                len(pids),
                ", ".join(map(str, pids)),
            )
            await _end(pids, prefix, sig if attempt == 0 else _signal.SIGKILL, grace)
        return ended


class _Batch:
    """One scan that several sweeps share."""

    __slots__ = ("done", "in_exec", "prefixes", "results")

    def __init__(self, prefixes: set[bytes]) -> None:
        self.prefixes = prefixes  # what the sweeps look for (joiners add theirs)
        self.done = trio.Event()  # set once `results` and `in_exec` are filled in
        self.results: dict[bytes, list[int]] = {}
        self.in_exec: list[int] = []  # pids the scan found in the middle of an exec


async def _after_exec(pids: list[int], prefix: bytes) -> list[int]:
    """Those of `pids` that carry `prefix` once their exec is done (waits at most `_EXEC_WAIT`)."""
    pending = list(pids)
    delay = _POLL_MIN
    with trio.move_on_after(_EXEC_WAIT):
        while pending := [pid for pid in pending if _procfs.exec_pending(pid)]:
            await trio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)
    return [pid for pid in pids if _procfs.carries(pid, TAG_VAR, prefix)]


async def _end(pids: list[int], prefix: bytes, sig: int, grace: float) -> None:
    fds = []
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue  # already gone
        if _procfs.carries(pid, TAG_VAR, prefix):  # the pidfd pins the process we checked
            fds.append(fd)
        else:
            os.close(fd)
    try:
        _signal_all(fds, sig)
        if sig != _signal.SIGKILL:
            with trio.move_on_after(grace):
                await _wait_all(fds)
        _signal_all(fds, _signal.SIGKILL)
        with trio.move_on_after(KILL_WAIT):
            await _wait_all(fds)
    finally:
        for fd in fds:
            os.close(fd)


def _signal_all(fds: list[int], sig: int) -> None:
    for fd in fds:
        with contextlib.suppress(ProcessLookupError):
            _signal.pidfd_send_signal(fd, sig)


async def _wait_all(fds: list[int]) -> None:
    for fd in fds:
        await trio.lowlevel.wait_readable(fd)  # a pidfd is readable once it exited
