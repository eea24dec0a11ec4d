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
from trio_overseer.testing import port_range

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _inner_runs_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    # With CI (or BUILD_NUMBER) set, as .ci/run has it, pytest prints the
    # short summary untruncated: each inner verdict would be read twice.
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("BUILD_NUMBER", raising=False)


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


def daemon_launcher(hold_pipe: bool = False, then: str = "exit") -> str:
    """A proc that starts a daemon (a grandchild in a session of its own, out of
    reach of signals to the group), prints "daemon <pid>", then exits 0
    (``then="exit"``) or sleeps (``then="sleep"``).  With `hold_pipe` the
    daemon keeps the proc's stdout open (so the run drains after the exit)."""
    out = "None" if hold_pipe else "subprocess.DEVNULL"
    return textwrap.dedent(
        f"""
        import subprocess, sys, time
        gc = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(3600)"],
            start_new_session=True, stdout={out}, stderr={out},
        )
        print("daemon", gc.pid, flush=True)
        while {then == "sleep"!r}:
            time.sleep(3600)
        """
    )


#: Starts a daemon, prints its pid and exits 0 at once: a proc that daemonizes.
DAEMON = daemon_launcher()


def run_inner(pytester: pytest.Pytester, code: str, *args: str, ini: str = "") -> pytest.RunResult:
    pytester.makeini(INI + ini)
    pytester.makepyfile(test_inner=HEADER + textwrap.dedent(code))
    return pytester.runpytest_subprocess(*args, timeout=120)


def reported_daemons(result: pytest.RunResult) -> list[int]:
    """The pids that the leak verdicts in `result` name as daemons."""
    found = re.findall(
        r"pid (\d+) \(.*\) of proc '\w+': left its proc's process group \(a daemon\), "
        r"ended by the overseer",
        result.stdout.str(),
    )
    return [int(pid) for pid in found]


def printed_daemons(result: pytest.RunResult) -> list[int]:
    """The pids that the inner procs printed as "daemon <pid>"."""
    return [int(pid) for pid in re.findall(r"daemon (\d+)", result.stdout.str())]


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
            f"*  pid {pid} (*time.sleep(3600)) of proc 'leaky': left its proc's process group"
            " (a daemon), ended by the overseer",
            "*@pytest.mark.overseer(allow_daemons=True), or the ini option "
            "overseer_allow_daemons = true*",
            "*-- overseer output: proc 'leaky' (last 50 lines) --*",
            f"  out| daemon {pid}",
        ]
    )
    assert wait_gone_sync([pid], 5.0) == []


# The verdict does not depend on when the test ends: whether the daemon is
# swept as part of the stop (its launcher still runs, or it holds the pipes
# the run is draining) or found at the end, long after its launcher exited.
TIMINGS = {
    # The launcher still runs when the test ends: the stop sweeps the daemon.
    "launcher_running": (daemon_launcher(then="sleep"), ""),
    # The launcher has exited, the daemon holds its stdout: the run is still
    # draining (1 s) when the test ends, the stop sweeps the daemon.
    "within_1s_of_exit": (daemon_launcher(hold_pipe=True), ""),
    # The run has ended long before the test ends (after the drain).
    "1.5s_after_exit": (
        daemon_launcher(hold_pipe=True),
        'await overseer.wait_for_state("leaky", State.FINISHED)\n'
        "            await trio.sleep(1.5)  # long after the end, as the issue saw",
    ),
    # A failed run's daemon is swept before its restart, during the test.
    "before_a_restart": (
        daemon_launcher() + "sys.exit(1)\n",
        'await overseer.wait_for_state("leaky", State.STARTING)  # the restart\n'
        '            await overseer.wait_for_log("leaky", "daemon")',
    ),
}


@pytest.mark.parametrize("timing", TIMINGS)
def test_daemon_fails_the_test_whatever_the_timing(pytester: pytest.Pytester, timing: str) -> None:
    launcher, wait = TIMINGS[timing]
    retry = 1 if timing == "before_a_restart" else 0
    result = run_inner(
        pytester,
        f"""
        LAUNCHER = {launcher!r}

        async def test_daemonizes(overseer):
            overseer.add("leaky", PY, ["-c", LAUNCHER], retry_times={retry})
            await overseer.start("leaky")
            await overseer.wait_for_log("leaky", "daemon")
            {wait or "pass"}
        """,
    )
    result.assert_outcomes(failed=1)
    daemons = printed_daemons(result)
    assert daemons, result.stdout.str()
    assert sorted(reported_daemons(result)) == sorted(set(daemons)), result.stdout.str()
    assert wait_gone_sync(daemons, 5.0) == []


ALLOWED = f"""
LAUNCHER = {daemon_launcher(then="sleep")!r}

async def test_daemonizes(overseer):
    overseer.add("leaky", PY, ["-c", LAUNCHER])
    await overseer.start("leaky")
    await overseer.wait_for_log("leaky", "daemon")

def test_daemonizes_sync(overseer_sync):
    overseer_sync.start("leaky", PY, ["-c", LAUNCHER], ready_line="daemon")
"""


def test_allow_daemons_marker(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        "pytestmark = pytest.mark.overseer(allow_daemons=True)\n" + ALLOWED,
    )
    result.assert_outcomes(passed=2)
    daemons = printed_daemons(result) or []
    assert reported_daemons(result) == []
    # still ended, only not reported
    assert wait_gone_sync(daemons, 5.0) == []


def test_allow_daemons_ini_and_the_marker_overrides_it(pytester: pytest.Pytester) -> None:
    code = ALLOWED + textwrap.dedent(
        """
        @pytest.mark.overseer(allow_daemons=False)
        async def test_strict(overseer):
            overseer.add("leaky", PY, ["-c", LAUNCHER])
            await overseer.start("leaky")
            await overseer.wait_for_log("leaky", "daemon")
        """
    )
    result = run_inner(pytester, code, "-s", ini="overseer_allow_daemons = true\n")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*FAILED test_inner.py::test_strict*"])
    assert len(reported_daemons(result)) == 1


@pytest.mark.parametrize(
    ("marker", "shown"),
    [
        ("pytest.mark.overseer(allow_daemon=True)", "allow_daemon=True"),
        ("pytest.mark.overseer(True)", "True"),
        ("pytest.mark.overseer(allow_daemons='yes')", "allow_daemons='yes'"),
    ],
)
def test_bad_marker_is_a_clear_error(pytester: pytest.Pytester, marker: str, shown: str) -> None:
    result = run_inner(
        pytester,
        f"""
        @{marker}
        async def test_a(overseer):
            pass

        @{marker}
        def test_b(overseer_sync):
            pass
        """,
    )
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            f"*@pytest.mark.overseer({shown}) on test_inner.py::test_a: the marker takes only "
            "allow_daemons=True or allow_daemons=False*"
        ]
    )
    assert "Traceback" not in result.stdout.str()


@pytest.mark.parametrize(
    ("ini", "message"),
    [
        (
            "overseer_allow_daemons = maybe",
            "ini option overseer_allow_daemons must be true or false, got 'maybe'",
        ),
        (
            "overseer_output_lines = lots",
            "ini option overseer_output_lines must be a whole number of lines >= 0, got 'lots'",
        ),
    ],
)
def test_bad_ini_option_is_a_usage_error(pytester: pytest.Pytester, ini: str, message: str) -> None:
    result = run_inner(pytester, "def test_a():\n    pass\n", ini=ini + "\n")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert "Traceback" not in result.stderr.str()


# --- the sync fixture --------------------------------------------------------------


def test_overseer_sync(pytester: pytest.Pytester) -> None:
    pidfile = pytester.path / "pids"
    result = run_inner(
        pytester,
        f"""
        DAEMON = {DAEMON!r}
        CHATTY = "import time\\nfor i in range(5): print('line', i, flush=True)\\n" + (
            "time.sleep(3600)"
        )

        def test_ready_and_stopped(overseer_sync):
            info = overseer_sync.start("srv", PY, SLEEP_FOREVER, ready_line="^ready$")
            assert info.state is State.RUNNING
            assert [m.text for m in overseer_sync.output("srv")] == ["ready"]
            with open({str(pidfile)!r}, "a") as f:
                print(info.pid, file=f)

        def test_not_ready(overseer_sync):
            from trio_overseer import NotReadyError
            with pytest.raises(NotReadyError, match="'never' ended before it was ready"):
                overseer_sync.start("never", PY, ["-c", "pass"], ready_port=1)

        def test_output_on_failure(overseer_sync):
            overseer_sync.start("web", PY, ["-c", CHATTY], ready_line="line 4")
            assert False, "the test failed"

        def test_leaks(overseer_sync):
            overseer_sync.start("leaky", PY, ["-c", DAEMON])  # exits at once: no ready_line
            overseer_sync.run(finished)

        async def finished(ovr):
            return await ovr.wait_for_state("leaky", State.FINISHED)
        """,
    )
    result.assert_outcomes(passed=3, failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaks*",
            "*overseer_sync fixture: processes outlived their procs (now killed):",
            "*  pid * of proc 'leaky': left its proc's process group (a daemon), ended by*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: the test failed",
            "*-- overseer output: proc 'web' (last 50 lines) --*",
            "  out| line 0",
            "  out| line 4",
        ]
    )
    # stopped at the end of its test
    assert not pid_alive(int(pidfile.read_text()))
    assert wait_gone_sync(printed_daemons(result), 5.0) == []


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
            assert "cache" not in overseer_session.run(list_all)  # stopped and unregistered

        async def list_all(ovr):
            return ovr.list_all()

        @pytest.mark.parametrize("n", range(3))
        def test_uses_db(db, cache, overseer_session, n):
            assert overseer_session.status("db").pid == db.pid
            assert [m.text for m in overseer_session.output("db")] == ["ready"]
            with open({str(pidfile)!r}, "a") as f:
                print(db.pid, cache.pid, file=f)

        def test_not_ready(overseer_session):
            from trio_overseer import NotReadyError
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
            overseer_session.start("leaky", PY, ["-c", DAEMON])
            overseer_session.run(finished)
        """,
    )
    # A leftover is found at the end of the session: an error of the last test.
    result.assert_outcomes(passed=6, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaks*",
            "*overseer_session: processes outlived their procs (now killed):",
            "*  pid * of proc 'leaky': left its proc's process group (a daemon), ended by*",
        ]
    )
    pids = {line for line in pidfile.read_text().splitlines()}
    assert len(pids) == 1  # started once for every test
    db, cache = map(int, pids.pop().split())
    assert not pid_alive(db)
    assert not pid_alive(cache)


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


# --- pytest-xdist --------------------------------------------------------------------

#: Listens on the port in argv[1], prints "listening", sleeps.
LISTEN = (
    "import socket, sys, time\n"
    "sock = socket.create_server(('127.0.0.1', int(sys.argv[1])))\n"
    "print('listening', flush=True)\n"
    "while True: time.sleep(3600)\n"
)


def test_xdist_workers_keep_to_their_own(pytester: pytest.Pytester) -> None:
    """Four workers: a session proc each (started once per worker, all running
    at once), per-test procs on ports from `free_port()`, and a leaking test
    in each worker whose leak check reports and ends its own daemon only."""
    import xdist  # noqa: F401 - the test extra installs it: fail loudly without

    shared = pytester.path / "shared"
    shared.mkdir()
    result = run_inner(
        pytester,
        f"""
        import glob, socket, time
        from trio_overseer.testing import free_port, port_range
        SHARED = {str(shared)!r}
        LISTEN = {LISTEN!r}
        DAEMON = {DAEMON!r}
        WORKER = os.environ["PYTEST_XDIST_WORKER"]

        def note(kind, *values):
            with open(os.path.join(SHARED, "-".join([kind, WORKER, *map(str, values)])), "w"):
                pass

        @pytest.fixture(scope="session")
        def server(overseer_session):
            port = free_port()
            info = overseer_session.start("srv", PY, ["-c", LISTEN, str(port)], ready_port=port)
            note("session", info.pid, port)
            # Every worker's session proc runs before any test goes on, so the
            # leak checks below run while all of them do.
            deadline = time.monotonic() + 60
            while len(glob.glob(os.path.join(SHARED, "session-*"))) < 4:
                assert time.monotonic() < deadline, "not every worker started its session proc"
                time.sleep(0.02)
            yield port
            info = overseer_session.status("srv")
            assert info.state is State.RUNNING and info.restarts == 0, info

        @pytest.mark.parametrize("n", range(12))
        def test_own_procs(server, overseer_sync, n):
            with socket.create_connection(("127.0.0.1", server), timeout=10):
                pass
            port = free_port()
            assert port in port_range()
            overseer_sync.start("own", PY, ["-c", LISTEN, str(port)], ready_port=port)
            note("port", port)

        async def finished(ovr):
            return await ovr.wait_for_state("leaky", State.FINISHED)

        @pytest.mark.parametrize("n", range(4))
        def test_leaks(server, overseer_sync, n):
            overseer_sync.start("leaky", PY, ["-c", DAEMON])
            overseer_sync.run(finished)
        """,
        "-n",
        "4",
    )
    result.assert_outcomes(passed=16, errors=4)
    # Each leak check reported its own daemon, and nothing else.
    daemons = printed_daemons(result)
    assert len(set(daemons)) == 4
    assert sorted(reported_daemons(result)) == sorted(set(daemons))
    assert wait_gone_sync(daemons, 5.0) == []
    notes = [path.name.split("-") for path in shared.iterdir()]
    sessions = [n for n in notes if n[0] == "session"]
    # one session proc per worker, started once
    assert sorted(n[1] for n in sessions) == ["gw0", "gw1", "gw2", "gw3"]
    assert not any(pid_alive(int(n[2])) for n in sessions)
    # no port handed out twice, each from its worker's slice
    ports = [(n[1], int(n[-1])) for n in notes if n[0] in ("session", "port")]
    assert len(ports) == 16
    assert len({port for _, port in ports}) == 16
    for worker, port in ports:
        assert port in port_range(worker=worker, workers="4"), (worker, port)
