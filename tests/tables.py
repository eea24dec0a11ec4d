"""Checking a lifecycle table (the run table, the phase table) by random walks."""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Iterable
from typing import TypeVar

from trio_overseer._state import IllegalTransitionError

S = TypeVar("S", bound=enum.Enum)  # a state
M = TypeVar("M")  # a move (a trigger, or the state to move to)


def walk(
    now: Callable[[], S],
    moves: Iterable[M],
    legal: Callable[[M], bool],
    apply: Callable[[M], object],
    table: set[tuple[str, str]],
) -> list[S]:
    """Apply each of `moves` to a machine whose state `now()` gives; return the path.

    A move the machine calls `legal` changes the state; any other raises
    `IllegalTransitionError` and changes nothing.  Every step of the path is
    a pair of `table` (of state values).
    """
    path = [now()]
    for move in moves:
        before = now()
        allowed = legal(move)
        try:
            apply(move)
        except IllegalTransitionError:
            assert not allowed, f"{move} is legal in {before} but was refused"
            assert now() is before
        else:
            assert allowed, f"{move} is not legal in {before} but was applied"
            path.append(now())
    for a, b in itertools.pairwise(path):
        assert (a.value, b.value) in table, f"{a} -> {b} is not in the table"
    return path
