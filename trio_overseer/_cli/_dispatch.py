"""The one consumer of everything the Overseer announces during ``start``.

State changes and batches of lines arrive on a single channel, so they stay
in the order they happened (every line of a run comes before its final
state).  The dispatcher prints them, keeps the recent lines of each proc for
``trio-overseer logs``, and forwards new lines to ``logs -f`` followers.

Whatever is waiting in the channel is drained and written with a single
``write()`` and ``flush()``: under load, batches grow and the cost per line
shrinks.  The write blocks the Trio thread when stdout is slow (as any
honcho-like tool does); a terminal or a file is not.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from typing import Any, TextIO

import trio

from .._records import LogBatch, ProcessInfo
from .._tail import LineTail, last_lines
from ._printer import Printer

__all__ = ["TAIL_LINES", "Dispatcher", "Follower"]

TAIL_LINES = 1000  # recent lines kept per proc for `logs`
_FOLLOW_BUFFER = 1024  # batches a `logs -f` client may fall behind before it is cut off
_MAX_WRITE = 1 << 20  # characters per write: bounds memory and the first line's latency


class Follower:
    """A ``logs -f`` client: new lines of one proc (or all) on a channel."""

    def __init__(self, id: str | None) -> None:
        self.id = id
        self.cut_off = False  # fell a whole buffer behind; its channel was closed
        self.send, self.receive = trio.open_memory_channel[LogBatch](_FOLLOW_BUFFER)


class Dispatcher:
    """Prints what happens and remembers recent lines; see the module docs."""

    def __init__(
        self,
        printer: Printer,
        out: TextIO,
        *,
        on_broken_output: Callable[[], None] = lambda: None,
        tail_lines: int = TAIL_LINES,
    ) -> None:
        self._printer = printer
        self._out = out
        self._on_broken_output = on_broken_output
        self._tail_lines = tail_lines
        self._tails: dict[str, LineTail] = {}
        self._followers: set[Follower] = set()
        self._broken = False
        # Set whenever the channel has been emptied; replaced once it is not.
        self._drained = trio.Event()

    # -- the loop ----------------------------------------------------------

    def open_channel(
        self,
    ) -> tuple[trio.MemorySendChannel[Any], trio.MemoryReceiveChannel[Any]]:
        """The channel to subscribe to the Overseer (never cuts anyone off)."""
        return trio.open_memory_channel[Any](math.inf)

    async def run(self, receive: trio.MemoryReceiveChannel[Any]) -> None:
        """Consume `receive` until it is closed, then end every follower.

        Items are `ProcessInfo` (a state change) or `LogBatch`.
        """
        try:
            async with receive:
                while True:
                    try:
                        item = await receive.receive()
                    except trio.EndOfChannel:
                        break
                    self._drained = trio.Event()
                    parts = []
                    size = 0
                    while True:
                        part = self._handle(item)
                        parts.append(part)
                        size += len(part)
                        if size >= _MAX_WRITE:
                            break
                        try:
                            item = receive.receive_nowait()
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    self._write("".join(parts))
                    if not receive.statistics().current_buffer_used:
                        self._drained.set()
        finally:
            self._drained.set()
            self.close_followers()

    async def wait_drained(self) -> None:
        """Wait until everything sent so far has been handled.

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

    def _write(self, text: str) -> None:
        if self._broken or not text:
            return
        try:
            self._out.write(text)
            self._out.flush()
        except (BrokenPipeError, ValueError):  # the reader went away / stdout closed
            self._broken = True
            # Nothing more can be shown: keep the interpreter's final flush
            # from failing too, and let the instance stop its procs.
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self._out.fileno())
                os.close(devnull)
            self._on_broken_output()

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
