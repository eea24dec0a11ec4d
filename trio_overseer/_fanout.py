"""Fan-out of messages to any number of subscribers, one memory channel each.

Delivery never waits: each message goes out with `send_nowait`, in order.  A
subscriber whose buffer is full has fallen a whole buffer behind: it is cut
off (unsubscribed, its send channel closed, a warning logged) rather than
silently skipped, so it can tell from `EndOfChannel` that its view ended.
A subscriber that closed its receive side is dropped without a word.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import trio

T = TypeVar("T")

logger = logging.getLogger("trio_overseer")


def check_channel(channel: object, what: str) -> None:
    """Refuse anything but a memory send channel with room for a message."""
    if not isinstance(channel, trio.MemorySendChannel):
        raise TypeError(f"{what} needs a trio.MemorySendChannel, got {channel!r}")
    if channel.statistics().max_buffer_size == 0:
        raise ValueError(
            f"{what}: a zero-size channel buffer would cut the subscriber off at the first "
            "message; open it with trio.open_memory_channel(N) for N > 0 (math.inf never cuts off)"
        )


class Fanout(Generic[T]):
    """Subscribers of one kind of message (`T`), optionally batched."""

    __slots__ = ("_kind", "_subs", "cut_off")

    def __init__(self, kind: str) -> None:
        self._kind = kind
        # channel -> batched?  Dicts keep insertion order: delivery order is
        # subscription order, which keeps runs reproducible.
        self._subs: dict[trio.MemorySendChannel[Any], bool] = {}
        self.cut_off = 0  # subscribers cut off so far (a full buffer)

    def __bool__(self) -> bool:
        return bool(self._subs)

    def __len__(self) -> int:
        return len(self._subs)

    def add(self, channel: trio.MemorySendChannel[Any], *, batched: bool = False) -> None:
        """Subscribe `channel` (again: only the batching changes)."""
        check_channel(channel, f"watch_{self._kind}")
        self._subs[channel] = batched

    def remove(self, channel: trio.MemorySendChannel[Any]) -> None:
        """Unsubscribe `channel`; unknown channels are ignored."""
        self._subs.pop(channel, None)

    def publish(self, message: T) -> None:
        """Send one message to every subscriber."""
        for channel in list(self._subs):
            try:
                channel.send_nowait(message)
            except trio.WouldBlock:
                self._cut_off(channel)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                del self._subs[channel]

    def publish_batch(self, batch: object, expand: Callable[[], Sequence[T]]) -> None:
        """Send messages that arrived together.

        Batched subscribers get `batch` itself; the others get the messages
        of ``expand()`` one by one, made once and only if someone needs them.
        """
        messages: Sequence[T] | None = None
        for channel, batched in list(self._subs.items()):
            try:
                if batched:
                    channel.send_nowait(batch)
                else:
                    if messages is None:
                        messages = expand()
                    send = channel.send_nowait
                    for message in messages:
                        send(message)
            except trio.WouldBlock:
                self._cut_off(channel)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                del self._subs[channel]

    def close_all(self) -> None:
        """Close and forget every subscriber: their `async for` loops end."""
        subs, self._subs = self._subs, {}
        for channel in subs:
            channel.close()

    def _cut_off(self, channel: trio.MemorySendChannel[Any]) -> None:
        del self._subs[channel]
        self.cut_off += 1
        size = channel.statistics().max_buffer_size
        channel.close()
        logger.warning(
            "watch_%s subscriber %r fell %s messages behind and was cut off (channel closed); "
            "give it a bigger buffer or consume faster",
            self._kind,
            channel,
            size,
        )
