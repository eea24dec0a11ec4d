"""Readiness: `start()` returns once every ready_* probe holds, else NotReadyError."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from children import FINAL, PRINT_THEN_SLEEP, PY, SLEEP_FOREVER, T, overseer, python

from trio_overseer import NotReadyError, Overseer, OverseerError, State
from trio_overseer._ready import make_readiness, wait_ready


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def connects(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


# --- children: the pauses only make sure a probe has to retry; nothing waits on them


def LISTEN_LATER(port: int) -> list[str]:
    """Print "starting", listen on `port` 0.3 s later, print "listening", sleep."""
    return python(
        f"""
        import socket, time
        print("starting")
        time.sleep(0.3)
        sock = socket.create_server(("127.0.0.1", {port}))
        print("listening")
        while True:
            time.sleep(3600)
        """
    )


def HTTP_SERVER(port: int, statuses: list[int]) -> list[str]:
    """Answer each GET with the next of `statuses` (the last one forever), print it."""
    return python(
        f"""
        from http.server import BaseHTTPRequestHandler, HTTPServer
        statuses = {statuses!r}
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
                print("answered", status, self.path, flush=True)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
            def log_message(self, *args):
                pass
        HTTPServer(("127.0.0.1", {port}), Handler).serve_forever()
        """
    )


def CREATE_LATER(path: Path, unix_socket: bool = False) -> list[str]:
    """Create `path` (a file, or a listening Unix socket) 0.2 s after starting."""
    make = (
        f"s = socket.socket(socket.AF_UNIX); s.bind({str(path)!r}); s.listen()"
        if unix_socket
        else f"open({str(path)!r}, 'w').close()"
    )
    return python(
        f"""
        import socket, time
        time.sleep(0.2)
        {make}
        print("created")
        while True:
            time.sleep(3600)
        """
    )


def READY_ON_RUN(counter: Path, n: int) -> list[str]:
    """Runs before the n-th (counted in a file) exit 1; the n-th prints "ready", sleeps."""
    return python(
        f"""
        import sys, time
        path = {str(counter)!r}
        try:
            count = int(open(path).read())
        except FileNotFoundError:
            count = 0
        count += 1
        open(path, "w").write(str(count))
        print("run", count)
        if count < {n}:
            sys.exit(1)
        print("ready")
        while True:
            time.sleep(3600)
        """
    )


# --- each probe, ready ------------------------------------------------------------


async def test_ready_line_waits_for_the_line() -> None:
    port = free_port()
    async with overseer() as ovr:
        ovr.add("srv", PY, LISTEN_LATER(port), ready_line=r"^listen")
        info = await ovr.start("srv")
        assert info.state is State.RUNNING
        assert connects(port)


async def test_ready_line_printed_before_the_wait_counts() -> None:
    async with overseer() as ovr:
        ovr.add("p", PY, PRINT_THEN_SLEEP("one", "two"))
        await ovr.start("p")
        await ovr.wait_for_log("p", "^ready$", timeout=T)
        line = make_readiness(
            "p", line="^one", port=None, url=None, path=None, check=None, timeout=1
        )
        with trio.fail_after(T):
            await wait_ready(ovr, "p", line)


async def test_ready_port() -> None:
    port = free_port()
    async with overseer() as ovr:
        ovr.add("srv", PY, LISTEN_LATER(port), ready_port=port)
        assert (await ovr.start("srv")).state is State.RUNNING
        assert connects(port)


@pytest.mark.parametrize("statuses", [[503, 502, 200], [404]])
async def test_ready_url_below_500(statuses: list[int]) -> None:
    port = free_port()
    async with overseer() as ovr:
        ovr.add(
            "web",
            PY,
            HTTP_SERVER(port, statuses),
            ready_url=f"http://127.0.0.1:{port}/health?x=1",
        )
        await ovr.start("web")
        await ovr.wait_for_log("web", f"answered {statuses[-1]} /health\\?x=1$", timeout=T)
        answered = [text for b in ovr._procs["web"].tail.batches() for text in b.lines]
        assert answered == [f"answered {s} /health?x=1" for s in statuses]


def HTTPS_SERVER(port: int, cert: Path, key: Path) -> list[str]:
    """Answer every GET with 204 over TLS, with a self-signed certificate."""
    return python(
        f"""
        import ssl
        from http.server import BaseHTTPRequestHandler, HTTPServer
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                print("answered", self.path, flush=True)
                self.send_response(204)
                self.end_headers()
            def log_message(self, *args):
                pass
        server = HTTPServer(("127.0.0.1", {port}), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain({str(cert)!r}, {str(key)!r})
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.serve_forever()
        """
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_ready_url_https_self_signed(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    new_cert = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt"]
    new_cert += ["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=x"]
    await trio.run_process([*new_cert, "-keyout", str(key), "-out", str(cert)], capture_stderr=True)
    port = free_port()
    async with overseer() as ovr:
        url = f"https://127.0.0.1:{port}/ready"
        ovr.add("tls", PY, HTTPS_SERVER(port, cert, key), ready_url=url)
        await ovr.start("tls")
        assert await ovr.wait_for_log("tls", "^answered /ready$", timeout=T)


@pytest.mark.parametrize("unix_socket", [False, True], ids=["file", "unix-socket"])
async def test_ready_path(tmp_path: Path, unix_socket: bool) -> None:
    path = tmp_path / "srv.sock"
    async with overseer() as ovr:
        ovr.add("srv", PY, CREATE_LATER(path, unix_socket), ready_path=path)
        assert (await ovr.start("srv")).state is State.RUNNING
        assert path.is_socket() if unix_socket else path.is_file()


async def test_ready_path_is_relative_to_the_proc_dir(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "flag"
    async with overseer() as ovr:
        ovr.add("srv", PY, CREATE_LATER(path), dir=tmp_path / "sub", ready_path="flag")
        await ovr.start("srv")
        assert path.is_file()


async def test_ready_check_polls_until_true() -> None:
    calls: list[float] = []

    async def check() -> bool:
        calls.append(trio.current_time())
        if len(calls) == 1:
            raise ConnectionRefusedError("not yet")  # an exception means "not yet"
        return len(calls) >= 4

    async with overseer() as ovr:
        ovr.add("p", PY, SLEEP_FOREVER, ready_check=check)
        assert (await ovr.start("p")).state is State.RUNNING
    assert len(calls) == 4
    # Backoff: 10, 20, then 40 ms between the polls (sleeps are never shorter).
    assert calls[-1] - calls[0] >= 0.07


async def test_all_probes_must_hold() -> None:
    port = free_port()
    checked = trio.Event()

    async def check() -> bool:
        checked.set()
        return True

    async with overseer() as ovr:
        ovr.add(
            "srv", PY, LISTEN_LATER(port), ready_line="starting", ready_port=port, ready_check=check
        )
        await ovr.start("srv")
        assert connects(port)
        assert checked.is_set()


# --- never ready: the timeout ---------------------------------------------------


async def test_never_ready_times_out_with_the_tail() -> None:
    lines = [f"line {i}" for i in range(30)]
    async with overseer() as ovr:
        ovr.add("web", PY, PRINT_THEN_SLEEP(*lines), ready_line="never", ready_timeout=0.5)
        start = trio.current_time()
        with pytest.raises(NotReadyError) as caught:
            await ovr.start("web")
        assert trio.current_time() - start >= 0.5
        # The proc was stopped, and its supervision has ended.
        info = ovr.status("web")
        assert info.state is State.INTERRUPTED
        assert not ovr.is_running()
    error = caught.value
    assert isinstance(error, TimeoutError)
    assert isinstance(error, OverseerError)
    message = str(error)
    assert message.startswith("proc 'web' was not ready within 0.5 s: ")
    assert "a line matching 'never'" in message
    assert "its last 20 lines of output:" in message
    assert "  out| line 11\n" in message
    assert "out| line 10\n" not in message
    assert message.endswith("  out| line 29\n  out| ready")
    assert "block buffer" not in message  # it printed: no hint


#: Prints "ready" and sleeps without flushing: -I ignores PYTHONUNBUFFERED, so
#: with stdout a pipe the line stays in Python's block buffer, as on a user's
#: machine.  With -u it is written at once.
def BLOCK_BUFFERED(*flags: str) -> list[str]:
    return ["-I", "-S", *flags, "-c", "import time\nprint('ready')\ntime.sleep(3600)\n"]


async def test_silent_proc_gets_the_block_buffering_hint() -> None:
    async with overseer() as ovr:
        ovr.add("buf", PY, BLOCK_BUFFERED(), ready_line="^ready$", ready_timeout=1)
        with trio.fail_after(T), pytest.raises(NotReadyError) as caught:
            await ovr.start("buf")
        # The fixes it names work: -u, and a terminal.
        ovr.add("unbuf", PY, BLOCK_BUFFERED("-u"), ready_line="^ready$", ready_timeout=T)
        ovr.add("pty", PY, BLOCK_BUFFERED(), ready_line="^ready$", ready_timeout=T, pty=True)
        with trio.fail_after(T):
            await ovr.start("unbuf")
            await ovr.start("pty")
    message = str(caught.value)
    assert message.startswith("proc 'buf' was not ready within 1 s: ")
    assert message.endswith(
        "it printed nothing; if it did print, its output may still sit in a block buffer: "
        "its stdout is a pipe, not a terminal, so most programs flush it only every few KiB "
        "or at exit. Make it line-buffered: 'python -u' or PYTHONUNBUFFERED=1 for Python, "
        "'stdbuf -oL <command>' for C programs using stdio; or give it a terminal with "
        "pty=True, for programs that only line-buffer a terminal"
    )


async def test_wait_for_log_on_a_silent_proc_gets_the_hint() -> None:
    async with overseer() as ovr:
        ovr.add("buf", PY, BLOCK_BUFFERED())
        with trio.fail_after(T):
            await ovr.start("buf")
            with pytest.raises(TimeoutError) as caught:
                await ovr.wait_for_log("buf", "^ready$", timeout=0.5)
    message = str(caught.value)
    assert message.startswith(
        "proc 'buf' printed no line matching '^ready$' within 0.5 s (it is running); "
        "it printed nothing: if it did print, its output may still sit in a block buffer"
    )
    assert "'python -u' or PYTHONUNBUFFERED=1" in message
    assert "stdbuf -oL" in message


async def test_no_hint_when_no_line_was_awaited(tmp_path: Path) -> None:
    async with overseer() as ovr:
        ovr.add("buf", PY, BLOCK_BUFFERED(), ready_path=tmp_path / "no", ready_timeout=0.5)
        with trio.fail_after(T), pytest.raises(NotReadyError) as caught:
            await ovr.start("buf")
    assert str(caught.value).endswith("it printed nothing")


async def test_never_ready_names_only_the_probes_that_failed(tmp_path: Path) -> None:
    async with overseer() as ovr:
        ovr.add(
            "p",
            PY,
            PRINT_THEN_SLEEP(),
            ready_line="ready",
            ready_path=tmp_path / "missing",
            ready_timeout=0.5,
        )
        with pytest.raises(NotReadyError) as caught:
            await ovr.start("p")
    first = str(caught.value).splitlines()[0]
    assert first == (
        "proc 'p' was not ready within 0.5 s: still waiting for "
        f"path {tmp_path / 'missing'} (it does not exist)"
    )


async def test_never_ready_url_says_what_it_answered() -> None:
    port = free_port()
    async with overseer() as ovr:
        url = f"http://127.0.0.1:{port}/"
        ovr.add("web", PY, HTTP_SERVER(port, [500]), ready_url=url, ready_timeout=1.0)
        with pytest.raises(NotReadyError) as caught:
            await ovr.start("web")
    assert f"HTTP GET http://127.0.0.1:{port}/ answering below 500 (HTTP status 500)" in str(
        caught.value
    )
    assert "out| answered 500 /" in str(caught.value)


async def test_never_ready_check_reports_its_exception() -> None:
    async def check() -> bool:
        raise ConnectionRefusedError("db is down")

    async with overseer() as ovr:
        ovr.add("p", PY, SLEEP_FOREVER, ready_check=check, ready_timeout=0.3)
        with pytest.raises(NotReadyError, match=r"check\(\) \(it raised ConnectionRefusedError"):
            await ovr.start("p")


# --- ended before ready: fails fast ----------------------------------------------


async def test_exit_before_ready_fails_fast() -> None:
    crash = python("import sys; print('fatal: no config', file=sys.stderr); sys.exit(3)")
    async with overseer() as ovr:
        ovr.add("db", PY, crash, ready_port=free_port(), ready_timeout=60)
        begin = time.monotonic()
        with trio.fail_after(T), pytest.raises(NotReadyError) as caught:
            await ovr.start("db")
        assert time.monotonic() - begin < 5
    message = str(caught.value)
    assert message.startswith("proc 'db' ended before it was ready (finished, exit code 3): ")
    assert "TCP port 127.0.0.1:" in message
    assert message.endswith("its output:\n  err| fatal: no config")


async def test_fatal_fails_at_once() -> None:
    async with overseer() as ovr:
        ovr.add("x", "/nonexistent/program", ready_line="never", ready_timeout=60)
        with trio.fail_after(T), pytest.raises(NotReadyError, match=r"^proc 'x' could not start: "):
            await ovr.start("x")
        assert ovr.status("x").state is State.FATAL


async def test_restart_may_become_ready(tmp_path: Path) -> None:
    async with overseer() as ovr:
        ovr.add("p", PY, READY_ON_RUN(tmp_path / "n", 2), retry_times=3, ready_line="^ready")
        info = await ovr.start("p")
        assert (info.state, info.restarts) == (State.RUNNING, 1)


async def test_probes_holding_between_runs_do_not_count(tmp_path: Path) -> None:
    calls = 0

    async def check() -> bool:
        # The first call holds only once the first run has ended (and a
        # restart is pending): the check must be passed again by the next run.
        nonlocal calls
        calls += 1
        if calls == 1:
            await ovr.wait_for_state("p", State.FINISHED)
        return True

    async with overseer() as ovr:
        ovr.add("p", PY, READY_ON_RUN(tmp_path / "n", 2), retry_times=1, ready_check=check)
        info = await ovr.start("p")
        assert (info.state, info.restarts, calls) == (State.RUNNING, 1, 2)


async def test_restarts_exhausted_fails(tmp_path: Path) -> None:
    async with overseer() as ovr:
        ovr.add(
            "p",
            PY,
            READY_ON_RUN(tmp_path / "n", 5),
            retry_times=1,
            ready_line="^ready",
            ready_timeout=60,
        )
        with trio.fail_after(T), pytest.raises(NotReadyError) as caught:
            await ovr.start("p")
    assert str(caught.value).startswith(
        "proc 'p' ended before it was ready (finished, exit code 1) after 1 restart: "
    )
    assert str(caught.value).endswith("  out| run 2")


async def test_cancelled_while_waiting_stops_the_proc() -> None:
    async with overseer() as ovr:
        ovr.add("p", PY, SLEEP_FOREVER, ready_line="never")
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ovr.start, "p")
                await ovr.wait_for_state("p", State.RUNNING, timeout=T)
                scope.cancel()
        info = await ovr.wait_for_state("p", *FINAL, timeout=T)
        assert info.state is State.INTERRUPTED


async def test_stopped_while_waiting() -> None:
    async with overseer() as ovr:
        ovr.add("p", PY, SLEEP_FOREVER, ready_line="never")

        async def stop_when_running() -> None:
            await ovr.wait_for_log("p", "^ready$", timeout=T)
            ovr.stop("p")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_when_running)
            with pytest.raises(NotReadyError, match=r"ended before it was ready \(interrupted, "):
                await ovr.start("p")


# --- validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("timeout", 0, "ready_timeout must be a number > 0"),
        ("port", 70000, "ready_port must be a TCP port number"),
        ("port", ("", 80), "ready_port host must be a non-empty string"),
        ("url", "ftp://x/", "ready_url must be an http:// URL"),
        ("url", "http://:80/", "ready_url 'http://:80/' has no host"),
        ("url", "http://h:port/", "ready_url 'http://h:port/' is not a valid URL"),
    ],
)
def test_invalid_options(option: str, value: Any, error: str) -> None:
    options: dict[str, Any] = dict(line=None, port=None, url=None, path=None, check=None)
    options["timeout"] = 1.0
    options[option] = value
    with pytest.raises(ValueError, match=f"^proc 'p': {error}"):
        make_readiness("p", **options)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"ready_path": ""}, ValueError, "ready_path must be a non-empty path, got ''"),
        ({"ready_path": 3}, TypeError, "ready_path must be a path (str or os.PathLike), got 3"),
        ({"ready_line": ""}, ValueError, "an empty ready_line matches any line"),
        ({"ready_line": "("}, ValueError, "ready_line '(' is not a valid regex: missing ),"),
        ({"ready_line": 3}, TypeError, "ready_line must be a regex (str or re.Pattern), got 3"),
        (
            {"ready_port": ("h", 80, 1)},
            ValueError,
            "ready_port must be a port number or a (host, port) pair, got ('h', 80, 1)",
        ),
        (
            {"ready_port": "80"},
            ValueError,
            "ready_port must be a port number or a (host, port) pair, got '80'",
        ),
        ({"ready_check": 3}, TypeError, "ready_check must be an async callable, got 3"),
    ],
    ids=str,
)
def test_bad_ready_options_name_the_proc(
    options: dict[str, Any], error: type, message: str
) -> None:
    ovr = Overseer(handle_signals=False)
    with pytest.raises(error) as caught:
        ovr.add("p", PY, SLEEP_FOREVER, **options)
    assert str(caught.value).startswith(f"proc 'p': {message}")
    assert not ovr.has_proc("p")


async def test_sync_ready_check_says_it_must_be_async() -> None:
    def check() -> bool:  # not async: it would never be awaited
        return True

    async with overseer() as ovr:
        ovr.add("p", PY, SLEEP_FOREVER, ready_check=check, ready_timeout=0.3)  # type: ignore[arg-type]
        with trio.fail_after(T), pytest.raises(NotReadyError) as caught:
            await ovr.start("p")
    assert (
        "ready_check test_sync_ready_check_says_it_must_be_async.<locals>.check() (it returned "
        "True, not an awaitable: ready_check must be an async function)"
    ) in str(caught.value)


def test_readiness_is_false_without_probes() -> None:
    none = make_readiness("p", line=None, port=None, url=None, path=None, check=None, timeout=1)
    assert not none
    assert make_readiness("p", line="x", port=None, url=None, path=None, check=None, timeout=1)
    assert make_readiness("p", line=None, port=8080, url=None, path=None, check=None, timeout=1)


# --- judged on everything the proc did before it ended (issue 10, item 9) ------------------


async def start_frozen(ovr: Overseer, id: str) -> Any:
    """`start(id)`, with the event loop frozen from the moment the proc runs until it exited.

    A machine under load does this: the proc's last lines, its end and the
    readiness probes are all seen in one go.  The freeze is a blocking
    ``waitid(WNOWAIT)`` (it does not reap) on purpose.
    """
    result: list[Any] = []

    async def freeze() -> None:
        info = await ovr.wait_for_state(id, State.RUNNING, timeout=T)
        with contextlib.suppress(ChildProcessError):  # reaped already: too late to freeze
            # Blocking on purpose: the whole loop freezes, as under load.
            os.waitid(os.P_PID, info.pid, os.WEXITED | os.WNOWAIT)  # noqa: ASYNC222

    async with trio.open_nursery() as nursery:
        nursery.start_soon(freeze)
        with trio.fail_after(T):
            result.append(await ovr.start(id))
    return result[0]


@pytest.mark.parametrize("more", [0, 500])
async def test_ready_line_just_before_the_exit_counts(more: int) -> None:
    code = f"print('ready'); [print('more', i) for i in range({more})]"
    async with overseer() as ovr:
        for attempt in range(5):
            id = f"p{attempt}"
            ovr.add(id, PY, python(code), ready_line="^ready$", ready_timeout=T)
            info = await start_frozen(ovr, id)
            assert (info.state, info.exit_code) == (State.FINISHED, 0)


async def test_ready_path_created_just_before_the_exit_counts(tmp_path: Path) -> None:
    async with overseer() as ovr:
        for attempt in range(5):
            id, path = f"p{attempt}", tmp_path / f"flag{attempt}"
            ovr.add(id, PY, python(f"open({str(path)!r}, 'w').close()"), ready_path=path)
            info = await start_frozen(ovr, id)
            assert (info.state, info.exit_code) == (State.FINISHED, 0)


async def test_ended_supervision_is_judged_on_all_its_lines() -> None:
    # wait_ready called once the supervision is over: the ready line is far
    # behind (more than the 200 lines kept), and it still counts.
    code = "print('ready'); [print('more', i) for i in range(500)]"
    async with overseer() as ovr:
        ovr.add("p", PY, python(code), ready_line="^ready$")
        ovr.add("q", PY, python(code), ready_line="^never$")
        with trio.fail_after(T):
            assert await ovr.supervise("p") == 0  # supervise() waits for no readiness
            assert await ovr.supervise("q") == 0
            await wait_ready(ovr, "p", ovr._procs["p"].readiness)
            with pytest.raises(NotReadyError, match="'q' ended before it was ready"):
                await wait_ready(ovr, "q", ovr._procs["q"].readiness)


async def test_fresh_results_after_the_end(tmp_path: Path) -> None:
    # The path never appears: the message says so from a look taken after the end.
    path = tmp_path / "never"
    async with overseer() as ovr:
        ovr.add("p", PY, python("pass"), ready_path=path)
        with trio.fail_after(T), pytest.raises(NotReadyError) as caught:
            await ovr.start("p")
    assert f"path {path} (it does not exist)" in str(caught.value)
