"""Spawning: both ways (posix_spawn and the Popen fallback) keep Popen's guarantees."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
from children import PY, REPORT_SETUP, SLEEP_FOREVER, T, python

from trio_overseer import Cmd, State, _posix_spawn, _spawn

#: Prints the descriptors it was started with (the listing's own is left out).
PRINT_FDS = python(
    """
    import os
    fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    print(" ".join(str(fd) for fd in fds if os.path.exists(f"/proc/self/fd/{fd}")))
    """
)


async def run(cmd: Cmd) -> Any:
    with trio.fail_after(T):
        return await cmd.run()


async def test_no_descriptor_is_inherited(spawn_way: str) -> None:
    # An inheritable descriptor of the parent (one Popen's close_fds closes)
    # does not reach the child; nor do the pipes of other children.
    leaky = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(leaky, True)
    try:
        status = await run(Cmd(PY, PRINT_FDS))
    finally:
        os.close(leaky)
    fds = [int(fd) for fd in status.stdout[0].split()]
    assert fds[:3] == [0, 1, 2], (leaky, fds)
    assert leaky not in fds, (leaky, fds)
    assert len(fds) <= 4, fds  # 0, 1, 2 and the listing's own


async def test_group_stdin_and_signals_as_popen(spawn_way: str) -> None:
    status = await run(Cmd(PY, REPORT_SETUP))
    assert status.stdout == ("pgid==pid True", "stdin /dev/null", "stdin read ''")
    # Python ignores SIGPIPE and SIGXFSZ; children get them back at their
    # default (Popen's restore_signals): cat reads its own ignored-set.
    status = await run(Cmd("cat", ["/proc/self/status"]))
    ignored = int(next(ln for ln in status.stdout if ln.startswith("SigIgn:")).split()[1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1) | 1 << (signal.SIGXFSZ - 1)), hex(ignored)


async def test_path_search_uses_the_childs_path(spawn_way: str, tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "prog").write_text("#!/bin/sh\necho not executable\n")  # skipped: EACCES
    (second / "prog").write_text("#!/bin/sh\necho from b\n")
    (second / "prog").chmod(0o755)
    env = {"PATH": f"{tmp_path / 'missing'}:{first}:{second}", **_tag()}
    status = await run(Cmd("prog", env=env))
    assert (status.exit, status.stdout) == (0, ("from b",)), status
    (second / "prog").unlink()
    status = await run(Cmd("prog", env=env))  # the first error other than "not found"
    assert status.error == "cannot start 'prog': Permission denied: 'prog'", status


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("missing", "cannot start '{d}/nope': No such file or directory: '{d}/nope'"),
        ("no shebang", "cannot start '{d}/script': Exec format error: '{d}/script'"),
        ("a directory", "cannot start '{d}': Permission denied: '{d}'"),
        ("bad dir", "cannot start '{py}' in dir '{d}/nope': No such file or directory: '{d}/nope'"),
        ("dir is a file", "cannot start '{py}' in dir '{d}/script': Not a directory: '{d}/script'"),
        ("relative", "cannot start './nope' in dir '{d}': No such file or directory: './nope'"),
    ],
)
async def test_errors_read_as_popens(spawn_way: str, tmp_path: Path, case: str, error: str) -> None:
    script = tmp_path / "script"
    script.write_text("exit 0\n")
    script.chmod(0o755)
    d = str(tmp_path)
    cmd = {
        "missing": Cmd(f"{d}/nope"),
        "no shebang": Cmd(str(script)),
        "a directory": Cmd(d),
        "bad dir": Cmd(PY, ["-c", "pass"], dir=f"{d}/nope"),
        "dir is a file": Cmd(PY, ["-c", "pass"], dir=script),
        "relative": Cmd("./nope", dir=d),
    }[case]
    status = await run(cmd)
    assert cmd.state is State.FATAL
    assert status.error == error.format(d=d, py=PY)


def _tag() -> dict[str, str]:
    from children import TAG_VAR

    return {TAG_VAR: os.environ[TAG_VAR]}


@pytest.fixture
def held_spawn(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Spawns in a worker thread wait there: (one is waiting, let them go on)."""
    if _spawn._POSIX_SPAWN is None:
        pytest.skip("spawns use threads only with posix_spawn")
    in_thread = threading.Event()
    go_on = threading.Event()
    real_run = _posix_spawn.Prepared.run

    def slow_run(prepared: _posix_spawn.Prepared) -> int:
        if threading.current_thread() is not threading.main_thread():
            in_thread.set()
            go_on.wait(T)
        return real_run(prepared)

    monkeypatch.setattr(_posix_spawn.Prepared, "run", slow_run)
    return in_thread, go_on


@pytest.mark.parametrize("end", ["stop", "kill", "cancel"])
async def test_ended_while_the_spawn_waits_in_a_thread(
    held_spawn: tuple[threading.Event, threading.Event], end: str
) -> None:
    # Another child is alive, so the spawn goes to a worker thread.  A stop()
    # or kill() arriving meanwhile is done as soon as the process exists; a
    # cancellation lets the spawn complete, then stops the child like any
    # other run's (nothing is left behind, run() re-raises).
    in_thread, go_on = held_spawn
    other = Cmd(PY, SLEEP_FOREVER)
    cmd = Cmd(PY, SLEEP_FOREVER, stop_timeout=60)
    with trio.fail_after(T):
        async with trio.open_nursery() as outer:
            await outer.start(other.run)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(cmd.run)
                await trio.to_thread.run_sync(in_thread.wait)
                assert cmd.state is State.STARTING
                if end == "cancel":
                    nursery.cancel_scope.cancel()
                else:
                    cmd.stop()
                    cmd.stop()  # idempotent
                    if end == "kill":
                        cmd.kill()  # escalates: SIGKILL at once, no 60 s wait
                go_on.set()
            other.stop()
    status = cmd.status()
    assert cmd.state is State.INTERRUPTED, status
    assert status.pid > 0, status
    if end != "cancel":
        sig = signal.SIGKILL if end == "kill" else signal.SIGTERM
        assert status.exit == -sig, status
        assert status.error == f"signal: {sig.name}", status


async def test_many_at_once_overlap_and_all_end(spawn_way: str) -> None:
    # 40 spawns at once (threads when posix_spawn is there): every one runs.
    cmds = [Cmd(sys.executable, ["-c", f"print({i})"]) for i in range(40)]
    results: list[Any] = []

    async def one(cmd: Cmd) -> None:
        results.append(await cmd.run())

    with trio.fail_after(T):
        async with trio.open_nursery() as nursery:
            for cmd in cmds:
                nursery.start_soon(one, cmd)
    assert sorted(int(s.stdout[0]) for s in results) == list(range(40))
    assert all(s.exit == 0 for s in results)


async def test_queued_spawns_each_get_their_own_outcome(
    spawn_way: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # One worker thread, 30 spawns at once: most wait in the queue and one
    # thread runs them in turn.  Each owner gets its own child or its own
    # error, never another's.
    monkeypatch.setattr(_spawn, "_SPAWN_THREADS", 1)
    batches: list[int] = []
    real_drain = _spawn._drain

    def drain(queue: Any) -> Any:
        done = real_drain(queue)
        batches.append(len(done))
        return done

    monkeypatch.setattr(_spawn, "_drain", drain)
    missing = tmp_path / "missing"
    cmds = [
        Cmd(os.fspath(missing), [str(i)]) if i % 3 == 0 else Cmd(PY, ["-c", f"print({i})"])
        for i in range(30)
    ]
    results: dict[int, Any] = {}

    async def one(i: int, cmd: Cmd) -> None:
        results[i] = await cmd.run()

    with trio.fail_after(T):
        async with trio.open_nursery() as nursery:
            for i, cmd in enumerate(cmds):
                nursery.start_soon(one, i, cmd)
    for i, status in results.items():
        if i % 3 == 0:
            assert cmds[i].state is State.FATAL, status
            assert status.error.startswith(f"cannot start {os.fspath(missing)!r}"), status
        else:
            assert cmds[i].state is State.FINISHED, status
            assert (status.exit, status.stdout) == (0, (str(i),)), status
    assert len({s.pid for s in results.values() if s.pid}) == 20
    if spawn_way == "posix_spawn":  # Popen spawns inline: no queue
        assert sum(batches) >= 20, batches
        assert max(batches) > 1, batches  # one hop served several
