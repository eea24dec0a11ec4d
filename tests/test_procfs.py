"""`_procfs`: the one reader of /proc, against processes started here."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from children import PY, SLEEP_FOREVER

from trio_overseer import _procfs

pytestmark = pytest.mark.skipif(not _procfs.available(), reason="no /proc here")

MARK = "TRIO_OVERSEER_PROCFS_TEST"


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A sleeping child in a process group of its own, marked ``MARK=<uuid>``; always reaped."""
    env = {**os.environ, MARK: uuid.uuid4().hex}
    child = subprocess.Popen([PY, *SLEEP_FOREVER], env=env, stdout=subprocess.PIPE, process_group=0)
    assert child.stdout is not None
    assert child.stdout.readline() == b"ready\n"  # its environment and stat are in place
    try:
        yield child
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


def mark_of(child: subprocess.Popen[bytes]) -> str:
    value = _procfs.environ_value(child.pid, MARK)
    assert value is not None
    return value


def test_stat_of_self_and_of_a_child(sleeper: subprocess.Popen[bytes]) -> None:
    me = _procfs.stat("self")
    assert me is not None
    assert me.state == "R"
    assert me.ppid == os.getppid()
    info = _procfs.stat(sleeper.pid)
    assert info is not None
    assert (info.ppid, info.pgrp) == (os.getpid(), sleeper.pid)
    assert info.state in "SR"
    assert info.cpu_ticks >= 0
    assert _procfs.alive(sleeper.pid)
    assert _procfs.stat(2**22 + 1) is None  # above any pid_max: never a process


def test_a_zombie_is_not_alive(sleeper: subprocess.Popen[bytes]) -> None:
    os.kill(sleeper.pid, signal.SIGKILL)
    os.waitid(os.P_PID, sleeper.pid, os.WEXITED | os.WNOWAIT)  # dead, not reaped
    assert not _procfs.alive(sleeper.pid)
    assert sleeper.pid in _procfs.zombies_of(os.getpid())
    assert not _procfs.has_living_member(sleeper.pid)
    assert _procfs.group_members(sleeper.pid) == []
    sleeper.wait()
    assert _procfs.stat(sleeper.pid) is None
    assert sleeper.pid not in _procfs.zombies_of(os.getpid())


def test_group_members(sleeper: subprocess.Popen[bytes]) -> None:
    assert _procfs.group_members(sleeper.pid) == [sleeper.pid]
    assert _procfs.has_living_member(sleeper.pid)
    assert os.getpid() not in _procfs.group_members(sleeper.pid)


def test_tagged_by_value_and_prefix(sleeper: subprocess.Popen[bytes]) -> None:
    mark = mark_of(sleeper).encode()
    assert _procfs.tagged(MARK, [mark]) == {mark: [sleeper.pid]}
    assert _procfs.tagged(MARK, [mark], exact=True) == {mark: [sleeper.pid]}
    assert _procfs.tagged(MARK, [mark[:8]]) == {mark[:8]: [sleeper.pid]}
    assert _procfs.tagged(MARK, [mark[:8]], exact=True) == {}
    assert _procfs.tagged(MARK, [mark], exclude=[sleeper.pid]) == {}
    assert _procfs.tagged(MARK + "X", [mark]) == {}  # the name is matched whole
    assert _procfs.carries(sleeper.pid, MARK, mark[:8])
    assert not _procfs.carries(sleeper.pid, MARK, mark[:8], exact=True)
    assert _procfs.environ_value(sleeper.pid, "NO_SUCH_VARIABLE_HERE") is None


def test_text_readers(sleeper: subprocess.Popen[bytes]) -> None:
    assert _procfs.cmdline(sleeper.pid).startswith(f"{PY} -I -S -u -c")
    text = _procfs.describe(sleeper.pid, limit=40)
    assert text.startswith(f"pid {sleeper.pid} (")
    assert text.endswith("...)")
    assert len(text) <= len(f"pid {sleeper.pid} ()") + 40
    assert int(_procfs.status_value("self", "VmRSS") or 0) > 0
    assert _procfs.status_value(sleeper.pid, "Uid") == str(os.getuid())
    assert _procfs.status_value(sleeper.pid, "NoSuchField") is None
    assert _procfs.read(2**22 + 1, "stat") is None
    assert _procfs.describe(2**22 + 1) == f"pid {2**22 + 1} (?)"


def test_pids_lists_self_and_child(sleeper: subprocess.Popen[bytes]) -> None:
    listed = set(_procfs.pids())
    assert {os.getpid(), sleeper.pid} <= listed


def test_exec_pending_only_in_the_middle_of_an_exec(sleeper: subprocess.Popen[bytes]) -> None:
    # Caught in the act only on a busy machine (the sweep's tests under load);
    # what must never look like an exec in progress:
    assert not _procfs.exec_pending(os.getpid())
    assert not _procfs.exec_pending(sleeper.pid)
    empty = subprocess.Popen([PY, *SLEEP_FOREVER], env={}, stdout=subprocess.PIPE)
    try:
        assert empty.stdout is not None
        assert empty.stdout.readline() == b"ready\n"
        assert _procfs.read(empty.pid, "environ") == b""  # no environment at all...
        assert not _procfs.exec_pending(empty.pid)  # ... for good: not an exec in progress
        in_exec: list[int] = []
        _procfs.tagged(MARK, [b"x"], in_exec=in_exec)
        assert empty.pid not in in_exec
    finally:
        empty.kill()
        empty.wait()
        assert empty.stdout is not None
        empty.stdout.close()
    os.kill(sleeper.pid, signal.SIGKILL)
    os.waitid(os.P_PID, sleeper.pid, os.WEXITED | os.WNOWAIT)
    assert not _procfs.exec_pending(sleeper.pid)  # a zombie
