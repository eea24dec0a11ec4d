"""trio_overseer.testing: free_port() and the per-worker port ranges."""

from __future__ import annotations

import socket

import pytest

from trio_overseer import testing
from trio_overseer.testing import free_port, port_range


def ephemeral() -> range:
    low, high = testing._ephemeral_range()
    return range(low, high + 1)


def test_range_is_outside_the_ephemeral_one() -> None:
    ports = port_range(worker="", workers="")
    assert len(ports) >= 1000
    assert ports.start >= testing.LOW
    assert not set(ports) & set(ephemeral())


def test_xdist_workers_get_disjoint_slices() -> None:
    whole = port_range(worker="", workers="")
    slices = [port_range(worker=f"gw{i}", workers="4") for i in range(4)]
    seen: set[int] = set()
    for ports in slices:
        assert len(ports) == len(whole) // 4
        assert set(ports) <= set(whole)
        assert not set(ports) & seen
        seen |= set(ports)


@pytest.mark.parametrize(("worker", "workers"), [("gw4", "4"), ("w1", "4"), ("gw1", "")])
def test_nonsense_worker_variables(worker: str, workers: str) -> None:
    with pytest.raises(ValueError, match="cannot tell this pytest-xdist worker's slice"):
        port_range(worker=worker, workers=workers)


def test_free_port_follows_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw2")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    assert free_port() in port_range(worker="gw2", workers="3")


def test_no_two_calls_return_the_same_port() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(port in port_range() for port in ports)


def test_a_port_in_use_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.create_server(("127.0.0.1", 0)) as held:
        taken = held.getsockname()[1]
        monkeypatch.setattr(testing, "port_range", lambda: range(taken, taken + 1))
        with pytest.raises(RuntimeError, match=f"every TCP port of {taken}-{taken} "):
            free_port()
        if testing._bindable(taken + 1):
            monkeypatch.setattr(testing, "port_range", lambda: range(taken, taken + 2))
            assert {free_port() for _ in range(3)} == {taken + 1}
