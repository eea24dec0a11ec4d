"""Testing against real Redis and PostgreSQL servers with the trio_overseer plugin.

Run with::

    python -m pytest examples/test_services.py

Needs ``redis-server`` and PostgreSQL's ``initdb``/``postgres``/``psql``
(Debian/Ubuntu: ``apt-get install redis-server postgresql``; the PostgreSQL
binaries are found on ``PATH`` or in ``/usr/lib/postgresql/<version>/bin``).
Where a server cannot be had its tests are skipped, saying why.

- Redis, one server per test: with the async `overseer` fixture (a trio
  test talking RESP over a trio socket) and with `overseer_sync` (a plain
  sync test).
- PostgreSQL, one server for the module (``initdb`` takes seconds): with
  `overseer_session`, talked to with ``psql``.  PostgreSQL refuses to run
  as root: as root, ``initdb`` and ``postgres`` run as ``nobody`` through
  ``setpriv`` (or ``runuser``), in a data directory that user owns.

Every port comes from `trio_overseer.testing.free_port()`, so the tests also
run under pytest-xdist (``-n 4``): each worker gets ports of its own.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from trio_overseer import Overseer
from trio_overseer.pytest_plugin import SyncOverseer
from trio_overseer.testing import free_port

# -- Redis -------------------------------------------------------------------------


def redis_args(port: int) -> list[str]:
    """A throwaway Redis on 127.0.0.1:`port`: nothing saved to disk."""
    return ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]


def redis_server() -> str:
    path = shutil.which("redis-server")
    if path is None:
        pytest.skip("redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)")
    return path


def resp(*args: str) -> bytes:
    """A Redis command in RESP, the protocol's wire format."""
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def parse_reply(buffer: bytes) -> tuple[bytes | None, bytes] | None:
    """One reply (``+OK``, ``$3 bar``, ``$-1``) from `buffer` and the rest, or None if partial."""
    line, sep, rest = buffer.partition(b"\r\n")
    if not sep:
        return None
    if line[:1] in (b"+", b":"):
        return line[1:], rest
    if line[:1] == b"-":
        raise RuntimeError(f"redis error: {line[1:].decode()}")
    size = int(line[1:])  # a bulk string
    if size < 0:
        return None, rest
    if len(rest) < size + 2:
        return None
    return rest[:size], rest[size + 2 :]


async def redis_call(stream: trio.SocketStream, *args: str) -> bytes | None:
    await stream.send_all(resp(*args))
    buffer = b""
    while (reply := parse_reply(buffer)) is None:
        data = await stream.receive_some()
        assert data, "redis closed the connection"
        buffer += data
    return reply[0]


@pytest.fixture
async def redis(overseer: Overseer) -> int:
    """A Redis for this test; the `overseer` fixture stops it afterwards."""
    port = free_port()
    overseer.add(
        "redis",
        redis_server(),
        redis_args(port),
        ready_port=port,
        ready_line="Ready to accept connections",
    )
    await overseer.start("redis")  # returns once both hold
    return port


@pytest.mark.trio
async def test_redis_set_and_get(redis: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", redis)
    async with stream:
        assert await redis_call(stream, "PING") == b"PONG"
        assert await redis_call(stream, "SET", "greeting", "hello") == b"OK"
        assert await redis_call(stream, "GET", "greeting") == b"hello"
        assert await redis_call(stream, "GET", "missing") is None


def test_redis_from_a_sync_test(overseer_sync: SyncOverseer) -> None:
    port = free_port()
    overseer_sync.start("redis", redis_server(), redis_args(port), ready_port=port)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(resp("INCR", "hits") + resp("INCR", "hits"))
        replies = b""
        while replies.count(b"\r\n") < 2:
            replies += sock.recv(1024)
    assert replies == b":1\r\n:2\r\n"


# -- PostgreSQL ----------------------------------------------------------------------


def postgres_bin() -> Path:
    """The directory of initdb/postgres/psql: on PATH, else Debian's versioned one."""
    for name in ("initdb", "postgres"):
        found = shutil.which(name)
        if found and (Path(found).resolve().parent / "psql").exists():
            return Path(found).resolve().parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda path: int(Path(path).parent.parent.name.partition(".")[0] or 0),
    )
    if not versions:
        pytest.skip(
            "PostgreSQL (initdb, postgres, psql) is not installed "
            "(Debian/Ubuntu: apt-get install postgresql)"
        )
    return Path(versions[-1]).parent


def as_postgres_user(home: Path) -> list[str]:
    """How to run initdb/postgres: as root, as ``nobody`` (owning `home`)."""
    if os.geteuid() != 0:
        return []
    user = pwd.getpwnam("nobody")
    os.chown(home, user.pw_uid, user.pw_gid)
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
    if shutil.which("runuser"):
        return ["runuser", "-u", "nobody", "--"]
    pytest.skip("PostgreSQL refuses to run as root, and neither setpriv nor runuser is here")


@pytest.fixture(scope="module")
def postgres(overseer_session: SyncOverseer) -> Iterator[tuple[Path, int]]:
    """A PostgreSQL for this module's tests: (its bin directory, its port)."""
    bin = postgres_bin()
    # Not under pytest's tmp_path: that is private to the user running the
    # tests, and the server may run as another one.
    home = Path(tempfile.mkdtemp(prefix="trio-overseer-pg-"))
    try:
        user = as_postgres_user(home)
        data = home / "data"
        initdb = [str(bin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
        initdb += ["-E", "UTF8", "--locale=C", "--no-sync"]
        done = subprocess.run(
            [*user, *initdb], capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            pytest.fail(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        port = free_port()
        argv = [*user, str(bin / "postgres"), "-D", str(data), "-k", str(home), "-p", str(port)]
        argv += ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
        with overseer_session.running(
            "postgres",
            argv[0],
            argv[1:],
            ready_port=port,
            ready_line="database system is ready to accept connections",
            ready_timeout=60,
            stop_signal=signal.SIGINT,  # "fast shutdown": SIGTERM waits for clients
        ):
            yield bin, port
    finally:
        shutil.rmtree(home, ignore_errors=True)


def psql(server: tuple[Path, int], sql: str) -> str:
    bin, port = server
    argv = [str(bin / "psql"), "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
    done = subprocess.run(
        [*argv, "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-Atc", sql],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_postgres_answers(postgres: tuple[Path, int]) -> None:
    assert psql(postgres, "SELECT 6 * 7") == "42"


def test_postgres_keeps_a_table(postgres: tuple[Path, int]) -> None:
    psql(postgres, "CREATE TABLE IF NOT EXISTS notes (body text)")
    psql(postgres, "INSERT INTO notes VALUES ('hello')")
    assert "hello" in psql(postgres, "SELECT body FROM notes").splitlines()
