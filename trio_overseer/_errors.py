"""Exceptions raised by trio_overseer.

Every error the library raises on purpose derives from `OverseerError` and also
from the built-in exception it means, so callers can catch either::

    OverseerError
    ├── ProcExistsError (ValueError)        add() with an id already registered
    ├── UnknownProcError (LookupError)      an id that was never added
    ├── ProcRunningError (RuntimeError)     remove()/supervise() of a busy proc
    ├── CmdAlreadyStartedError (RuntimeError)  a second Cmd.run(): use clone()
    ├── OverseerNotOpenError (RuntimeError)    start() outside `async with open_overseer()`
    ├── NotReadyError (TimeoutError)        start(): the proc ended, or ready_timeout
    │                                       passed, before it was ready
    └── RequirementError (ValueError)       start()/supervise(): a requirement
                                            (`requires=`) is unknown, or they form a cycle

Bugs are not in the tree: an illegal state transition raises
`IllegalTransitionError` (a `RuntimeError`, see `_state`).
"""

from __future__ import annotations


class OverseerError(Exception):
    """Base class of every error raised by trio_overseer."""


class ProcExistsError(OverseerError, ValueError):
    """A proc with this id is already registered."""


class UnknownProcError(OverseerError, LookupError):
    """No proc with this id is registered."""


class ProcRunningError(OverseerError, RuntimeError):
    """The proc is running or supervised, so this operation is refused."""


class CmdAlreadyStartedError(OverseerError, RuntimeError):
    """A Cmd runs at most once; `Cmd.clone()` makes a fresh one."""


class OverseerNotOpenError(OverseerError, RuntimeError):
    """`Overseer.start` needs the nursery of an open ``async with open_overseer()`` block.

    Without a block, ``await ovr.supervise(id)`` or ``await ovr.supervise_all()``
    supervise in the calling task.
    """


class RequirementError(OverseerError, ValueError):
    """The procs to start cannot be started in any order: a proc requires an id
    that is not registered, or the requirements form a cycle.  Nothing was
    started when this is raised."""


class NotReadyError(OverseerError, TimeoutError):
    """A proc did not become ready: it ended first, or the timeout passed.

    The proc has been stopped when this is raised.
    """
