"""No process left behind, whatever ends the program (issue 4's leak scenarios).

Each scenario (tests/leak_scenarios.py) starts six kinds of misbehaving
children under trio_overseer in a subprocess, 9 processes in all (a sleeper,
a grandchild ignoring SIGTERM in the group, a double-forked grandchild, a
setsid'd grandchild, a child ignoring SIGTERM, a child that closed its
stdout), ends the program one way, and counts the survivors by the marker
every one of them inherited; then again with every proc on a pty (``pty=True``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from leak_scenarios import KINDS, WAYS, kill_all, marked_alive, run_scenario, survivors_after

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")


# With pty=True, the ways that take each path once: the block's own cleanup,
# the signal handler's, and the watchdog's (the program SIGKILLed).
_PTY_WAYS = ["exception", "SIGTERM", "SIGKILL"]


@pytest.mark.parametrize(
    ("mode", "way"), [("overseer", way) for way in WAYS] + [("pty", way) for way in _PTY_WAYS]
)
def test_nothing_survives(mode: str, way: str) -> None:
    survivors = run_scenario(mode, way)
    assert survivors == [], f"{len(survivors)} processes survived {way} ({mode})"


INNER_TEST = """
import os, sys, trio

KINDS = {kinds!r}

async def test_hangs(overseer):
    for kind, (code, _) in KINDS.items():
        env = {{**os.environ, "LEAK_MARK": "{mark}:" + kind}}
        overseer.add(kind, sys.executable, ["-c", code], env=env)
        await overseer.start(kind)
    await trio.sleep_forever()
"""


@pytest.mark.parametrize("method", ["signal", "thread"])
def test_nothing_survives_a_pytest_timeout(tmp_path: Path, method: str) -> None:
    # "signal": the timeout fails the test inside trio.run, teardown runs.
    # "thread": pytest-timeout dumps the stacks and os._exit()s: no cleanup
    # runs in the process at all, only the watchdog can help.
    mark = uuid.uuid4().hex
    (tmp_path / "test_inner.py").write_text(INNER_TEST.format(kinds=KINDS, mark=mark))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "trio",
             "--timeout=3", f"--timeout-method={method}", "-o", "trio_mode=true",
             "test_inner.py"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert "Timeout" in result.stdout + result.stderr, result.stdout
        survivors = survivors_after(mark, 2.0)
        assert survivors == [], f"{len(survivors)} processes survived the pytest timeout"
    finally:
        kill_all(marked_alive(mark))
