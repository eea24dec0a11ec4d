"""Testing against a real server process with the trio_overseer pytest plugin.

Run with::

    python -m pytest examples/test_http_server.py

The plugin is registered when trio_overseer is installed (with pytest-trio).
`server` starts ``python -m http.server`` for one test with the `overseer`
fixture; `shared_server` starts one for the whole module with
`overseer_session`.  Either way `ready_port` makes the start wait until the
port accepts connections, and the process is stopped after the tests: a test
fails if anything it started is left running.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from trio_overseer import Overseer
from trio_overseer.pytest_plugin import SessionOverseer
from trio_overseer.testing import free_port  # a port of this (xdist) worker's own


def http_server(port: int, root: Path) -> list[str]:
    """Arguments of ``python -m http.server`` serving `root` on 127.0.0.1:`port`."""
    return ["-u", "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)]


def site(root: Path) -> Path:
    (root / "hello.txt").write_text("hello, world\n")
    return root


# -- one server per test ---------------------------------------------------------


@pytest.fixture
async def server(overseer: Overseer, tmp_path: Path) -> int:
    port = free_port()
    overseer.add("http", sys.executable, http_server(port, site(tmp_path)), ready_port=port)
    await overseer.start("http")  # returns once the port accepts connections
    return port


async def get(port: int, path: str) -> tuple[int, bytes]:
    """A raw HTTP/1.0 GET: (status, body)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        answer = b""
        while chunk := await stream.receive_some():
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.trio
async def test_serves_a_file(server: int) -> None:
    assert await get(server, "/hello.txt") == (200, b"hello, world\n")


@pytest.mark.trio
async def test_missing_file(server: int, overseer: Overseer) -> None:
    status, _ = await get(server, "/nope.txt")
    assert status == 404
    # The server logs each request on stderr: wait for the line, don't sleep.
    await overseer.wait_for_log("http", r'"GET /nope.txt HTTP/1.0" 404', timeout=10)


# -- one server for the whole module ------------------------------------------------


@pytest.fixture(scope="module")
def shared_server(
    overseer_session: SessionOverseer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    port = free_port()
    root = site(tmp_path_factory.mktemp("www"))
    args = http_server(port, root)
    with overseer_session.running("shared-http", sys.executable, args, ready_port=port):
        yield port  # stopped when the module's tests are done


@pytest.mark.parametrize("path", ["/hello.txt", "/"])
def test_shared_server(shared_server: int, path: str) -> None:
    with socket.create_connection(("127.0.0.1", shared_server), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        status_line = sock.makefile("rb").readline()
    assert status_line.split()[1] == b"200"
