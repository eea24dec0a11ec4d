"""pytest plugin: Overseer fixtures whose processes cannot outlive the test.

Registered by the ``pytest11`` entry point.  Three fixtures:

- `overseer` (function scope, async; needs pytest-trio): an open Overseer.
- `overseer_sync` (function scope, sync): a `SyncOverseer` for one test,
  with blocking methods (`start`, `stop`, `running`, ...) for sync tests.
- `overseer_session` (session scope, sync): a `SyncOverseer` for the whole
  session (under pytest-xdist: one per worker), for procs started once for
  many tests (a database).

The leak verdict, the same for all three.  At teardown every proc is
stopped and reaped; then the test FAILS, naming each process, if a process
started by a proc had to be hunted down outside its proc's process group (a
daemon: ``setsid``, a double fork), whichever sweep of the Overseer ended
it: at the stop of a proc whose pipes it held, before a restart, at
``remove()``, or at the end.  The Overseer tells the plugin what each sweep
finds (`Overseer._observe_sweeps`) before it signals it, so the verdict does
not depend on how long ago the daemon's launcher exited.  A test that
expects daemons says so (``@pytest.mark.overseer(allow_daemons=True)``, or
the ini option ``overseer_allow_daemons = true``): they are still ended, not
reported.  A process still alive after the Overseer's cleanup, and a run
left a zombie, always fail the test; such processes are killed.  When the
test fails, the last lines of every proc's output are attached to the
report.

Processes are found by the tag every child carries in its environment
(``TRIO_OVERSEER_TAG``, inherited by every descendant, see ``_sweep``), which
is unique to the Overseer (so a check never touches another test's or
another xdist worker's processes), by the process group of each run, and by
``/proc/<pid>/stat`` for zombies.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Sequence
from typing import Any, TypeVar

import attrs
import pytest
import trio

from . import _procfs
from ._block import open_overseer
from ._errors import ProcRunningError, UnknownProcError
from ._overseer import Overseer
from ._ready import format_lines
from ._records import LogBatch, LogMsg, ProcessInfo
from ._state import FINAL_STATES, State
from ._sweep import TAG_VAR
from ._tail import LineTail

_T = TypeVar("_T")

_STOP_TIMEOUT = 2.0  # seconds from the stop signal to SIGKILL, in the fixtures
_SETTLE = 10.0  # bound of the wait for stopped procs to end before the checks
_INI_LINES = "overseer_output_lines"
_INI_DAEMONS = "overseer_allow_daemons"
_MARKER = "overseer"
_SECTIONS = pytest.StashKey[Callable[[], list[tuple[str, str]]]]()
_REPORTED = pytest.StashKey[bool]()
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0", ""}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        _INI_LINES,
        "lines of output kept per proc of the overseer fixtures, shown when a test fails",
        default="50",  # type="int" needs pytest 8.4
    )
    parser.addini(
        _INI_DAEMONS,
        "accept processes that leave their proc's process group (daemons) in the overseer "
        "fixtures: they are still ended, not reported (true/false)",
        default="false",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(allow_daemons=False): options of the overseer fixtures for this test; "
        "allow_daemons=True: processes that leave their proc's process group are ended, "
        "not reported",
    )
    _settings(config)  # a bad ini value stops the run at once, with a clear message


@attrs.frozen
class _Settings:
    """The options of the fixtures for one test (the ini file, then the marker)."""

    keep: int  # lines of output kept per proc
    allow_daemons: bool  # processes outside their proc's group are not reported


def _settings(config: pytest.Config) -> _Settings:
    """The ini options, validated (`pytest.UsageError` names the bad one)."""
    raw = str(config.getini(_INI_LINES)).strip()
    if not raw.isdigit():
        raise pytest.UsageError(
            f"ini option {_INI_LINES} must be a whole number of lines >= 0, got {raw!r}"
        )
    daemons = str(config.getini(_INI_DAEMONS)).strip().lower()
    if daemons not in _TRUE | _FALSE:
        raise pytest.UsageError(f"ini option {_INI_DAEMONS} must be true or false, got {daemons!r}")
    return _Settings(keep=int(raw), allow_daemons=daemons in _TRUE)


def _test_settings(request: pytest.FixtureRequest) -> _Settings:
    """The settings for this test: the ini options, then ``@pytest.mark.overseer(...)``."""
    settings = _settings(request.config)
    marker = request.node.get_closest_marker(_MARKER)
    if marker is None:
        return settings
    unknown = sorted(set(marker.kwargs) - {"allow_daemons"})
    allow = marker.kwargs.get("allow_daemons", settings.allow_daemons)
    if marker.args or unknown or not isinstance(allow, bool):
        given = ", ".join(
            [*map(repr, marker.args), *(f"{k}={v!r}" for k, v in marker.kwargs.items())]
        )
        pytest.fail(
            f"@pytest.mark.{_MARKER}({given}) on {request.node.nodeid}: the marker takes only "
            "allow_daemons=True or allow_daemons=False",
            pytrace=False,
        )
    return attrs.evolve(settings, allow_daemons=allow)


# -- what a test's procs did -------------------------------------------------------


class _Watcher:
    """Follows one Overseer: the last lines of each proc, the pid and tag of each run."""

    def __init__(self, ovr: Overseer, keep: int) -> None:
        self.ovr = ovr
        self.keep = keep
        self.output: dict[str, LineTail] = {}
        self.pids: dict[int, str] = {}  # pid of each run -> proc id
        self.tags: dict[str, str] = {}  # tag of each run -> proc id
        self.swept: dict[int, str] = {}  # escaped processes the Overseer ended -> description

    def follow(self, nursery: trio.Nursery) -> None:
        """Subscribe; the tasks end when the Overseer closes the channels."""
        logs_in, logs = trio.open_memory_channel[LogBatch](math.inf)
        states_in, states = trio.open_memory_channel[ProcessInfo](math.inf)
        self.ovr.watch_logs(logs_in, batched=True)
        self.ovr.watch_state(states_in)
        self.ovr._observe_sweeps(self.on_swept)
        nursery.start_soon(self._follow_logs, logs)
        nursery.start_soon(self._follow_states, states)

    def on_swept(self, pids: list[int]) -> None:
        """A sweep is about to end `pids` (outside their group): note who they are."""
        self.note_tags()
        for pid in pids:
            if pid not in self.swept:
                self.swept[pid] = f"{_procfs.describe(pid)} of {self._owner(pid)}"

    async def _follow_logs(self, logs: trio.MemoryReceiveChannel[LogBatch]) -> None:
        async for batch in logs:
            tail = self.output.get(batch.id)
            if tail is None:
                tail = self.output[batch.id] = LineTail(self.keep)
            tail.add(batch)

    async def _follow_states(self, states: trio.MemoryReceiveChannel[ProcessInfo]) -> None:
        async for info in states:
            if info.pid:
                self.pids[info.pid] = info.id
            self.note_tags()

    def note_tags(self) -> None:
        # The tag of the current run of each proc.  ProcessInfo does not carry
        # it, so it is read off the proc record while the run is current.
        for id in self.ovr.list_all():
            tag = self.ovr._run_tag(id)
            if tag:
                self.tags[tag] = id

    async def stop_and_settle(self) -> None:
        """Stop every proc and wait (bounded) until none runs."""
        self.ovr.stop_all()
        if self.ovr.statistics().running:
            with trio.move_on_after(_SETTLE):
                for id in self.ovr.list_all():
                    await self.ovr.wait_for_state(id, State.INITIAL, *FINAL_STATES)
        self.note_tags()

    def leftovers(self) -> dict[int, str]:
        """Live processes started by the procs: pid -> which proc."""
        found: dict[int, str] = {}
        prefix = self.ovr._tag_prefix
        for pid in _procfs.tagged(TAG_VAR, [prefix]).get(prefix, []):
            if _procfs.alive(pid):
                found[pid] = self._owner(pid)
        for leader, id in self.pids.items():
            for pid in _group_members(leader):
                found.setdefault(pid, f"proc {id!r}")
        return found

    def zombies(self) -> dict[int, str]:
        """Runs of the procs that ended but were never reaped: pid -> which proc."""
        me = os.getpid()
        return {
            pid: f"proc {id!r}"
            for pid, id in self.pids.items()
            if (stat := _procfs.stat(pid)) and stat.state == "Z" and stat.ppid == me
        }

    def _owner(self, pid: int) -> str:
        tag = _procfs.environ_value(pid, TAG_VAR)
        id = self.tags.get(tag) if tag else None
        return f"proc {id!r}" if id is not None else "a proc"

    def sections(self) -> list[tuple[str, str]]:
        """Report sections: the last lines of each proc."""
        return [
            (f"overseer output: proc {id!r} (last {self.keep} lines)", format_lines(tail.batches()))
            for id, tail in sorted(self.output.items())
        ]


def _group_members(pgid: int) -> list[int]:
    """The live processes of process group `pgid` (the group itself without /proc)."""
    try:
        os.killpg(pgid, 0)
    except OSError:  # no such group, or not ours (the pid was reused)
        return []
    return _procfs.group_members(pgid) if _procfs.available() else [pgid]


def _kill(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


async def _checked(
    watcher: _Watcher, close: Callable[[], Awaitable[None]], what: str, allow_daemons: bool
) -> list[str]:
    """Stop everything and close; list what had to be hunted down or survived (killed)."""
    await watcher.stop_and_settle()
    await close()  # the Overseer's last sweep ends what escaped (and tells the watcher)
    survived = {
        pid: f"{_procfs.describe(pid)} of {who}: survived the overseer's cleanup"
        for pid, who in watcher.leftovers().items()
    }
    tags = {pid: _procfs.environ_value(pid, TAG_VAR) for pid in survived}
    zombies = watcher.zombies()
    for pid in survived:
        # Still the process found (not a reused pid)?
        if _procfs.environ_value(pid, TAG_VAR) == tags.get(pid):
            _kill(pid)
    for pid in zombies:
        _reap(pid)
    problems = []
    if not allow_daemons:
        problems += [
            f"{text}: left its proc's process group (a daemon), ended by the overseer"
            for text in watcher.swept.values()
        ]
    problems += survived.values()
    problems += [f"pid {pid} of {who}: a zombie, never reaped" for pid, who in zombies.items()]
    if not problems:
        return []
    return [
        f"{what}: processes outlived their procs (now killed):",
        *(f"  {line}" for line in problems),
        "A proc must not leave processes behind: run servers in the foreground, and make "
        "a proc end its children before it exits. A test that expects daemons says so: "
        f"@pytest.mark.{_MARKER}(allow_daemons=True), or the ini option "
        f"{_INI_DAEMONS} = true (they are still ended).",
    ]


# -- the function fixture ------------------------------------------------------------


@pytest.fixture
def _overseer_settings(request: pytest.FixtureRequest) -> _Settings:
    """The test's settings, checked in a sync fixture: a bad marker errors cleanly."""
    return _test_settings(request)


@pytest.fixture
async def overseer(
    request: pytest.FixtureRequest, _overseer_settings: _Settings
) -> AsyncIterator[Overseer]:
    """An open Overseer for one test; nothing it started may outlive the test.

    At teardown every proc is stopped (SIGKILL after 2 s) and reaped; the
    test then fails, naming the process, if a process started by a proc had
    to be ended outside its process group (a daemon, ``setsid``; unless
    ``@pytest.mark.overseer(allow_daemons=True)`` or the ini option
    ``overseer_allow_daemons``), survived the cleanup, or is a zombie; such
    processes are killed.  When the test fails, the last lines of each
    proc's output (ini option ``overseer_output_lines``, 50) are attached to
    the report.
    """
    settings = _overseer_settings
    async with trio.open_nursery() as nursery, contextlib.AsyncExitStack() as stack:
        block = open_overseer(handle_signals=False, stop_timeout=_STOP_TIMEOUT)
        ovr = await stack.enter_async_context(block)
        watcher = _Watcher(ovr, settings.keep)
        request.node.stash[_SECTIONS] = watcher.sections
        watcher.follow(nursery)
        yield ovr
        problems = await _checked(watcher, stack.aclose, "overseer fixture", settings.allow_daemons)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    sections = item.stash.get(_SECTIONS, None)
    if sections is not None and report.failed and not item.stash.get(_REPORTED, False):
        item.stash[_REPORTED] = True
        report.sections.extend(sections())
    return report


# -- the session fixture --------------------------------------------------------------


class SyncOverseer:
    """An Overseer driven from sync code: for sync tests, and for a whole session.

    The fixtures `overseer_sync` (one per test) and `overseer_session` (one
    per session, or per pytest-xdist worker) hand one out; the leak verdict
    at its close is the `overseer` fixture's.  pytest-trio gives each async
    test its own `trio.run`, so this Overseer runs a Trio loop of its own in
    a thread: the thread exists only because a loop has to live somewhere
    while sync code runs; all the waiting happens in that loop.  Use it from
    sync tests and fixtures (from a trio test, the blocking calls would block
    the test's loop: call them with `trio.to_thread.run_sync`)::

        def test_api(overseer_sync):
            port = free_port()
            overseer_sync.start("api", sys.executable, [...], ready_port=port)

        @pytest.fixture(scope="module")
        def cache(overseer_session):
            with overseer_session.running("cache", "redis-server", ready_port=6379) as info:
                yield info

    At `close()` every proc is stopped and what leaked is returned (the
    fixtures fail with it).  A `ready_check` predicate runs in its loop.
    """

    def __init__(
        self,
        *,
        stop_timeout: float = _STOP_TIMEOUT,
        keep: int = 50,
        allow_daemons: bool = False,
        what: str = "overseer_session",
    ) -> None:
        self._stop_timeout = stop_timeout
        self._keep = keep
        self._allow_daemons = allow_daemons
        self._what = what  # names it in the leak report
        self._token: trio.lowlevel.TrioToken | None = None
        self._ovr: Overseer | None = None
        self._watcher: _Watcher | None = None
        self._closing: trio.Event | None = None
        self._opened = threading.Event()
        self._thread: threading.Thread | None = None
        self._crash: BaseException | None = None
        self.problems: list[str] = []

    def __repr__(self) -> str:
        return f"<SyncOverseer {self._ovr!r}>"

    # -- life ---------------------------------------------------------------------

    def open(self) -> None:
        """Start the loop and open the Overseer (blocks until it is open)."""
        if self._thread is not None:
            raise RuntimeError("SyncOverseer.open() was already called")
        # daemon: if the interpreter dies without close(), the Overseer's
        # watchdog ends the procs.
        self._thread = threading.Thread(target=self._main, name=self._what, daemon=True)
        self._thread.start()
        self._opened.wait()
        if self._crash is not None:
            raise RuntimeError("the session overseer could not start") from self._crash

    def close(self) -> list[str]:
        """Stop every proc, close the Overseer, end the loop; return what leaked."""
        if self._thread is None:
            return []
        if self._token is not None and self._closing is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._closing.set, trio_token=self._token)
        self._thread.join()
        self._thread = None
        if self._crash is not None:
            raise RuntimeError("the session overseer crashed") from self._crash
        return self.problems

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:
            self._crash = exc
        finally:
            self._opened.set()

    async def _serve(self) -> None:
        self._closing = trio.Event()
        async with trio.open_nursery() as nursery:
            block = open_overseer(handle_signals=False, stop_timeout=self._stop_timeout)
            async with contextlib.AsyncExitStack() as stack:
                ovr = await stack.enter_async_context(block)
                self._ovr = ovr
                self._watcher = watcher = _Watcher(ovr, self._keep)
                watcher.follow(nursery)
                self._token = trio.lowlevel.current_trio_token()
                self._opened.set()
                await self._closing.wait()
                self.problems = await _checked(
                    watcher, stack.aclose, self._what, self._allow_daemons
                )

    def _call(self, fn: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        if self._token is None or self._thread is None:
            raise RuntimeError("the session overseer is not open")
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    @property
    def _overseer(self) -> Overseer:
        assert self._ovr is not None
        return self._ovr

    # -- procs --------------------------------------------------------------------

    def start(self, id: str, exec: str, args: Sequence[str] = (), **options: Any) -> ProcessInfo:
        """Register and start a proc; return once it is ready (the ``ready_*`` options).

        `options` are those of `Overseer.add`.

        Raises:
          NotReadyError: it did not become ready (it was stopped, and unregistered).
          ProcExistsError: `id` is already registered.
        """
        return self._call(self._start, id, exec, args, options)

    async def _start(
        self, id: str, exec: str, args: Sequence[str], options: dict[str, Any]
    ) -> ProcessInfo:
        ovr = self._overseer
        ovr.add(id, exec, args, **options)
        try:
            return await ovr.start(id)
        except BaseException:
            with contextlib.suppress(ProcRunningError, UnknownProcError):
                ovr.remove(id)
            raise

    def stop(self, id: str) -> ProcessInfo:
        """Stop the proc, wait for its end and unregister it; return its last info."""
        return self._call(self._stop, id)

    async def _stop(self, id: str) -> ProcessInfo:
        ovr = self._overseer
        ended = ovr._supervision_done(id)  # UnknownProcError for an unknown id
        ovr.stop(id)
        await ended.wait()
        info = ovr.status(id)
        ovr.remove(id)
        return info

    @contextlib.contextmanager
    def running(
        self, id: str, exec: str, args: Sequence[str] = (), **options: Any
    ) -> Iterator[ProcessInfo]:
        """`start` on entry, `stop` on exit: a proc for a module or a class."""
        info = self.start(id, exec, args, **options)
        try:
            yield info
        finally:
            self.stop(id)

    def status(self, id: str) -> ProcessInfo:
        """The proc's current `ProcessInfo`."""
        return self._call(self._status, id)

    async def _status(self, id: str) -> ProcessInfo:
        return self._overseer.status(id)

    def output(self, id: str) -> list[LogMsg]:
        """The last lines of the proc's output (``overseer_output_lines``)."""
        return self._call(self._output, id)

    async def _output(self, id: str) -> list[LogMsg]:
        assert self._watcher is not None
        self._overseer.status(id)  # UnknownProcError for an unknown id
        tail = self._watcher.output.get(id)
        return [msg for batch in tail.batches() for msg in batch] if tail is not None else []

    def run(self, fn: Callable[[Overseer], Awaitable[_T]]) -> _T:
        """Run ``await fn(overseer)`` in its loop and return its result."""
        return self._call(fn, self._overseer)

    def sections(self) -> list[tuple[str, str]]:
        """Report sections: the last lines of each proc (read in its loop while open)."""
        if self._watcher is None:
            return []
        if self._thread is not None and self._token is not None:
            with contextlib.suppress(trio.RunFinishedError, RuntimeError):
                return self._call(self._sections)
        return self._watcher.sections()  # the loop has ended: nobody writes

    async def _sections(self) -> list[tuple[str, str]]:
        assert self._watcher is not None
        return self._watcher.sections()


#: The name the session fixture's object had first.
SessionOverseer = SyncOverseer


@pytest.fixture(scope="session")
def overseer_session(request: pytest.FixtureRequest) -> Iterator[SyncOverseer]:
    """A `SyncOverseer` for procs shared by many tests; stopped at session end.

    Under pytest-xdist each worker has its own (a session per worker).
    """
    settings = _settings(request.config)
    session = SyncOverseer(keep=settings.keep, allow_daemons=settings.allow_daemons)
    session.open()
    try:
        yield session
    finally:
        problems = session.close()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def overseer_sync(request: pytest.FixtureRequest) -> Iterator[SyncOverseer]:
    """A `SyncOverseer` for one sync test: the `overseer` fixture for sync code.

    Same readiness options (`SyncOverseer.start` takes those of `add`) and
    the same leak verdict as `overseer`, reported as an error at teardown.
    """
    settings = _test_settings(request)
    sync = SyncOverseer(
        keep=settings.keep, allow_daemons=settings.allow_daemons, what="overseer_sync fixture"
    )
    sync.open()
    request.node.stash[_SECTIONS] = sync.sections
    try:
        yield sync
    finally:
        problems = sync.close()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
