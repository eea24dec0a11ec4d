"""Helpers for tests that start servers: `free_port()`.

``from trio_overseer.testing import free_port`` gives a TCP port that
nothing listens on, for a server that a test starts::

    port = free_port()
    overseer.add("api", sys.executable, ["-m", "http.server", str(port)], ready_port=port)

Why not bind to port 0 and reuse what the OS picked?  That port comes from
the ephemeral range, the one the OS also hands to every outgoing
connection, and once the socket is closed nothing stops another test, or
another pytest-xdist worker, from getting it too before the server binds
it.  `free_port` instead walks a range of its own, outside the ephemeral
one, and under pytest-xdist each worker walks a slice of its own: two
workers never hand out the same port.  Within one process successive calls
never return the same port (until the slice wraps around), and each port is
checked free by binding it first.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import secrets
import socket

__all__ = ["free_port", "port_range"]

#: The lowest port handed out: below it live well-known services.
LOW = 10000
#: Where the ephemeral range starts when the OS does not say (Linux's default).
_EPHEMERAL_DEFAULT = (32768, 60999)
_MIN_SPAN = 1000  # a range of our own smaller than this is not worth having

# The one piece of process-wide state: how many ports this process handed out,
# so that two calls never return the same port.  A random start keeps two
# test runs on one machine (not xdist workers: they have slices) apart.
_calls = itertools.count()
_start = secrets.randbelow(1 << 30)


def _ephemeral_range() -> tuple[int, int]:
    """The OS's ephemeral port range (Linux: ``ip_local_port_range``)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = map(int, f.read().split())
    except (OSError, ValueError):
        return _EPHEMERAL_DEFAULT
    return low, high


def port_range(worker: str | None = None, workers: str | None = None) -> range:
    """The ports that `free_port` hands out in this process.

    The range from 10000 to the start of the ephemeral range (on Linux by
    default 10000-32767), or above it if that is too small; under
    pytest-xdist (``PYTEST_XDIST_WORKER=gwN``, ``PYTEST_XDIST_WORKER_COUNT``;
    the arguments default to them) worker N of M gets slice N of M equal
    slices.

    Raises:
      ValueError: the worker variables make no sense (``gw5`` of 4 workers).
    """
    eph_low, eph_high = _ephemeral_range()
    if eph_low - LOW >= _MIN_SPAN:
        low, high = LOW, eph_low
    elif 65536 - (eph_high + 1) >= _MIN_SPAN:
        low, high = eph_high + 1, 65536
    else:  # the ephemeral range covers nearly everything: share it
        low, high = LOW, 65536
    worker = os.environ.get("PYTEST_XDIST_WORKER", "") if worker is None else worker
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "") if workers is None else workers
    if not worker:
        return range(low, high)
    index = worker.removeprefix("gw")
    if not (index.isdigit() and workers.isdigit() and int(index) < int(workers)):
        raise ValueError(
            f"free_port: cannot tell this pytest-xdist worker's slice from "
            f"PYTEST_XDIST_WORKER={worker!r} and PYTEST_XDIST_WORKER_COUNT={workers!r}"
        )
    size = (high - low) // int(workers)
    first = low + int(index) * size
    return range(first, first + size)


def _bindable(port: int) -> bool:
    """Whether nothing holds `port`: it binds on every IPv4 address (and IPv6's)."""
    families = [(socket.AF_INET, "0.0.0.0")]
    if socket.has_ipv6:
        families.append((socket.AF_INET6, "::"))
    for family, host in families:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:  # no IPv6 here
            continue
        with contextlib.closing(sock):
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                    continue  # that family is not configured
                return False
    return True


def free_port() -> int:
    """A TCP port that nothing listens on, for a server a test starts.

    It comes from `port_range()`: outside the OS's ephemeral range, and
    under pytest-xdist from this worker's own slice, so no other worker gets
    it; no two calls in a process return the same port (until the slice
    wraps around); it is checked free by binding it on every address.  Give
    it to the server and to ``ready_port``.

    Raises:
      RuntimeError: every port of the range is taken.
    """
    ports = port_range()
    for _ in range(len(ports)):
        port = ports[(_start + next(_calls)) % len(ports)]
        if _bindable(port):
            return port
    raise RuntimeError(
        f"free_port: every TCP port of {ports.start}-{ports.stop - 1} (this process's range) "
        "is in use"
    )
