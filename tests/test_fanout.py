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
        fan.publish_batch("0-9", lambda: list(range(10)))
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


async def test_batched_subscriber_gets_the_batch_others_its_items() -> None:
    fan: Fanout[int] = Fanout("logs")
    whole, whole_rx = trio.open_memory_channel[str](10)
    each, each_rx = trio.open_memory_channel[int](10)
    fan.add(whole, batched=True)
    expanded: list[str] = []

    def expand(items: list[int], name: str) -> list[int]:
        expanded.append(name)
        return items

    fan.publish_batch("123", lambda: expand([1, 2, 3], "123"))
    assert expanded == []  # nobody wanted the items: never made
    each2, each2_rx = trio.open_memory_channel[int](10)
    fan.add(each)
    fan.add(each2)
    fan.publish_batch("45", lambda: expand([4, 5], "45"))
    assert [whole_rx.receive_nowait() for _ in range(2)] == ["123", "45"]
    assert [each_rx.receive_nowait() for _ in range(2)] == [4, 5]
    assert [each2_rx.receive_nowait() for _ in range(2)] == [4, 5]
    assert expanded == ["45"]  # made once for both


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
