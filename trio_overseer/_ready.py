"""Readiness probes: how `Overseer.start` knows a started proc can be used.

Theory of operation.  `wait_ready` races, in one nursery bounded by
`ready_timeout`, the probes (each returns once its condition holds; the
proc is ready when all have returned) against the end of the proc's
supervision (its `done` event: the last run ended and no restart follows).
Whichever decides first cancels the other.  A log line is awaited on the
Overseer's own line events (`wait_for_log`, which also sees the lines the
current run printed before the call); ports, URLs, paths and predicates
have no event to wait on, so they are polled with exponential backoff from
10 ms to 200 ms.

A run that ends while a restart follows (``retry_times``) does not end the
wait: the next run may still become ready.  The proc is ready when every
probe held for one and the same run while it was up: each probe notes the
run it held for (the line probe: the run that printed the line, see
``_proc.Proc.ready_seen``, which the Overseer sets on every line).  Probes that
held for different runs, or while no run was up (a stale file before a
restart), do not count: the wait goes on with the next run.

When the supervision ends, the last run is judged once more, on what it did
rather than on when we looked (under load its last lines, its end and the
probes are all seen together): a ready line it printed counts, however late
it was seen, and each polled probe that did not hold for it gets one fresh
try.  Ready then, `start()` returns the ended proc's info.

When the proc is not ready (`NotReadyError`), and when the wait is
cancelled, the proc is stopped: `start()` never leaves a half-ready proc
running behind an exception.  On `NotReadyError` the stop is also awaited,
so the proc can be started again at once.
"""

from __future__ import annotations

import inspect
import os
import re
import ssl
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

import attrs
import trio

from ._errors import NotReadyError
from ._records import STDOUT, LogBatch
from ._state import FINAL_STATES, State

if TYPE_CHECKING:
    from ._cmd import Cmd
    from ._overseer import Overseer
    from ._tail import LineTail

_POLL_MIN, _POLL_MAX = 0.01, 0.2  # backoff of the polled probes (no event exists)
_TAIL = 20  # lines of output quoted by NotReadyError
_MAX_HEAD = 8192  # bytes of an HTTP answer read to find its status line


@attrs.frozen
class Readiness:
    """What `Overseer.start` waits for before it returns (all that are set)."""

    line: re.Pattern[str] | None = None
    """A line of stdout or stderr matching this (``re.search``)."""
    port: tuple[str, int] | None = None
    """A TCP (host, port) accepting connections."""
    url: str | None = None
    """An ``http://`` or ``https://`` URL answering a GET with a status below 500."""
    path: str | None = None
    """A path that exists (file, directory, Unix socket); relative to the proc's dir."""
    check: Callable[[], Awaitable[bool]] | None = None
    """An async predicate that returns True once the proc is ready."""
    timeout: float = 30.0
    """Seconds to wait for all of the above."""

    def __bool__(self) -> bool:
        return any(p is not None for p in (self.line, self.port, self.url, self.path, self.check))


def make_readiness(
    id: str,
    *,
    line: str | re.Pattern[str] | None,
    port: int | tuple[str, int] | None,
    url: str | None,
    path: str | os.PathLike[str] | None,
    check: Callable[[], Awaitable[bool]] | None,
    timeout: float,
) -> Readiness:
    """Validate the ``ready_*`` options of `Overseer.add` (errors name the proc)."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError(f"proc {id!r}: ready_timeout must be a number > 0, got {timeout!r}")
    address: tuple[str, int] | None = None
    if port is not None:
        if not isinstance(port, int) and not (isinstance(port, tuple) and len(port) == 2):
            raise ValueError(
                f"proc {id!r}: ready_port must be a port number or a (host, port) pair, "
                f"got {port!r}"
            )
        host, number = ("127.0.0.1", port) if isinstance(port, int) else port
        if isinstance(number, bool) or not isinstance(number, int) or not 0 < number < 65536:
            raise ValueError(f"proc {id!r}: ready_port must be a TCP port number, got {port!r}")
        if not isinstance(host, str) or not host:
            raise ValueError(f"proc {id!r}: ready_port host must be a non-empty string: {port!r}")
        address = (host, number)
    if url is not None:
        _check_url(id, url)
    if check is not None and not callable(check):
        raise TypeError(f"proc {id!r}: ready_check must be an async callable, got {check!r}")
    return Readiness(
        line=_to_regex(id, line) if line is not None else None,
        port=address,
        url=url,
        path=_to_path(id, path) if path is not None else None,
        check=check,
        timeout=float(timeout),
    )


def _to_regex(id: str, line: object) -> re.Pattern[str]:
    if not isinstance(line, str | re.Pattern):
        raise TypeError(
            f"proc {id!r}: ready_line must be a regex (str or re.Pattern), got {line!r}"
        )
    if not (line if isinstance(line, str) else line.pattern):
        raise ValueError(
            f"proc {id!r}: an empty ready_line matches any line; give the line to wait for"
        )
    try:
        return re.compile(line)
    except (re.error, TypeError) as exc:  # TypeError: a bytes pattern
        raise ValueError(f"proc {id!r}: ready_line {line!r} is not a valid regex: {exc}") from None


def _to_path(id: str, path: object) -> str:
    if not isinstance(path, str | os.PathLike):
        raise TypeError(
            f"proc {id!r}: ready_path must be a path (str or os.PathLike), got {path!r}"
        )
    text = os.fspath(path)
    if not isinstance(text, str) or not text:
        raise ValueError(f"proc {id!r}: ready_path must be a non-empty path, got {path!r}")
    return text


def _check_url(id: str, url: object) -> None:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"proc {id!r}: ready_url must be an http:// URL, got {url!r}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"proc {id!r}: ready_url {url!r} is not a valid URL: {exc}") from None
    if not parts.hostname:
        raise ValueError(f"proc {id!r}: ready_url {url!r} has no host")


class Watched(Protocol):
    """What readiness reads of a proc (the Overseer's record, `Overseer._watched`)."""

    @property
    def cmd(self) -> Cmd:
        """The current run, or the last one."""

    @property
    def ready_seen(self) -> Cmd | None:
        """The run that printed a line matching the ready line, if the latest did."""

    @property
    def tail(self) -> LineTail:
        """The last lines of the current run."""


# -- the probes ----------------------------------------------------------------


@attrs.define(eq=False)
class _Probe:
    """One condition of a Readiness, and what was seen of it so far."""

    what: str  # "TCP port 127.0.0.1:8080", for error messages
    wait: Callable[[_Probe], Awaitable[None]]  # returns once the condition holds
    held: bool = False
    seen: str = ""  # why it did not hold at the last try
    line: bool = attrs.field(default=False, kw_only=True)  # waits for a line of output
    # A polled probe's single try (None: holds); None for the line probe.
    attempt: Callable[[], Awaitable[str | None]] | None = attrs.field(default=None, kw_only=True)
    # When it held: for which run (Cmd), and whether that run was still live.
    run: object = attrs.field(default=None, kw_only=True)
    live: bool = attrs.field(default=False, kw_only=True)


async def _poll(probe: _Probe, attempt: Callable[[], Awaitable[str | None]]) -> None:
    """Try until `attempt` returns None (holds); else it returns why not."""
    delay = _POLL_MIN
    while (why := await attempt()) is not None:
        probe.seen = why
        await trio.sleep(delay)
        delay = min(delay * 2, _POLL_MAX)


def _why(exc: BaseException) -> str:
    """A short reason from a connection error (trio wraps them in a group)."""
    while isinstance(exc.__cause__, BaseExceptionGroup) and exc.__cause__.exceptions:
        exc = exc.__cause__.exceptions[0]
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


def _line_probe(ovr: Overseer, id: str, pattern: re.Pattern[str]) -> _Probe:
    async def wait(probe: _Probe) -> None:
        probe.seen = "no such line yet"
        await ovr.wait_for_log(id, pattern)

    return _Probe(f"a line matching {pattern.pattern!r}", wait, line=True)


def _port_probe(host: str, port: int) -> _Probe:
    async def attempt() -> str | None:
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            return _why(exc)
        await stream.aclose()
        return None

    return _Probe(f"TCP port {host}:{port}", lambda probe: _poll(probe, attempt), attempt=attempt)


def _url_probe(url: str) -> _Probe:
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    authority = parts.netloc.rpartition("@")[2]
    request = (
        f"GET {target} HTTP/1.0\r\nHost: {authority}\r\n"
        "User-Agent: trio-overseer\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    ).encode("latin-1", errors="replace")

    async def attempt() -> str | None:
        stream: trio.abc.Stream
        try:
            if secure:
                stream = await trio.open_ssl_over_tcp_stream(
                    host, port, ssl_context=_probe_ssl_context(), https_compatible=True
                )
            else:
                stream = await trio.open_tcp_stream(host, port)
            async with stream:
                await stream.send_all(request)
                head = await _read_head(stream)
        except (OSError, trio.BrokenResourceError) as exc:
            return _why(exc)
        found = re.match(rb"HTTP/\d(?:\.\d)?\s+(\d{3})\b", head)
        if found is None:
            text = head[:60].decode("latin-1") if head else "nothing"
            return f"no HTTP status line, got {text!r}"
        status = int(found[1])
        return None if status < 500 else f"HTTP status {status}"

    return _Probe(
        f"HTTP GET {url} answering below 500",
        lambda probe: _poll(probe, attempt),
        attempt=attempt,
    )


def _probe_ssl_context() -> ssl.SSLContext:
    # Readiness asks "does it answer?", not "do we trust it?" (as the HTTPS
    # probes of Kubernetes): a local server with a self-signed certificate
    # is ready once it answers.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _read_head(stream: trio.abc.ReceiveStream) -> bytes:
    """The bytes of an HTTP answer up to the end of its first line (or EOF)."""
    data = b""
    while b"\n" not in data and len(data) < _MAX_HEAD:
        chunk = await stream.receive_some(_MAX_HEAD)
        if not chunk:
            break
        data += chunk
    return data


def _path_probe(path: str) -> _Probe:
    async def attempt() -> str | None:
        # One stat(2) of a local path every 10-200 ms: a thread hop (trio.Path)
        # would cost more than the call.
        exists = os.path.exists(path)  # noqa: ASYNC240
        return None if exists else "it does not exist"

    return _Probe(f"path {path}", lambda probe: _poll(probe, attempt), attempt=attempt)


def _check_probe(check: Callable[[], Awaitable[bool]]) -> _Probe:
    name = getattr(check, "__qualname__", None) or repr(check)

    async def attempt() -> str | None:
        try:
            pending = check()
            if not inspect.isawaitable(pending):  # a sync function: it never holds
                return (
                    f"it returned {pending!r}, not an awaitable: "
                    "ready_check must be an async function"
                )
            result = await pending
        except Exception as exc:  # a predicate that fails means "not yet"
            return f"it raised {exc!r}"
        return None if result else f"it returned {result!r}"

    return _Probe(f"ready_check {name}()", lambda probe: _poll(probe, attempt), attempt=attempt)


def _probes(ovr: Overseer, id: str, readiness: Readiness, dir: str | None) -> list[_Probe]:
    probes = []
    if readiness.line is not None:
        probes.append(_line_probe(ovr, id, readiness.line))
    if readiness.port is not None:
        probes.append(_port_probe(*readiness.port))
    if readiness.url is not None:
        probes.append(_url_probe(readiness.url))
    if readiness.path is not None:
        probes.append(_path_probe(os.path.join(dir or "", readiness.path)))
    if readiness.check is not None:
        probes.append(_check_probe(readiness.check))
    return probes


# -- waiting -------------------------------------------------------------------


async def wait_ready(ovr: Overseer, id: str, readiness: Readiness) -> None:
    """Return once proc `id` is ready: every probe of `readiness` holds while it runs.

    Called by `Overseer.start` once the process runs (or failed to start).

    Cancellation: the proc is stopped (not awaited) and the cancellation
    propagates.

    Raises:
      NotReadyError: the timeout passed, or the proc ended (without a restart
        to follow) before it was ready; the proc has been stopped and its
        supervision has ended.
    """
    done = ovr._supervision_done(id)  # set when this supervision ends: no run follows
    try:
        why = await judge_ready(ovr, id, readiness, done)
    except BaseException:
        ovr.stop(id)
        raise
    if why is None:
        return
    ovr.stop(id)
    await done.wait()  # bounded by the proc's stop_timeout and the SIGKILL wait
    raise NotReadyError(why)


async def judge_ready(ovr: Overseer, id: str, readiness: Readiness, done: trio.Event) -> str | None:
    """Wait until proc `id` is ready (None), or say why it is not: it ended
    (`done`: its supervision ended) or `readiness.timeout` passed first.

    The proc is left as it is either way (`wait_ready` stops it; a dependent
    waiting for its requirement, see `Overseer`, does too).
    """
    rec = ovr._watched(id)
    probes = _probes(ovr, id, readiness, rec.cmd.dir)
    ended = False
    with trio.move_on_after(readiness.timeout):
        while not (ended := await _race([partial(_hold, p, rec) for p in probes], done)):
            if _one_live_run(probes):
                return None
            # The probes held for different runs, or while no run was up
            # (a stale file before a restart): probe the next run.
            if ended := await _race([partial(ovr.wait_for_state, id, State.RUNNING)], done):
                break
            for probe in probes:
                probe.held = False
        if await _held_at_end(rec, probes):
            return None
    return _message(ovr, id, readiness, probes, ended)


async def _race(waits: list[Callable[[], Awaitable[object]]], done: trio.Event) -> bool:
    """Wait until every one of `waits` has returned (False) or `done` is set (True)."""
    if done.is_set():
        return True
    ended = False

    async def all_return(cancel: trio.CancelScope) -> None:
        async with trio.open_nursery() as nursery:
            for wait in waits:
                nursery.start_soon(wait)
        cancel.cancel()

    async def end(cancel: trio.CancelScope) -> None:
        nonlocal ended
        await done.wait()
        ended = True
        cancel.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(all_return, nursery.cancel_scope)
        nursery.start_soon(end, nursery.cancel_scope)
    return ended


async def _hold(probe: _Probe, rec: Watched) -> None:
    await probe.wait(probe)
    probe.held = True
    if probe.line:  # the run that printed it, while it ran
        probe.run, probe.live = rec.ready_seen or rec.cmd, True
    else:
        probe.run, probe.live = rec.cmd, not rec.cmd.is_final_state()


def _one_live_run(probes: list[_Probe]) -> bool:
    """Whether every probe held during one and the same run, while it was up."""
    return len({id(p.run) for p in probes}) == 1 and all(p.live for p in probes)


async def _held_at_end(rec: Watched, probes: list[_Probe]) -> bool:
    """The supervision has ended: was its last run ready?

    Judged on every line that run printed (a ready line just before the
    exit counts, however late it was seen) and on a fresh try of each polled
    probe that did not hold for it (a ready_path created just before the
    exit counts; the message says what is seen now, not 200 ms ago).
    """
    last = rec.cmd
    if last.state is State.FATAL or last.is_initial_state():
        return False
    ready = True
    for probe in probes:
        if probe.held and probe.live and probe.run is last:
            continue
        if probe.attempt is None:  # the line probe
            probe.held = rec.ready_seen is last
        else:
            why = await probe.attempt()
            probe.held = why is None
            probe.seen = why or ""
        ready = ready and probe.held
    return ready


def _message(
    ovr: Overseer, id: str, readiness: Readiness, probes: list[_Probe], ended: bool
) -> str:
    info = ovr.status(id)
    if not ended:
        what = f"proc {id!r} was not ready within {readiness.timeout:g} s"
    elif info.state is State.FATAL:
        return f"proc {id!r} could not start: {info.error}"
    elif info.state in FINAL_STATES:
        how = info.error or f"exit code {info.exit_code}"
        what = f"proc {id!r} ended before it was ready ({info.state.value}, {how})"
    else:
        what = f"proc {id!r} was stopped before it was ready"
    if info.restarts:
        what += f" after {info.restarts} restart{'s' if info.restarts > 1 else ''}"
    pending = [p for p in probes if not p.held] or probes
    waiting = "; ".join(f"{p.what} ({p.seen})" if p.seen else p.what for p in pending)
    rec = ovr._watched(id)
    output = format_tail(rec.tail)
    if not rec.tail and any(p.line for p in pending) and not rec.cmd.pty:
        output += f"; {SILENT_HINT}"
    return f"{what}: still waiting for {waiting}\n{output}"


#: Why a proc that should print a line may have printed nothing, and the fixes.
SILENT_HINT = (
    "if it did print, its output may still sit in a block buffer: its stdout is a "
    "pipe, not a terminal, so most programs flush it only every few KiB or at exit. "
    "Make it line-buffered: 'python -u' or PYTHONUNBUFFERED=1 for Python, "
    "'stdbuf -oL <command>' for C programs using stdio; or give it a terminal "
    "with pty=True, for programs that only line-buffer a terminal"
)


def format_tail(tail: LineTail, count: int = _TAIL) -> str:
    """The last `count` lines of output, with a heading, for error messages."""
    if not tail:
        return "it printed nothing"
    shown = tail.batches(count)
    lines = sum(map(len, shown))
    head = f"its last {lines} lines of output:" if len(tail) > count else "its output:"
    return f"{head}\n{format_lines(shown)}"


def format_lines(batches: Iterable[LogBatch]) -> str:
    """Lines of output as ``  out| text`` / ``  err| text``, one a line."""
    return "\n".join(
        f"  {'out' if batch.type == STDOUT else 'err'}| {line}"
        for batch in batches
        for line in batch.lines
    )
