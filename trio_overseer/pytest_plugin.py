"""pytest plugin: an `overseer` fixture whose processes cannot outlive the test.

Registered by the ``pytest11`` entry point; needs pytest-trio for async tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ._overseer import Overseer, open_overseer


@pytest.fixture
async def overseer() -> AsyncIterator[Overseer]:
    """An open Overseer for one test; every proc is stopped and reaped at teardown."""
    async with open_overseer(handle_signals=False, stop_timeout=2.0) as ovr:
        yield ovr
