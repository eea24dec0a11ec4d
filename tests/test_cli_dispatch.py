"""The CLI's dispatcher: a flood on one proc does not hold up the others."""

from __future__ import annotations

from typing import cast

import trio
import trio.testing
from children import T

from trio_overseer import STDOUT, LogBatch, ProcessInfo, State
from trio_overseer._cli._dispatch import Dispatcher
from trio_overseer._cli._printer import Printer
from trio_overseer._cli._writer import Writer

TS = 1_700_000_000.25


def info(id: str, state: State) -> ProcessInfo:
    return ProcessInfo(
        id=id,
        group="",
        cmd="x",
        dir="",
        pid=4242,
        state=state,
        exit_code=0 if state is State.FINISHED else -1,
        error=None,
        start_time=TS,
        delay_start=0.0,
        retry_times=0,
    )


class SlowStdout:
    """A stdout that takes one write per `allow()`, and remembers them."""

    def __init__(self) -> None:
        self.writes: list[str] = []
        self._permits = trio.Semaphore(0)

    def allow(self, writes: int = 1) -> None:
        for _ in range(writes):
            self._permits.release()

    async def write(self, data: bytes, progress: object = None) -> None:
        await self._permits.acquire()
        self.writes.append(data.decode())

    def close(self) -> None:
        pass


def flood(start: int, lines: int) -> LogBatch:
    return LogBatch("flood", STDOUT, TS, tuple(f"f{i:09d}" for i in range(start, start + lines)))


async def test_a_flood_delays_the_others_by_one_batch_at_most() -> None:
    held: list[tuple[bool, str | None]] = []
    dispatcher = Dispatcher(
        Printer(["flood", "quiet"]), on_backlog=lambda h, id: held.append((h, id))
    )
    out = SlowStdout()
    send, receive = dispatcher.open_channel()
    batch, batches = 2000, 20  # about 54 000 characters a batch printed
    with trio.fail_after(T):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dispatcher.run, receive, cast(Writer, out))
            for k in range(batches):
                send.send_nowait(flood(k * batch, batch))
            await trio.testing.wait_all_tasks_blocked()  # the first write waits for stdout
            # The flood waits for stdout past the mark: its pipes are no longer read,
            # the others' are.
            assert held == [(True, "flood")]
            send.send_nowait(LogBatch("quiet", STDOUT, TS, ("hello",)))
            send.send_nowait(info("quiet", State.FINISHED))
            await trio.testing.wait_all_tasks_blocked()
            out.allow(2)  # the write in progress, and the next one
            await trio.testing.wait_all_tasks_blocked()
            assert len(out.writes) == 2
            first, second = out.writes
            assert first.count("\n") == batch  # one batch: the flood's turn
            assert "quiet  | hello\n" in second
            assert "quiet  | exited 0\n" in second
            assert second.index("hello") < second.index("exited 0")
            assert second.count("\n") == batch + 2  # the quiet ones, then one more batch
            send.close()
            out.allow(batches)
    assert held == [(True, "flood"), (False, "flood")]
    # Every flood line was written, once, in order.
    flooded = [ln.rsplit("| ", 1)[1] for w in out.writes for ln in w.splitlines() if "flood" in ln]
    assert flooded == [f"f{i:09d}" for i in range(batch * batches)]


async def test_lines_of_one_proc_keep_their_order_with_its_states() -> None:
    dispatcher = Dispatcher(Printer(["a"]))
    out = SlowStdout()
    out.allow(100)
    send, receive = dispatcher.open_channel()
    with trio.fail_after(T):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dispatcher.run, receive, cast(Writer, out))
            send.send_nowait(info("a", State.RUNNING))
            send.send_nowait(LogBatch("a", STDOUT, TS, ("one", "two")))
            send.send_nowait(info("a", State.FINISHED))
            send.close()
    text = "".join(out.writes)
    assert [ln.split("| ", 1)[1] for ln in text.splitlines()] == [
        "running (pid 4242)",
        "one",
        "two",
        "exited 0",
    ]
