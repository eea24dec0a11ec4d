"""Restart policies on real processes: `restart=`, `success_codes=`, no limit,
the stable-run reset and give-up reporting (the decisions themselves are
tested with Hypothesis in test_supervision.py)."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path
from typing import Any

import pytest
import trio
from children import EXIT_0, EXIT_1, EXIT_42, FAIL_UNTIL, FINAL, PY, T, add_refuses

from trio_overseer import ProcessInfo, State, open_overseer


async def supervised(id: str, exec: str, args: Any, **options: Any) -> list[ProcessInfo]:
    """Supervise one proc to its end; every final state event of its runs."""
    finals = []
    with trio.fail_after(T):
        async with open_overseer(handle_signals=False, backoff_base=0.001) as ovr:
            async with ovr.subscribe_states() as states:
                ovr.add(id, exec, args, **options)
                await ovr.supervise(id)
            async for info in states:
                if info.state in FINAL:
                    finals.append(info)
    return finals


async def test_always_restarts_success_within_retry_times() -> None:
    finals = await supervised("p", PY, EXIT_0, restart="always", retry_times=2)
    assert [i.exit_code for i in finals] == [0, 0, 0]  # three runs, then supervise() returns
    assert [i.restart_in is not None for i in finals] == [True, True, False]
    assert [i.gave_up for i in finals] == [False, False, True]
    assert finals[-1].restarts == 2


async def test_never_restarts_no_failure() -> None:
    finals = await supervised("p", PY, EXIT_1, restart="never", retry_times=3)
    assert [(i.exit_code, i.restart_in, i.gave_up) for i in finals] == [(1, None, False)]


@pytest.mark.parametrize(("args", "runs"), [(EXIT_42, 1), (EXIT_0, 1), (EXIT_1, 3)])
async def test_on_failure_with_success_codes(args: list[str], runs: int) -> None:
    finals = await supervised("p", PY, args, success_codes=(0, 42), retry_times=2)
    assert len(finals) == runs
    assert finals[-1].gave_up is (runs == 3)


async def test_no_limit(tmp_path: Path) -> None:
    finals = await supervised("p", PY, FAIL_UNTIL(tmp_path / "n", 6), retry_times=math.inf)
    assert [i.exit_code for i in finals] == [1] * 5 + [0]
    assert finals[-2].restarts == 4
    assert finals[-1].restarts == 5
    assert all(i.retry_times == math.inf for i in finals)
    assert finals[0].to_dict()["retryTimes"] == -1  # JSON has no infinity
    json.dumps(finals[0].to_dict(), allow_nan=False)


# Runs 1, 2, 4, 5, ... exit 1 at once; run 3 prints "up" and runs until signalled.
FLAKY = """
n=$(cat count 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > count
if [ "$n" = 3 ]; then echo up; exec sleep 3600; fi
exit 1
"""


async def test_a_stable_run_resets_the_retry_count(tmp_path: Path) -> None:
    reset_after = 1.0
    finals: list[ProcessInfo] = []
    with trio.fail_after(T):
        async with open_overseer(handle_signals=False, backoff_base=0.001) as ovr:
            ovr.add("p", "sh", ["-c", FLAKY], dir=tmp_path, retry_times=2, reset_after=reset_after)
            async with ovr.subscribe_states() as states, trio.open_nursery() as nursery:
                nursery.start_soon(ovr.supervise, "p")
                await ovr.wait_for_log("p", "^up$")
                # Runs 1 and 2 spent the budget of 2; run 3 stays up reset_after s.
                assert ovr.status("p").restarts == 2
                await trio.sleep(reset_after)  # uptime > reset_after: not a sync point
                ovr.signal("p", signal.SIGTERM)  # a failure (not a stop): restarted
            async for info in states:
                if info.state in FINAL:
                    finals.append(info)
    assert [i.exit_code for i in finals] == [1, 1, -signal.SIGTERM, 1, 1]
    assert [i.restarts for i in finals] == [0, 1, 0, 1, 2]  # run 3 forgave the first two
    assert [i.gave_up for i in finals] == [False] * 4 + [True]
    assert (tmp_path / "count").read_text().strip() == "5"


async def test_stop_is_no_give_up() -> None:
    with trio.fail_after(T):
        async with open_overseer(handle_signals=False) as ovr:
            ovr.add("p", "sleep", ["3600"], restart="always", retry_times=3)
            await ovr.start("p")
            ovr.stop("p")
            info = await ovr.wait_for_state("p", *FINAL)
    assert (info.state, info.gave_up, info.restart_in) == (State.INTERRUPTED, False, None)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"restart": "sometimes"}, ValueError, "restart must be one of"),
        ({"restart": None}, ValueError, "restart must be one of"),
        ({"reset_after": -1}, ValueError, "reset_after must be a number of seconds >= 0"),
        ({"success_codes": [256]}, ValueError, "success_codes must hold exit codes"),
        ({"success_codes": 0}, TypeError, "success_codes must be a collection"),
        ({"retry_times": math.nan}, ValueError, "retry_times must be an int >= 0 or math.inf"),
        ({"retry_times": 2.5}, ValueError, "retry_times must be an int >= 0 or math.inf"),
    ],
    ids=str,
)
def test_bad_restart_options_name_the_proc_and_option(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    add_refuses(options, error, message)
