"""trio_overseer: supervise child processes with Trio's structured concurrency.

The public API is exactly the names re-exported here: those of docs/api.md,
plus the documented extensions (`NotReadyError`).
"""

from ._block import open_overseer as open_overseer
from ._cmd import Cmd as Cmd
from ._errors import CmdAlreadyStartedError as CmdAlreadyStartedError
from ._errors import OverseerError as OverseerError
from ._errors import ProcExistsError as ProcExistsError
from ._errors import ProcRunningError as ProcRunningError
from ._errors import UnknownProcError as UnknownProcError
from ._overseer import Overseer as Overseer
from ._ready import NotReadyError as NotReadyError
from ._records import STDERR as STDERR
from ._records import STDOUT as STDOUT
from ._records import LogMsg as LogMsg
from ._records import ProcessInfo as ProcessInfo
from ._records import ProcessJSON as ProcessJSON
from ._records import Status as Status
from ._state import State as State
from ._version import __version__ as __version__

__all__ = [
    "STDERR",
    "STDOUT",
    "Cmd",
    "CmdAlreadyStartedError",
    "LogMsg",
    "NotReadyError",
    "Overseer",
    "OverseerError",
    "ProcExistsError",
    "ProcRunningError",
    "ProcessInfo",
    "ProcessJSON",
    "State",
    "Status",
    "UnknownProcError",
    "__version__",
    "open_overseer",
]

# Reprs and docs say trio_overseer.Cmd, not trio_overseer._cmd.Cmd.
for _obj in (
    Cmd,
    CmdAlreadyStartedError,
    OverseerError,
    ProcExistsError,
    ProcRunningError,
    UnknownProcError,
    Overseer,
    open_overseer,
    LogMsg,
    NotReadyError,
    ProcessInfo,
    State,
    Status,
):
    _obj.__module__ = __name__
del _obj
