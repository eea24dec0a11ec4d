"""Fixtures shared by the real-process tests.

``no_survivors`` (autouse) tags every test: it puts ``TRIO_OVERSEER_TEST_TAG``
into the test process's environment, which every child (and grandchild)
inherits; tests that give a child its own environment add the tag with
``children.tagged_env()``.  At teardown it scans ``/proc/*/environ`` for the
tag, SIGKILLs every survivor and fails the test naming it, and fails too if
the test process left a zombie child (a child that was never reaped).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
from children import (
    TAG_VAR,
    describe,
    kill_quietly,
    my_zombies,
    tagged_pids,
    wait_gone_sync,
)
from hypothesis import HealthCheck, settings

from trio_overseer import _spawn

# Hypothesis profiles, registered before pytest reads --hypothesis-profile:
# "ci" (the default of the real-process property tests: bounded) and "long"
# for deeper runs (pytest --hypothesis-profile=long).
for _name, _examples in (("ci", 100), ("long", 500)):
    settings.register_profile(
        _name,
        max_examples=_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )

#: A process SIGKILLed by the library an instant before the test ended may
#: still be on its way out; anything alive after this grace is a survivor.
SURVIVOR_GRACE = 0.5


@pytest.fixture(autouse=True)
def no_survivors(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    tag = uuid.uuid4().hex
    monkeypatch.setenv(TAG_VAR, tag)
    yield tag

    problems = []
    survivors = wait_gone_sync(tagged_pids(tag), SURVIVOR_GRACE)
    if survivors:
        problems.append("processes survived the test: " + "; ".join(map(describe, survivors)))
        for pid in survivors:
            kill_quietly(pid)
        wait_gone_sync(survivors, 5.0)
    zombies = my_zombies()
    if zombies:
        problems.append("zombie children of the test process: " + "; ".join(map(describe, zombies)))
        for pid in zombies:
            with contextlib.suppress(ChildProcessError):  # reaped meanwhile
                os.waitpid(pid, os.WNOHANG)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def tag(no_survivors: str) -> str:
    """The tag of this test's processes."""
    return no_survivors


@pytest.fixture(params=["posix_spawn", "popen"])
def spawn_way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with each way of spawning: posix_spawn (where libc has it) and Popen."""
    if request.param == "popen":
        monkeypatch.setattr(_spawn, "_POSIX_SPAWN", None)
    elif _spawn._POSIX_SPAWN is None:
        pytest.skip("posix_spawn through ctypes is not available here")
    return str(request.param)
