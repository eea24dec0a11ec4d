"""Fan-out to subscribers: in order, never waiting, cut off loudly."""

from __future__ import annotations

import logging
import math

import pytest
import trio

from trio_overseer._fanout import Fanout


async def test_in_order_to_every_subscriber() -> None:
    fan: Fanout[int] = Fanout("state")
    s1, r1 = trio.open_memory_channel[int](math.inf)
    s2, r2 = trio.open_memory_channel[int](100)
    fan.add(s1)
    fan.add(s2)
    for n in range(50):
        fan.publish(n)
    assert [r1.receive_nowait() for _ in range(50)] == list(range(50))
    assert [r2.receive_nowait() for _ in range(50)] == list(range(50))


async def test_full_subscriber_is_cut_off_and_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fan: Fanout[int] = Fanout("logs")
    slow_send, slow = trio.open_memory_channel[int](3)
    fast_send, fast = trio.open_memory_channel[int](math.inf)
    fan.add(slow_send)
    fan.add(fast_send)
    with caplog.at_level(logging.WARNING, logger="trio_overseer"):
        fan.publish_batch(list(range(10)))
    assert "cut off" in caplog.text
    assert len(fan) == 1
    # The slow one keeps what it had, then learns that its view ended.
    assert [await slow.receive() for _ in range(3)] == [0, 1, 2]
    with pytest.raises(trio.EndOfChannel):
        await slow.receive()
    assert [fast.receive_nowait() for _ in range(10)] == list(range(10))


async def test_closed_receiver_dropped_silently(caplog: pytest.LogCaptureFixture) -> None:
    fan: Fanout[int] = Fanout("state")
    send, receive = trio.open_memory_channel[int](10)
    fan.add(send)
    receive.close()
    fan.publish(1)
    assert not fan
    assert caplog.text == ""


async def test_batched_subscriber_gets_tuples() -> None:
    fan: Fanout[int] = Fanout("logs")
    send, receive = trio.open_memory_channel[tuple[int, ...]](10)
    fan.add(send, batched=True)
    fan.publish_batch([1, 2, 3])
    fan.publish_batch([4])
    assert receive.receive_nowait() == (1, 2, 3)
    assert receive.receive_nowait() == (4,)


async def test_refuses_zero_buffer_and_other_objects() -> None:
    fan: Fanout[int] = Fanout("state")
    send, _ = trio.open_memory_channel[int](0)
    with pytest.raises(ValueError, match="zero-size"):
        fan.add(send)
    with pytest.raises(TypeError, match="MemorySendChannel"):
        fan.add(object())  # type: ignore[arg-type]


async def test_close_all_ends_consumers() -> None:
    fan: Fanout[int] = Fanout("state")
    send, receive = trio.open_memory_channel[int](10)
    fan.add(send)
    fan.publish(7)
    fan.close_all()
    assert [n async for n in receive] == [7]
