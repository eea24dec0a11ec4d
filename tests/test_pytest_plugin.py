"""The pytest plugin: the `overseer` and `overseer_session` fixtures, run by pytester."""

from __future__ import annotations

import os
import re
import subprocess
import textwrap

import pytest
from children import PY, SLEEP_FOREVER, pid_alive, wait_gone_sync

from trio_overseer import Overseer
from trio_overseer.pytest_plugin import _group_members, _Watcher

pytest_plugins = ["pytester"]

INI = """
[pytest]
trio_mode = true
filterwarnings = error
addopts = -p no:cacheprovider
"""

#: Snippets for the inner tests (PY is the outer test's interpreter).
HEADER = f"""
import os, sys, textwrap
import pytest, trio
from trio_overseer import State
PY = {PY!r}
SLEEP_FOREVER = {SLEEP_FOREVER!r}
"""


#: Starts a grandchild in a session of its own (out of reach of signals to the
#: group), prints its pid and exits 0 at once: a proc that daemonizes.
DAEMON = textwrap.dedent(
    """
    import subprocess, sys
    gc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(3600)"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    print("daemon", gc.pid)
    """
)


def run_inner(pytester: pytest.Pytester, code: str, *args: str) -> pytest.RunResult:
    pytester.makeini(INI)
    pytester.makepyfile(test_inner=HEADER + textwrap.dedent(code))
    return pytester.runpytest_subprocess(*args, timeout=60)


def test_leftover_grandchild_fails_the_test_and_is_killed(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        f"""
        DAEMON = {DAEMON!r}

        async def test_daemonizes(overseer):
            overseer.add("leaky", PY, ["-c", DAEMON])
            await overseer.start("leaky")
            info = await overseer.wait_for_state("leaky", State.FINISHED)
            assert info.exit_code == 0
        """,
    )
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    pid = int(re.search(r"out\| daemon (\d+)", out)[1])  # type: ignore[index]
    result.stdout.fnmatch_lines(
        [
            "*overseer fixture: processes outlived their procs (now killed):",
            f"*  pid {pid} (*time.sleep(3600)) of proc 'leaky': still running after its proc ended",
            "*-- overseer output: proc 'leaky' (last 50 lines) --*",
            f"  out| daemon {pid}",
        ]
    )
    assert wait_gone_sync([pid], 5.0) == []


def test_passing_test_and_output_attached_on_failure(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI + "overseer_output_lines = 3\n")
    pytester.makepyfile(
        test_inner=HEADER
        + textwrap.dedent(
            """
            # Lines on stdout, then (once the test says so: two pipes have no
            # order between them) one on stderr.
            CHATTY = (
                "import os, sys, time\\nfor i in range(10): print('line', i, flush=True)\\n"
                "while not os.path.exists(sys.argv[1]): time.sleep(0.01)\\n"
                "print('oops', file=sys.stderr)"
            )

            async def test_fails(overseer, tmp_path):
                go = tmp_path / "go"
                overseer.add("web", PY, ["-c", CHATTY, str(go)])
                await overseer.start("web")
                await overseer.wait_for_log("web", "line 9")
                go.touch()
                await overseer.wait_for_log("web", "oops")
                assert False, "the test failed"

            async def test_passes(overseer):
                overseer.add("srv", PY, SLEEP_FOREVER, ready_line="^ready$")
                info = await overseer.start("srv")
                assert info.state.value == "running"
                with open("pid", "w") as f:
                    f.write(str(info.pid))
            """
        )
    )
    result = pytester.runpytest_subprocess(timeout=60)
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: the test failed",
            "*-- overseer output: proc 'web' (last 3 lines) --*",
            "  out| line 8",
            "  out| line 9",
            "  err| oops",
        ]
    )
    assert "line 7" not in result.stdout.str()
    assert "proc 'srv'" not in result.stdout.str()  # the passing test
    assert not pid_alive(int((pytester.path / "pid").read_text()))


def test_session_procs(pytester: pytest.Pytester) -> None:
    pidfile = pytester.path / "pids"
    result = run_inner(
        pytester,
        f"""
        DAEMON = {DAEMON!r}

        @pytest.fixture(scope="session")
        def db(overseer_session):
            return overseer_session.start("db", PY, SLEEP_FOREVER, ready_line="^ready$")

        @pytest.fixture(scope="module")
        def cache(overseer_session):
            with overseer_session.running("cache", PY, SLEEP_FOREVER, ready_line="ready") as info:
                yield info
            assert overseer_session.run(list_all) == ["db"]  # stopped and unregistered

        async def list_all(ovr):
            return ovr.list_all()

        @pytest.mark.parametrize("n", range(3))
        def test_uses_db(db, cache, overseer_session, n):
            assert overseer_session.status("db").pid == db.pid
            assert [m.text for m in overseer_session.output("db")] == ["ready"]
            with open({str(pidfile)!r}, "a") as f:
                print(db.pid, cache.pid, file=f)

        def test_not_ready(overseer_session):
            from trio_overseer._ready import NotReadyError
            with pytest.raises(NotReadyError, match="'never' ended before it was ready"):
                overseer_session.start("never", PY, ["-c", "pass"], ready_port=1)
            assert overseer_session.start("never", PY, SLEEP_FOREVER).pid  # id free again
            overseer_session.stop("never")

        async def test_from_trio(overseer_session):
            info = await trio.to_thread.run_sync(overseer_session.status, "db")
            assert info.state.value == "running"

        async def finished(ovr):
            return await ovr.wait_for_state("leaky", State.FINISHED)

        def test_leaks(overseer_session):
            overseer_session.start("leaky", PY, ["-c", DAEMON], ready_line="daemon")
            overseer_session.run(finished)
        """,
    )
    # A leftover is found at the end of the session: an error of the last test.
    result.assert_outcomes(passed=6, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaks*",
            "*overseer_session: processes outlived their procs (now killed):",
            "*  pid * of proc 'leaky': still running after its proc ended",
        ]
    )
    pids = {line for line in pidfile.read_text().splitlines()}
    assert len(pids) == 1  # started once for every test
    db, cache = map(int, pids.pop().split())
    assert not pid_alive(db) and not pid_alive(cache)


# --- the helpers, in process ---------------------------------------------------------


def test_zombie_and_group_detection() -> None:
    watcher = _Watcher(Overseer(), 5)
    exited = subprocess.Popen([PY, "-c", "pass"])
    os.waitid(os.P_PID, exited.pid, os.WEXITED | os.WNOWAIT)  # it has exited, not reaped
    plain = subprocess.Popen([PY, *SLEEP_FOREVER])  # in our process group
    leader = subprocess.Popen([PY, *SLEEP_FOREVER], process_group=0)
    try:
        watcher.pids = {exited.pid: "z", plain.pid: "p", leader.pid: "l"}
        assert watcher.zombies() == {exited.pid: "proc 'z'"}
        assert _group_members(plain.pid) == []  # no process group of that id
        assert _group_members(leader.pid) == [leader.pid]
    finally:
        for child in (exited, plain, leader):
            child.kill()
            child.wait()
    assert watcher.zombies() == {}
    assert _group_members(leader.pid) == []
