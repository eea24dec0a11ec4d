"""trio_overseer: supervise child processes with Trio's structured concurrency.

The public API is exactly the names re-exported here (docs/api.md).

Importing the package is cheap: each public name is imported from its private
module on first access (PEP 562 ``__getattr__``), so ``trio-overseer --version``
and the CLI's config checks never pay for importing Trio.  To add a public
name, add one line to ``_EXPORTS`` and its import under ``TYPE_CHECKING`` (for
type checkers); tests/test_exports.py checks that the two agree.
"""

import importlib as _importlib
import typing as _typing

from ._version import __version__ as __version__

if _typing.TYPE_CHECKING:
    from ._block import open_overseer as open_overseer
    from ._cmd import Cmd as Cmd
    from ._errors import CmdAlreadyStartedError as CmdAlreadyStartedError
    from ._errors import NotReadyError as NotReadyError
    from ._errors import OverseerError as OverseerError
    from ._errors import OverseerNotOpenError as OverseerNotOpenError
    from ._errors import ProcExistsError as ProcExistsError
    from ._errors import ProcRunningError as ProcRunningError
    from ._errors import RequirementError as RequirementError
    from ._errors import UnknownProcError as UnknownProcError
    from ._overseer import Overseer as Overseer
    from ._records import STDERR as STDERR
    from ._records import STDOUT as STDOUT
    from ._records import LogBatch as LogBatch
    from ._records import LogMsg as LogMsg
    from ._records import OverseerStatistics as OverseerStatistics
    from ._records import ProcessInfo as ProcessInfo
    from ._records import ProcessJSON as ProcessJSON
    from ._records import Status as Status
    from ._state import State as State

#: Each public name and the private module that defines it.
_EXPORTS: dict[str, str] = {
    "open_overseer": "._block",
    "Cmd": "._cmd",
    "CmdAlreadyStartedError": "._errors",
    "NotReadyError": "._errors",
    "OverseerError": "._errors",
    "OverseerNotOpenError": "._errors",
    "ProcExistsError": "._errors",
    "ProcRunningError": "._errors",
    "RequirementError": "._errors",
    "UnknownProcError": "._errors",
    "Overseer": "._overseer",
    "STDERR": "._records",
    "STDOUT": "._records",
    "LogBatch": "._records",
    "LogMsg": "._records",
    "OverseerStatistics": "._records",
    "ProcessInfo": "._records",
    "ProcessJSON": "._records",
    "Status": "._records",
    "State": "._state",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def _import_public(name: str) -> _typing.Any:
    """Import a public name from its module on first access, and keep it."""
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(_importlib.import_module(module, __name__), name)
    if getattr(value, "__module__", "").startswith(f"{__name__}._"):
        # Reprs and docs say trio_overseer.Cmd, not trio_overseer._cmd.Cmd.
        value.__module__ = __name__
    globals()[name] = value  # later accesses never come back here
    return value


def _dir() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if not _typing.TYPE_CHECKING:  # to type checkers, a misspelt name stays an error, not an Any
    __getattr__ = _import_public
    __dir__ = _dir
