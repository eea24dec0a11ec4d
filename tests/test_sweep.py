"""`_sweep`: finding and ending processes by their tag, directly (no Overseer)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from children import IGNORE_SIGTERM, PY, SLEEP_FOREVER, T, kill_quietly

from trio_overseer import _procfs, _sweep
from trio_overseer._sweep import KILL_WAIT, TAG_VAR, Scanner

pytestmark = pytest.mark.skipif(not _procfs.available(), reason="no /proc here")

Tagged = tuple[bytes, list[subprocess.Popen[bytes]]]


@pytest.fixture
def tagged() -> Iterator[tuple[bytes, list[subprocess.Popen[bytes]]]]:
    """A tag prefix, and the list `start_tagged` adds its processes to; each is
    killed and reaped at the end, whatever happened."""
    prefix = f"test-{secrets.token_hex(6)}.".encode()
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield prefix, started
    finally:
        for child in started:
            kill_quietly(child.pid)
            child.wait()
            assert child.stdout is not None
            child.stdout.close()


def start_tagged(prefix: bytes, started: list[subprocess.Popen[bytes]], snippet: list[str]) -> int:
    """Start `snippet` tagged with `prefix`, in a session of its own (out of
    reach of any group signal); its pid, once it is ready."""
    env = {**os.environ, TAG_VAR: prefix.decode() + secrets.token_hex(4)}
    child = subprocess.Popen(
        [PY, *snippet], env=env, stdout=subprocess.PIPE, start_new_session=True
    )
    assert child.stdout is not None
    assert child.stdout.readline() == b"ready\n"  # handlers in place
    started.append(child)
    return child.pid


async def test_sweep_ends_what_carries_the_tag(tagged: Tagged) -> None:
    prefix, started = tagged
    pid = start_tagged(prefix, started, SLEEP_FOREVER)
    told: list[list[int]] = []
    scanner = Scanner()
    scanner.on_sweep = told.append
    with trio.fail_after(T):
        ended = await scanner.sweep(prefix, signal.SIGTERM, 5.0)
        started[0].wait()
    assert ended == [pid]
    assert told == [[pid]]  # told before they were signalled
    assert started[0].returncode == -signal.SIGTERM
    assert await scanner.sweep(prefix, signal.SIGTERM, 5.0) == []  # nothing left


async def test_sweep_kills_what_ignores_the_signal(tagged: Tagged) -> None:
    prefix, started = tagged
    start_tagged(prefix, started, IGNORE_SIGTERM)
    with trio.fail_after(T):
        await Scanner().sweep(prefix, signal.SIGTERM, 0.2)
        started[0].wait()
    assert started[0].returncode == -signal.SIGKILL


async def test_concurrent_finds_share_one_scan(
    tagged: Tagged, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix, started = tagged
    pid = start_tagged(prefix, started, SLEEP_FOREVER)
    scans: list[set[bytes]] = []
    scan = _procfs.tagged

    def counting(var: str, values: set[bytes], **kwargs: Any) -> dict[bytes, list[int]]:
        scans.append(set(values))
        return scan(var, values, **kwargs)

    monkeypatch.setattr(_procfs, "tagged", counting)
    scanner = Scanner()
    found: dict[bytes, list[int]] = {}

    async def find(value: bytes) -> None:
        found[value] = await scanner.find(value)

    other = f"test-{secrets.token_hex(6)}.".encode()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(find, prefix)
        nursery.start_soon(find, other)
    assert scans == [{prefix, other}]  # one scan for both
    assert found == {prefix: [pid], other: []}


async def test_a_process_in_an_exec_is_looked_at_again(
    tagged: Tagged, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its environment reads empty until the exec is done: the scan notes it,
    # and the sweep looks at it again once it shows one.
    prefix, started = tagged
    pid = start_tagged(prefix, started, SLEEP_FOREVER)
    scan = _procfs.tagged
    looks: list[int] = []

    def in_exec_at_first(var: str, values: set[bytes], **kwargs: Any) -> dict[bytes, list[int]]:
        found = scan(var, values, **kwargs)
        if var == TAG_VAR:  # the sweep's scan (the tests' own scans pass through)
            found.pop(prefix, None)  # as if its environment had read empty
            kwargs["in_exec"].append(pid)
        return found

    def pending(p: int) -> bool:
        looks.append(p)
        return len(looks) < 3  # done with its exec at the third look

    monkeypatch.setattr(_procfs, "tagged", in_exec_at_first)
    monkeypatch.setattr(_procfs, "exec_pending", pending)
    with trio.fail_after(T):
        assert await Scanner().find(prefix) == [pid]
    assert looks == [pid, pid, pid]


def test_stated_worst_case() -> None:
    # Every round may wait for an exec to finish and for SIGKILL; the first
    # also waits the grace.
    assert Scanner.max_sweep_time(2.0) == 2.0 + _sweep._ROUNDS * (_sweep._EXEC_WAIT + KILL_WAIT)
