"""Readiness probes: how to know a started proc is ready to be used.

(Interface fixed; the probes are implemented by `wait_ready`.)
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import attrs

from ._errors import OverseerError

if TYPE_CHECKING:
    from ._overseer import Overseer


class NotReadyError(OverseerError, TimeoutError):
    """A proc did not become ready: it ended first, or the timeout passed."""


@attrs.frozen
class Readiness:
    """What `Overseer.start` waits for before it returns (all that are set)."""

    line: re.Pattern[str] | None = None
    port: tuple[str, int] | None = None
    url: str | None = None
    path: str | None = None
    check: Callable[[], Awaitable[bool]] | None = None
    timeout: float = 30.0

    def __bool__(self) -> bool:
        return any(p is not None for p in (self.line, self.port, self.url, self.path, self.check))


async def wait_ready(ovr: Overseer, id: str, readiness: Readiness) -> None:
    """Return once proc `id` is ready; raise NotReadyError if it ends first or times out."""
    raise NotImplementedError


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
        host, number = ("127.0.0.1", port) if isinstance(port, int) else port
        if isinstance(number, bool) or not isinstance(number, int) or not 0 < number < 65536:
            raise ValueError(f"proc {id!r}: ready_port must be a TCP port number, got {port!r}")
        address = (host, number)
    if url is not None and not url.startswith(("http://", "https://")):
        raise ValueError(f"proc {id!r}: ready_url must be an http:// URL, got {url!r}")
    if check is not None and not callable(check):
        raise TypeError(f"proc {id!r}: ready_check must be an async callable, got {check!r}")
    return Readiness(
        line=re.compile(line) if line is not None else None,
        port=address,
        url=url,
        path=os.fspath(path) if path is not None else None,
        check=check,
        timeout=float(timeout),
    )
