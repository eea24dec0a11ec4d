"""The public face of trio_overseer is exactly the import list of API.md."""

from __future__ import annotations

import enum
import importlib
import re

import pytest

import trio_overseer

#: "Everything importable from trio_overseer" in API.md.
API_NAMES = [
    "open_overseer",
    "Overseer",
    "Cmd",
    "State",
    "Status",
    "ProcessInfo",
    "ProcessJSON",
    "LogMsg",
    "LogBatch",
    "STDOUT",
    "STDERR",
    "OverseerError",
    "ProcExistsError",
    "UnknownProcError",
    "ProcRunningError",
    "CmdAlreadyStartedError",
    "__version__",
]
#: Additions documented in docs/api.md ("Extensions beyond the contract").
EXTENSION_NAMES = [
    "NotReadyError",
    "OverseerNotOpenError",
    "OverseerStatistics",
    "RequirementError",
]


@pytest.mark.parametrize("name", API_NAMES)
def test_api_name_importable(name: str) -> None:
    module = importlib.import_module("trio_overseer")
    assert hasattr(module, name)
    exec(f"from trio_overseer import {name}", {})


def test_dunder_all_is_the_api_list() -> None:
    exported = getattr(trio_overseer, "__all__", None)
    if exported is None:
        pytest.skip("no __all__")
    assert sorted(exported) == sorted(API_NAMES + EXTENSION_NAMES)
    assert len(exported) == len(set(exported))


def test_no_other_public_names() -> None:
    for name in trio_overseer.__all__:  # the package imports its names on first access
        getattr(trio_overseer, name)
    public = {
        name
        for name, value in vars(trio_overseer).items()
        if not name.startswith("_") and not isinstance(value, type(trio_overseer))
    }
    assert public == set(API_NAMES + EXTENSION_NAMES) - {"__version__"}


@pytest.mark.parametrize(
    "name", [n for n in API_NAMES + EXTENSION_NAMES if isinstance(getattr(trio_overseer, n), type)]
)
def test_public_classes_live_in_trio_overseer(name: str) -> None:
    assert getattr(trio_overseer, name).__module__ == "trio_overseer"


def test_open_overseer_module() -> None:
    assert trio_overseer.open_overseer.__module__ == "trio_overseer"


def test_aliases_and_constants() -> None:
    assert trio_overseer.ProcessJSON is trio_overseer.ProcessInfo
    assert (trio_overseer.STDOUT, trio_overseer.STDERR) == (1, 2)
    assert isinstance(trio_overseer.__version__, str)
    assert re.match(r"^\d+\.\d+", trio_overseer.__version__)


def test_state_values() -> None:
    State = trio_overseer.State
    assert issubclass(State, enum.Enum)
    assert {s.value for s in State} == {
        "initial", "starting", "running", "stopping", "interrupted", "finished", "fatal",
    }  # fmt: skip
    for s in State:
        assert State(s.value) is s
        assert s.name == s.value.upper()


def test_error_tree() -> None:
    t = trio_overseer
    assert issubclass(t.OverseerError, Exception)
    assert issubclass(t.ProcExistsError, t.OverseerError)
    assert issubclass(t.ProcExistsError, ValueError)
    assert issubclass(t.UnknownProcError, t.OverseerError)
    assert issubclass(t.UnknownProcError, LookupError)
    assert issubclass(t.ProcRunningError, t.OverseerError)
    assert issubclass(t.ProcRunningError, RuntimeError)
    assert issubclass(t.CmdAlreadyStartedError, t.OverseerError)
    assert issubclass(t.CmdAlreadyStartedError, RuntimeError)
    assert issubclass(t.OverseerNotOpenError, t.OverseerError)
    assert issubclass(t.OverseerNotOpenError, RuntimeError)
    assert issubclass(t.NotReadyError, t.OverseerError)
    assert issubclass(t.NotReadyError, TimeoutError)
