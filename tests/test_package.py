"""The package as installed: metadata, the lazy ``__init__``, a cheap ``--version``.

These run against whatever ``trio_overseer`` the interpreter imports: the
checkout with an editable install, or the wheel in site-packages when .ci/run
runs the suite outside the checkout.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

import trio_overseer

PY = sys.executable
#: Console scripts are installed beside the interpreter of the venv.
BIN = Path(PY).parent
DIST = "trio-overseer"


def run(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, check=False, env={**environ, **env}
    )


def imported_modules(argv: list[str]) -> set[str]:
    """The modules that running `argv` imports (from ``-X importtime``), asserting it succeeds."""
    result = run(*argv, PYTHONPROFILEIMPORTTIME="1")
    assert result.returncode == 0, result.stderr
    return {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def test_version_matches_metadata() -> None:
    assert trio_overseer.__version__ == importlib.metadata.version(DIST)


def test_metadata() -> None:
    meta = importlib.metadata.metadata(DIST)
    assert meta["License-Expression"] == "MIT" or meta["License"] == "MIT"
    assert {"cli", "test"} <= set(meta.get_all("Provides-Extra") or [])
    assert meta.get_all("Project-URL")
    assert "Operating System :: POSIX :: Linux" in (meta.get_all("Classifier") or [])


def test_console_script_and_plugin_entry_points() -> None:
    eps = importlib.metadata.distribution(DIST).entry_points
    assert {(ep.group, ep.name, ep.value) for ep in eps} >= {
        ("console_scripts", "trio-overseer", "trio_overseer._cli:main"),
        ("pytest11", "trio_overseer", "trio_overseer.pytest_plugin"),
    }


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([str(BIN / "trio-overseer"), "--version"], id="trio-overseer"),
        pytest.param([PY, "-m", "trio_overseer", "--version"], id="python-m"),
    ],
)
def test_version_does_not_import_trio(argv: list[str]) -> None:
    result = run(*argv)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["trio-overseer", trio_overseer.__version__]
    modules = imported_modules(argv)
    assert "trio_overseer._cli" in modules  # the measurement saw the CLI's imports
    assert not {m for m in modules if m == "trio" or m.startswith("trio.")}


def test_import_is_lazy() -> None:
    code = (
        "import sys, trio_overseer;"
        "assert 'trio' not in sys.modules, 'import trio_overseer imported trio';"
        "from trio_overseer import Overseer;"
        "assert 'trio' in sys.modules and Overseer.__module__ == 'trio_overseer'"
    )
    result = run(PY, "-c", code)
    assert result.returncode == 0, result.stderr


def test_star_import_and_dir() -> None:
    namespace: dict[str, object] = {}
    exec("from trio_overseer import *", namespace)
    assert set(trio_overseer.__all__) <= set(namespace)
    assert set(trio_overseer.__all__) <= set(dir(trio_overseer))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        trio_overseer.nope  # type: ignore[attr-defined]  # noqa: B018


def test_lazy_table_matches_type_checking_imports() -> None:
    # Type checkers see the names through the `if TYPE_CHECKING:` imports,
    # the interpreter through `_EXPORTS`: adding a name to one but not the
    # other would type-check and fail at run time, or the other way round.
    tree = ast.parse(Path(trio_overseer.__file__).read_text())
    seen: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "_typing.TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom), ast.unparse(stmt)
                for alias in stmt.names:
                    assert alias.asname == alias.name, "re-export with `import X as X`"
                    seen[alias.name] = "." * stmt.level + (stmt.module or "")
    assert seen == trio_overseer._EXPORTS
