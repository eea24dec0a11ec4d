"""The one consumer of everything the Overseer announces during ``start``.

State changes and batches of lines arrive on a single channel, so they stay
in the order they happened (every line of a run comes before its final
state).  The dispatcher prints them, keeps the recent lines of each proc for
``trio-overseer logs``, and forwards new lines to ``logs -f`` followers.

Theory of operation: two tasks.  The consumer takes whatever is waiting in
the channel, keeps the tails, feeds the followers and renders the output
into a backlog; it never waits on stdout.  The writer writes the backlog
with a `Writer`: non-blocking, everything or an error, so no line is lost or
torn and the event loop never stalls.  Under load the backlog grows and is
written in fewer, larger writes.

Every proc's output waits in a queue of its own (its state lines too, so
that a run's lines still come before its final state), and each write takes
a turn of each queue (about `_TURN` characters, at least one batch), the
shortest queues first: a proc flooding stdout delays the state lines and
the lines of the others by at most one of its batches, and a terminal stays
responsive.

A stuck or slow stdout (a pipe nobody reads, a paused terminal) holds back
the procs that fill it: once a proc's queue passes `_PROC_HIGH_WATER`
characters the consumer asks the Overseer to stop reading that proc's pipes
(``on_backlog(True, id)``), so it blocks when its pipes are full, while the
other procs, signals, the control socket, stops and restarts go on; below
`_PROC_LOW_WATER` it is let go.  All procs are held while the whole backlog
is past `_HIGH_WATER` (``on_backlog(True, None)``), until it is below
`_LOW_WATER`.  Memory stays bounded: past a mark a queue grows by at most
what the pumps had already read (one read per pipe) and what ending runs
drain (one pipe each).

Once the instance is ending on a signal (`give_up_after`), a stdout that
takes no byte for that long is abandoned: what it could not take is dropped,
with a message, so that a pipe nobody reads cannot keep the CLI alive.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from .._records import LogBatch, ProcessInfo
from .._tail import LineTail, last_lines
from ._printer import Printer
from ._writer import Writer

__all__ = ["TAIL_LINES", "Dispatcher", "Follower"]

TAIL_LINES = 1000  # recent lines kept per proc for `logs`
_FOLLOW_BUFFER = 1024  # batches a `logs -f` client may fall behind before it is cut off
_TURN = 1 << 16  # characters a proc's queue gives to a write (at least one batch)
_PROC_HIGH_WATER = 1 << 18  # characters of one proc waiting before it is held back
_PROC_LOW_WATER = 1 << 17  # ... and below which it is let go again
_HIGH_WATER = 1 << 22  # characters waiting in all before every proc is held back
_LOW_WATER = 1 << 21  # ... and below which they are let go again


class _Queue:
    """The rendered output of one proc, waiting for stdout."""

    __slots__ = ("held", "parts", "size")

    def __init__(self) -> None:
        self.parts: deque[str] = deque()
        self.size = 0  # characters in parts
        self.held = False  # its pipes are not read (on_backlog(True, id) was said)


class Follower:
    """A ``logs -f`` client: new lines of one proc (or all) on a channel."""

    def __init__(self, id: str | None) -> None:
        self.id = id
        self.cut_off = False  # fell a whole buffer behind; its channel was closed
        self.send, self.receive = trio.open_memory_channel[LogBatch](_FOLLOW_BUFFER)


def _ignore(*_: object) -> None:
    pass


class Dispatcher:
    """Prints what happens and remembers recent lines; see the module docs."""

    def __init__(
        self,
        printer: Printer,
        *,
        encoding: str = "utf-8",
        on_broken_output: Callable[[OSError], None] = _ignore,
        on_backlog: Callable[[bool, str | None], None] = _ignore,
        say: Callable[[str], None] = _ignore,
        tail_lines: int = TAIL_LINES,
    ) -> None:
        self._printer = printer
        self._encoding = encoding
        self._on_broken_output = on_broken_output
        self._on_backlog = on_backlog
        self._say = say
        self._tail_lines = tail_lines
        self._tails: dict[str, LineTail] = {}
        self._followers: set[Follower] = set()
        # Output rendered but not yet written, per proc, and its size in characters.
        self._queues: dict[str, _Queue] = {}
        self._backlog_size = 0
        self._held = False  # every proc is held back (on_backlog(True, None) was said)
        self._more = trio.Event()  # set when the backlog gains text or the input ends
        self._closed = False  # the input has ended: write what is left, then stop
        self._broken = False  # stdout failed or was abandoned: output is dropped
        self._patience = math.inf  # seconds stdout may take no byte before it is abandoned
        self._stall: trio.CancelScope | None = None  # the write in progress
        # Set whenever the channel has been emptied; replaced once it is not.
        self._drained = trio.Event()

    # -- the loop ----------------------------------------------------------

    def open_channel(
        self,
    ) -> tuple[trio.MemorySendChannel[Any], trio.MemoryReceiveChannel[Any]]:
        """The channel to subscribe to the Overseer (never cuts anyone off).

        Unbounded, yet bounded in practice: see the module docs.
        """
        return trio.open_memory_channel[Any](math.inf)

    async def run(self, receive: trio.MemoryReceiveChannel[Any], out: Writer) -> None:
        """Consume `receive` until it is closed and write to `out` until all is written.

        Items are `ProcessInfo` (a state change) or `LogBatch`.
        """
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_all, out)
                await self._consume(receive)
        finally:
            self._drained.set()
            self.close_followers()

    async def _consume(self, receive: trio.MemoryReceiveChannel[Any]) -> None:
        try:
            async with receive:
                while True:
                    try:
                        item = await receive.receive()
                    except trio.EndOfChannel:
                        break
                    self._drained = trio.Event()
                    grown: set[_Queue] = set()
                    while True:
                        part = self._handle(item)
                        if part and not self._broken:
                            queue = self._queues.get(item.id)
                            if queue is None:
                                queue = self._queues[item.id] = _Queue()
                            queue.parts.append(part)
                            queue.size += len(part)
                            self._backlog_size += len(part)
                            grown.add(queue)
                        try:
                            item = receive.receive_nowait()
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    self._drained.set()
                    if grown:
                        self._more.set()
                        self._hold_back(grown)
        finally:
            self._closed = True
            self._more.set()

    async def _write_all(self, out: Writer) -> None:
        """The writer task: write the backlog until the input has ended and all is out."""
        while True:
            if not self._backlog_size:
                if self._closed or self._broken:
                    return
                self._more = trio.Event()
                await self._more.wait()
                continue
            text = self._take()
            data = text.encode(self._encoding, "replace")
            with trio.CancelScope() as stall:
                self._stall = stall
                stall.deadline = trio.current_time() + self._patience
                try:
                    await out.write(data, self._progressed)
                except OSError as exc:
                    self._stop_writing()
                    self._on_broken_output(exc)
                    return
                finally:
                    self._stall = None
            if stall.cancelled_caught:
                dropped = len(data) + self._backlog_size
                self._stop_writing()
                self._say(
                    f"stdout took nothing for {self._patience:g} s: "
                    f"dropped the last {dropped} characters of output"
                )
                return
            self._let_go()

    def _take(self) -> str:
        """The next write: a turn of every queue, the shortest queues first."""
        pieces: list[str] = []
        for queue in sorted(self._queues.values(), key=lambda q: q.size):
            parts = queue.parts
            taken = 0
            while parts and (not taken or taken + len(parts[0]) <= _TURN):
                part = parts.popleft()
                pieces.append(part)
                taken += len(part)
            queue.size -= taken
            self._backlog_size -= taken
        return pieces[0] if len(pieces) == 1 else "".join(pieces)

    def _hold_back(self, grown: set[_Queue]) -> None:
        """Hold back the procs whose output waits past the marks (after the queues grew)."""
        for id, queue in self._queues.items():
            if queue in grown and queue.size > _PROC_HIGH_WATER and not queue.held:
                queue.held = True
                self._on_backlog(True, id)
        if self._backlog_size > _HIGH_WATER and not self._held:
            self._held = True
            self._on_backlog(True, None)

    def _let_go(self) -> None:
        """Let go of the procs whose output fell below the low marks (after a write)."""
        if self._held and self._backlog_size < _LOW_WATER:
            self._held = False
            self._on_backlog(False, None)
        for id, queue in self._queues.items():
            if queue.held and queue.size < _PROC_LOW_WATER:
                queue.held = False
                self._on_backlog(False, id)

    def _progressed(self) -> None:
        """stdout took a part of a write: it is not stuck."""
        if self._stall is not None and self._patience < math.inf:
            self._stall.deadline = trio.current_time() + self._patience

    def _stop_writing(self) -> None:
        self._broken = True
        for queue in self._queues.values():
            queue.parts.clear()
            queue.size = 0
        self._backlog_size = 0
        self._let_go()

    def give_up_after(self, seconds: float) -> None:
        """From now on, abandon stdout once it takes no byte for `seconds`."""
        self._patience = min(self._patience, seconds)
        if self._stall is not None:
            self._stall.deadline = min(self._stall.deadline, trio.current_time() + self._patience)

    async def wait_drained(self) -> None:
        """Wait until everything sent so far has been handled (not necessarily written).

        Cancellation: safe.
        """
        await self._drained.wait()

    def _handle(self, item: Any) -> str:
        if isinstance(item, ProcessInfo):
            return self._printer.state(item, time.time())
        tail = self._tails.get(item.id)
        if tail is None:
            tail = self._tails[item.id] = LineTail(self._tail_lines)
        tail.add(item)
        if self._followers:
            self._forward(item)
        return self._printer.lines(item)

    # -- recent lines and followers -------------------------------------------

    def recent(self, id: str | None, count: int | None = None) -> list[LogBatch]:
        """The batches of the last `count` lines kept of `id` (of every proc when None)."""
        if id is not None:
            tail = self._tails.get(id)
            return tail.batches(count) if tail is not None else []
        # Lines of a batch share its timestamp: sorting batches sorts lines.
        batches = sorted(
            (b for tail in self._tails.values() for b in tail.batches()), key=lambda b: b.ts
        )
        return last_lines(batches, count) if count is not None else batches

    def follow(self, id: str | None) -> Follower:
        """Start forwarding new lines of `id` (every proc when None)."""
        follower = Follower(id)
        self._followers.add(follower)
        return follower

    def unfollow(self, follower: Follower) -> None:
        """Stop forwarding to `follower` and close its channel."""
        self._followers.discard(follower)
        follower.send.close()

    def close_followers(self) -> None:
        """End every follower's stream (the instance is ending)."""
        for follower in list(self._followers):
            self.unfollow(follower)

    def _forward(self, batch: LogBatch) -> None:
        for follower in list(self._followers):
            if follower.id is not None and follower.id != batch.id:
                continue
            try:
                follower.send.send_nowait(batch)
            except trio.WouldBlock:
                follower.cut_off = True
                self.unfollow(follower)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._followers.discard(follower)
