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

A stuck stdout (a pipe nobody reads, a paused terminal) holds back the
procs: once the backlog passes `_HIGH_WATER` characters the consumer asks
the Overseer to stop reading the procs' pipes (``on_backlog(True)``), so
they block when their pipes are full, while signals, the control socket,
stops and restarts go on at once.  The writer lets them go again below
`_LOW_WATER`.  Memory stays bounded: past the mark the backlog grows by at
most what the pumps had already read (one read per pipe) and what ending
runs drain (one pipe each).

Once the instance is ending on a signal (`give_up_after`), a stdout that
takes no byte for that long is abandoned: what it could not take is dropped,
with a message, so that a pipe nobody reads cannot keep the CLI alive.
"""

from __future__ import annotations

import math
import time
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
_MAX_WRITE = 1 << 20  # characters per write: bounds the first line's latency
_HIGH_WATER = 1 << 20  # characters waiting for stdout before the procs are held back
_LOW_WATER = 1 << 19  # ... and below which they are let go again


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
        on_backlog: Callable[[bool], None] = _ignore,
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
        # Output rendered but not yet written, and its size in characters.
        self._backlog: list[str] = []
        self._backlog_size = 0
        self._held = False  # the procs are held back (on_backlog(True) was said)
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
                    while True:
                        part = self._handle(item)
                        if part and not self._broken:
                            self._backlog.append(part)
                            self._backlog_size += len(part)
                        try:
                            item = receive.receive_nowait()
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    self._drained.set()
                    if self._backlog:
                        self._more.set()
                        if self._backlog_size > _HIGH_WATER and not self._held:
                            self._held = True
                            self._on_backlog(True)
        finally:
            self._closed = True
            self._more.set()

    async def _write_all(self, out: Writer) -> None:
        """The writer task: write the backlog until the input has ended and all is out."""
        while True:
            if not self._backlog:
                if self._closed or self._broken:
                    return
                self._more = trio.Event()
                await self._more.wait()
                continue
            text = self._take(_MAX_WRITE)
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
            if self._held and self._backlog_size < _LOW_WATER:
                self._held = False
                self._on_backlog(False)

    def _take(self, limit: int) -> str:
        """Up to about `limit` characters from the front of the backlog."""
        backlog = self._backlog
        count = size = 0
        while count < len(backlog) and size < limit:
            size += len(backlog[count])
            count += 1
        text = "".join(backlog[:count])
        del backlog[:count]
        self._backlog_size -= size
        return text

    def _progressed(self) -> None:
        """stdout took a part of a write: it is not stuck."""
        if self._stall is not None and self._patience < math.inf:
            self._stall.deadline = trio.current_time() + self._patience

    def _stop_writing(self) -> None:
        self._broken = True
        self._backlog.clear()
        self._backlog_size = 0
        if self._held:
            self._held = False
            self._on_backlog(False)

    def give_up_after(self, seconds: float) -> None:
        """From now on, abandon stdout once it takes no byte for `seconds`."""
        self._patience = min(self._patience, seconds)
        if self._stall is not None:
            self._stall.deadline = min(
                self._stall.deadline, trio.current_time() + self._patience
            )

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
