"""logs: 2,000,000 lines through ``watch_logs``, batched and per line.

Two sources: ``seq 2000000`` (short lines), and a small Python generator
that writes 2,000,000 lines of 80 bytes (a distinct first and last line, a
big block of filler repeated in between).  The clock runs from
``ovr.supervise("gen")`` until the consumer has received the last line (a
first, untimed ``supervise`` of ``true`` starts the Overseer's watchdog).

The consumer (one task, subscribed with an unbounded buffer so it is never
cut off) does what a throughput-minded consumer should: ``await receive()``
for the first message, then drains with ``receive_nowait()`` until
``WouldBlock`` (each ``receive()`` is a checkpoint, microseconds each).  It
counts lines and keeps the first and last text.

Baseline: raw Trio, ``open_process`` with a stdout pipe, ``receive_some()``
and ``split(b"\\n")`` on the bytes (no decoding, no objects per line).

Besides lines per second (wall clock, the generator running on the other
core), the parent's CPU per line is reported: on a busy machine it is the
steadier number (1e9 / it is the rate the parent could reach on a free core).

Batched, each message is a `LogBatch` (one per read of the pipe): the
consumer counts ``len(batch.lines)``, no `LogMsg` is made.

Checks: exactly N lines, the first and last ones right, exit code 0, no
survivor.  Targets: batched >= 0.5x raw Trio's lines/s (seq and 80-byte
lines) and <= 3x its parent CPU per line; per line >= 1 M lines/s on
``seq`` (no slower than before LogBatch).
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from benchmarks._common import Check, cpu_seconds
from benchmarks._spec import Bench, Target, Variant

# Writes N 80-byte lines: "%079d" % 1, filler, ..., "%079d" % N.
GEN = r"""
import os, sys
n = int(sys.argv[1])
filler = b"x" * 79 + b"\n"
block = filler * 10000
os.write(1, b"%079d\n" % 1)
rest = n - 2
for _ in range(rest // 10000):
    os.write(1, block)
os.write(1, filler * (rest % 10000))
os.write(1, b"%079d\n" % n)
"""


def _source(kind: str, n: int) -> tuple[list[str], str, str]:
    """argv of the generator, its first and its last line."""
    if kind == "seq":
        return ["seq", str(n)], "1", str(n)
    return [sys.executable, "-c", GEN, str(n)], f"{1:079d}", f"{n:079d}"


def plan(quick: bool) -> Bench:
    n = 200_000 if quick else 2_000_000
    variants = []
    for kind, what in (("seq", "seq"), ("80b", "80-byte lines")):
        p = {"n": n, "kind": kind}
        variants += [
            Variant(
                f"batched_{kind}",
                f"{what}: watch_logs batched",
                "candidate",
                "m_ovr",
                {**p, "batched": True},
            ),
            Variant(
                f"line_{kind}",
                f"{what}: watch_logs per line",
                "candidate",
                "m_ovr",
                {**p, "batched": False},
            ),
            Variant(
                f"trio_{kind}", f"{what}: raw Trio receive_some + split", "baseline", "m_trio", p
            ),
        ]
    targets = [
        Target("seq, batched / raw Trio", "batched_seq", "trio_seq", ">=", 0.5),
        Target("80-byte lines, batched / raw Trio", "batched_80b", "trio_80b", ">=", 0.5),
        Target("seq, per line", "line_seq", None, ">=", 1.0e6, unit="lines/s"),
        Target("80-byte lines, per line", "line_80b", None, ">=", 0.15e6, unit="lines/s"),
        Target(
            "seq, batched: parent CPU per line / raw Trio",
            "batched_seq",
            "trio_seq",
            "<=",
            3.0,
            metric="cpu_ns",
        ),
        Target(
            "80-byte lines, batched: parent CPU per line / raw Trio",
            "batched_80b",
            "trio_80b",
            "<=",
            3.0,
            metric="cpu_ns",
        ),
    ]
    for kind in ("seq", "80b"):
        targets.append(
            Target(f"{kind}, per line / raw Trio", f"line_{kind}", f"trio_{kind}", "info", 0.0)
        )
    return Bench(
        name="logs",
        title=f"{n:,} lines through watch_logs",
        unit="lines/s",
        higher_is_better=True,
        variants=variants,
        targets=targets,
        rounds=2 if quick else 3,
        extras={"cpu_ns": ("parent CPU/line", "ns")},
    )


def m_ovr(p: dict[str, Any]) -> dict[str, Any]:
    import math

    import trio

    import trio_overseer

    n, batched = p["n"], p["batched"]
    argv, first_want, last_want = _source(p["kind"], n)
    check = Check()
    got: dict[str, Any] = {"count": 0, "first": None, "last": None, "types": set()}
    out: dict[str, Any] = {}

    async def consume_batched(recv: Any) -> None:
        receive, nowait = recv.receive, recv.receive_nowait
        count = 0
        batch = None
        try:
            while True:
                batch = await receive()
                if got["first"] is None:
                    got["first"] = batch.lines[0]
                got["types"].add(batch.type)
                count += len(batch.lines)
                while True:
                    try:
                        batch = nowait()
                    except trio.WouldBlock:
                        break
                    count += len(batch.lines)
                    got["types"].add(batch.type)
                got["last"] = batch.lines[-1]
        except trio.EndOfChannel:
            pass
        got["count"] = count

    async def consume_lines(recv: Any) -> None:
        receive, nowait = recv.receive, recv.receive_nowait
        count = 0
        msg = None
        try:
            while True:
                msg = await receive()
                if got["first"] is None:
                    got["first"] = msg.text
                    got["types"].add(msg.type)
                count += 1
                while True:
                    try:
                        msg = nowait()
                    except trio.WouldBlock:
                        break
                    count += 1
                got["last"] = msg.text
        except trio.EndOfChannel:
            pass
        got["count"] = count

    async def main() -> None:
        send, recv = trio.open_memory_channel[Any](math.inf)
        async with trio_overseer.open_overseer() as ovr:
            # The Overseer's one-time start-up (its watchdog process) before the clock.
            ovr.add("warm-up", "true")
            await ovr.supervise("warm-up")
            ovr.watch_logs(send, batched=batched)
            ovr.add("gen", argv[0], argv[1:])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume_batched if batched else consume_lines, recv)
                t0, c0 = time.perf_counter(), cpu_seconds()
                out["code"] = await ovr.supervise("gen")
                ovr.unwatch_logs(send)
                send.close()
            out["t"], out["cpu"] = time.perf_counter() - t0, cpu_seconds() - c0

    trio.run(main)
    check.expect(out.get("code") == 0, f"exit code {out.get('code')}")
    check.expect(got["count"] == n, f"{got['count']:,} lines received, expected {n:,}")
    check.expect(got["first"] == first_want, f"first line {got['first']!r}")
    check.expect(got["last"] == last_want, f"last line {got['last']!r}")
    check.expect(got["types"] == {trio_overseer.STDOUT}, f"stream types {got['types']}")
    check.no_survivors()
    if "t" not in out:
        return check.result(None)
    return check.result(n / out["t"], cpu_ns=out["cpu"] / n * 1e9)


def m_trio(p: dict[str, Any]) -> dict[str, Any]:
    import trio

    n = p["n"]
    argv, first_want, last_want = _source(p["kind"], n)
    check = Check()
    got: dict[str, Any] = {}

    async def main() -> None:
        t0, c0 = time.perf_counter(), cpu_seconds()
        proc = await trio.lowlevel.open_process(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        count = 0
        first = last = None
        partial = b""
        receive = proc.stdout.receive_some
        while data := await receive(65536):
            lines = (partial + data).split(b"\n")
            partial = lines.pop()
            if lines:
                if first is None:
                    first = lines[0]
                count += len(lines)
                last = lines[-1]
        if partial:
            count += 1
            last = partial
        got["code"] = await proc.wait()
        await proc.stdout.aclose()
        got.update(t=time.perf_counter() - t0, cpu=cpu_seconds() - c0)
        got.update(count=count, first=first, last=last)

    trio.run(main)
    check.expect(got["code"] == 0, f"exit code {got['code']}")
    check.expect(got["count"] == n, f"{got['count']:,} lines received, expected {n:,}")
    check.expect(got["first"] == first_want.encode(), f"first line {got['first']!r}")
    check.expect(got["last"] == last_want.encode(), f"last line {got['last']!r}")
    check.no_survivors()
    return check.result(n / got["t"], cpu_ns=got["cpu"] / n * 1e9)
