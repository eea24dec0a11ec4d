"""Soak: churn one Overseer for a long time and check that nothing accumulates.

    python benchmarks/soak.py [--duration 600] [--sample-every 60] [--procs 24] [--seed 0]

Not part of CI (ten minutes by default).  One ``open_overseer()`` block runs
a churn of procs: short ones that finish, ones that fail or crash and are
restarted, chatty ones, sleepers (some ignoring SIGTERM, some with a
descendant that escaped the process group) that get stopped, killed or
signalled, ones that cannot start; procs are added and removed all the
time, subscribers come and go (some with small buffers, so they get cut
off).  The parent's open fds (``/proc/self/fd``), RSS, living Trio tasks and
the live processes carrying this run's tag are sampled at a quiet start
(after a warm-up), every ``--sample-every`` seconds, and at a quiet end
(every proc stopped and removed, the churn's subscribers gone), and once more
after the block.  Goal: the start and end samples are equal, except for RSS,
which may settle a little higher (allocator); exit status 1 if fds, tasks or
processes leaked.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import logging
import math
import os
import random
import signal
import sys
import time
import uuid
from typing import Any

import attrs
import trio
import trio.testing

from trio_overseer import (
    Overseer,
    ProcRunningError,
    State,
    UnknownProcError,
    _procfs,
    open_overseer,
)

TAG_VAR = "TRIO_OVERSEER_SOAK_TAG"
PY = sys.executable
FINAL = (State.FINISHED, State.INTERRUPTED, State.FATAL)


_SLEEP = "import time\nwhile True:\n    time.sleep(3600)\n"
_CHATTY = """
import sys, time
for n in range(1000000):
    sys.stdout.write("".join("line %d %d\\n" % (n, i) for i in range(200)))
    sys.stdout.write("partial")
    time.sleep(0.02)
"""
_TREE = f"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-I", "-S", "-c", {_SLEEP!r}], start_new_session=True)
print("ready")
{_SLEEP}
"""

#: name -> (exec, args, retry_times): the churn's zoo (sh where it will do: cheaper).
KINDS: dict[str, tuple[str, list[str], int]] = {
    "short": ("/bin/sh", ["-c", "echo hello; echo to stderr >&2; exit 0"], 0),
    "fail": ("/bin/sh", ["-c", "echo failing; exit 1"], 2),
    "crash": ("/bin/sh", ["-c", "echo crashing >&2; kill -SEGV $$"], 2),
    "chatty": (PY, ["-I", "-S", "-u", "-c", _CHATTY], 0),
    "sleeper": ("/bin/sh", ["-c", "echo ready; exec sleep 100000"], 0),
    "stubborn": ("/bin/sh", ["-c", "trap '' TERM; echo ready; while :; do sleep 1; done"], 1),
    "tree": (PY, ["-I", "-S", "-u", "-c", _TREE], 0),
    "bad": ("/nonexistent/soak/program", [], 1),
}
WEIGHTS = {
    "short": 5,
    "fail": 3,
    "crash": 2,
    "chatty": 1,
    "sleeper": 3,
    "stubborn": 1,
    "tree": 1,
    "bad": 1,
}


@attrs.frozen
class Sample:
    at: float  # seconds since the start
    label: str
    fds: int
    rss_kib: int
    tasks: int
    tagged: int
    objects: int  # live Python objects tracked by the gc
    loggers: int  # logging.Logger instances (never freed once created)
    procs: int
    running: int


def object_types() -> collections.Counter[str]:
    """How many gc-tracked objects of each type are alive."""
    gc.collect()
    return collections.Counter(type(obj).__qualname__ for obj in gc.get_objects())


def rss_kib() -> int:
    return int(_procfs.status_value("self", "VmRSS") or 0)


def tagged_live(tag: str) -> int:
    """How many live processes (not zombies) carry this run's tag."""
    return len(tagged_processes(tag))


def tagged_processes(tag: str) -> list[str]:
    """The live processes (not zombies) carrying this run's tag, described."""
    found = _procfs.tagged(TAG_VAR, [tag.encode()], exact=True).get(tag.encode(), [])
    return [_procfs.describe(pid, 100) for pid in found if _procfs.alive(pid)]


class CountingHandler(logging.Handler):
    def __init__(self, churn: Churn) -> None:
        super().__init__(logging.WARNING)
        self.churn = churn

    def emit(self, record: logging.LogRecord) -> None:
        self.churn.count(f"logged {record.levelname.lower()}s")


@attrs.define
class Churn:
    ovr: Overseer
    rng: random.Random
    tag: str
    max_procs: int
    began: float = attrs.field(factory=time.monotonic)
    serial: int = 0
    samples: list[Sample] = attrs.field(factory=list)
    counts: dict[str, int] = attrs.field(factory=dict)
    subs: list[trio.MemorySendChannel[Any]] = attrs.field(factory=list)

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def sample(self, label: str) -> Sample:
        gc.collect()  # count live objects, not garbage waiting for the cycle collector
        ids = self.ovr.list_all()
        running = sum(self.ovr.status(id).state not in (*FINAL, State.INITIAL) for id in ids)
        sample = Sample(
            at=time.monotonic() - self.began,
            label=label,
            fds=len(os.listdir("/proc/self/fd")),
            rss_kib=rss_kib(),
            tasks=trio.lowlevel.current_statistics().tasks_living,
            tagged=tagged_live(self.tag),
            objects=len(gc.get_objects()),
            loggers=len(logging.Logger.manager.loggerDict),
            procs=len(ids),
            running=running,
        )
        self.samples.append(sample)
        print(_row(sample), file=sys.stderr, flush=True)
        return sample

    # -- subscribers -------------------------------------------------------------

    async def consume(self, recv: trio.MemoryReceiveChannel[Any], what: str) -> None:
        async with recv:
            async for item in recv:
                if isinstance(item, tuple):
                    self.count(what, len(item))
                else:
                    self.count(what)
        self.count(f"{what} channels ended")

    def subscribe(
        self, nursery: trio.Nursery, kind: str | None = None, *, permanent: bool = False
    ) -> None:
        kind = kind or self.rng.choice(["state", "logs", "batched"])
        size = math.inf if permanent else self.rng.choice([4, 64, math.inf])
        send, recv = trio.open_memory_channel[Any](size)
        if kind == "state":
            self.ovr.watch_state(send)
        else:
            self.ovr.watch_logs(send, batched=kind == "batched")
        nursery.start_soon(self.consume, recv, "states" if kind == "state" else "lines")
        if not permanent:
            self.subs.append(send)

    def unsubscribe(self, send: trio.MemorySendChannel[Any]) -> None:
        self.ovr.unwatch_state(send)
        self.ovr.unwatch_logs(send)
        send.close()  # its consumer ends
        self.subs.remove(send)

    # -- procs ---------------------------------------------------------------------

    async def add_and_start(self) -> None:
        kind = self.rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
        exec, args, retries = KINDS[kind]
        self.serial += 1
        id = f"{kind}-{self.serial}"
        self.ovr.add(id, exec, args, retry_times=retries, stop_timeout=0.3)
        self.count("starts")
        with trio.fail_after(30):
            await self.ovr.start(id)

    def pick(self, *, live: bool) -> str | None:
        """A random proc whose run is (or is not) in progress."""
        ids = [
            id
            for id in self.ovr.list_all()
            if (self.ovr.status(id).state not in (*FINAL, State.INITIAL)) == live
        ]
        return self.rng.choice(ids) if ids else None

    async def step(self, nursery: trio.Nursery) -> None:
        ovr, rng = self.ovr, self.rng
        action = rng.choices(
            ["add", "stop", "kill", "signal", "remove", "wait", "sub", "unsub"],
            weights=[6, 2, 1, 1, 10, 1, 1, 1],
        )[0]
        if action == "add" and len(ovr.list_all()) < self.max_procs:
            await self.add_and_start()
        elif action in ("stop", "kill") and (id := self.pick(live=True)):
            ovr.stop(id, kill=action == "kill")
            self.count(f"{action}s")
        elif action == "signal" and (id := self.pick(live=True)):
            ovr.signal(id, rng.choice([signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP]))
            self.count("signals")
        elif action == "remove" and (id := self.pick(live=False)):
            with contextlib.suppress(ProcRunningError):  # a restart is pending
                ovr.remove(id)
                self.count("removes")
        elif action == "wait" and (id := self.pick(live=True)):
            with contextlib.suppress(TimeoutError, UnknownProcError):
                await ovr.wait_for_state(id, *FINAL, timeout=0.2)
        elif action == "sub" and len(self.subs) < 4:
            self.subscribe(nursery)
        elif action == "unsub" and self.subs:
            self.unsubscribe(rng.choice(self.subs))
        await trio.sleep(rng.uniform(0, 0.02))

    async def quiesce(self) -> None:
        """Stop and remove every proc; drop the churn's subscribers."""
        self.ovr.stop_all()
        for id in self.ovr.list_all():
            with trio.fail_after(30):
                await self.ovr.wait_for_state(id, *FINAL)
        await trio.testing.wait_all_tasks_blocked(0.05)
        for id in self.ovr.list_all():
            self.ovr.remove(id)
        for send in list(self.subs):
            self.unsubscribe(send)
        await trio.testing.wait_all_tasks_blocked(0.05)


def _row(s: Sample) -> str:
    return (
        f"{s.at:8.1f} s  {s.label:<10} fds {s.fds:5d}  rss {s.rss_kib / 1024:7.1f} MiB  "
        f"tasks {s.tasks:3d}  tagged procs {s.tagged:3d}  objects {s.objects:7d}  "
        f"loggers {s.loggers:5d}  procs {s.procs:3d} (running {s.running})"
    )


async def soak(args: argparse.Namespace) -> int:
    tag = uuid.uuid4().hex
    os.environ[TAG_VAR] = tag  # every child and grandchild inherits it
    rng = random.Random(args.seed)
    # The Overseer's block exits first and closes the permanent subscribers' channels.
    async with (
        trio.open_nursery() as consumers,
        open_overseer(handle_signals=False, stop_timeout=0.3, seed=args.seed) as ovr,
    ):
        churn = Churn(ovr, rng, tag, args.procs)
        # The Overseer's warnings and errors (cut-off subscribers, procs that
        # cannot start) are counted, not printed.
        log = logging.getLogger("trio_overseer")
        log.addHandler(CountingHandler(churn))
        log.propagate = False
        for kind in ("state", "logs"):  # for the whole run
            churn.subscribe(consumers, kind, permanent=True)
        # Warm-up: every kind once, so that the watchdog, caches and pools exist.
        for kind in KINDS:
            churn.serial += 1
            exec, a, retries = KINDS[kind]
            ovr.add(f"warm-{kind}", exec, a, retry_times=retries, stop_timeout=0.3)
            await ovr.start(f"warm-{kind}")
        await churn.quiesce()
        start = churn.sample("start")
        types_before = object_types()
        deadline = trio.current_time() + args.duration
        next_sample = trio.current_time() + args.sample_every
        while trio.current_time() < deadline:
            await churn.step(consumers)
            if trio.current_time() >= next_sample:
                churn.sample("churn")
                next_sample += args.sample_every
        await churn.quiesce()
        end = churn.sample("end")
        grown = (object_types() - types_before).most_common(8)
        leftovers = tagged_processes(tag)
    after_tagged = tagged_live(tag)
    after_fds = len(os.listdir("/proc/self/fd"))
    after_tasks = trio.lowlevel.current_statistics().tasks_living

    print(f"\nsoak: {args.duration:.0f} s, up to {args.procs} procs at once, seed {args.seed}")
    print("  " + ", ".join(f"{k} {v}" for k, v in sorted(churn.counts.items())))
    print()
    for sample in churn.samples:
        print("  " + _row(sample))
    print()
    deltas = {
        "open fds": end.fds - start.fds,
        "RSS (KiB)": end.rss_kib - start.rss_kib,
        "trio tasks": end.tasks - start.tasks,
        "tagged live processes": end.tagged - start.tagged,
        "gc-tracked objects": end.objects - start.objects,
        "logging.Logger objects": end.loggers - start.loggers,
    }
    for what, delta in deltas.items():
        print(f"  delta {what:<22} {delta:+d}")
    print("  object types grown:", ", ".join(f"{name} +{n}" for name, n in grown) or "none")
    for leftover in leftovers:
        print(f"  alive at the end: {leftover}")
    print(
        f"  after the block: fds {after_fds}, trio tasks {after_tasks}, "
        f"tagged live processes {after_tagged}"
    )
    # RSS and object counts move a little by themselves (allocator, caches).
    noisy = ("RSS (KiB)", "gc-tracked objects")
    leaked = [what for what, d in deltas.items() if d and what not in noisy]
    if after_tagged:
        leaked.append("processes after the block")
    print("  verdict:", "LEAK: " + ", ".join(leaked) if leaked else "flat (no leak)")
    return 1 if leaked else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (600)")
    parser.add_argument("--sample-every", type=float, default=60.0, help="seconds (60)")
    parser.add_argument("--procs", type=int, default=24, help="procs at once at most (24)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.exit(trio.run(soak, args))


if __name__ == "__main__":
    main()
