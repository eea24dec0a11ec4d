"""The requirement graph of the procs (``add(..., requires=...)``): pure, no trio.

A proc that requires others starts only once each of them is ready; it stops
before them.  These functions take the graph as a mapping of id to the ids it
requires and answer the questions the Overseer and the CLI's config ask of
it: which procs a start brings along (`closure`, in start order), whether the
graph can be started at all (`check`: every id known, no cycle), and how deep
it is (`depth`: how many stop rounds a shutdown takes).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

__all__ = ["closure", "cycle", "dependents", "depth", "problems", "unknown"]

Graph = Mapping[str, Collection[str]]


def closure(graph: Graph, ids: Iterable[str]) -> list[str]:
    """`ids` and every proc they require, transitively, requirements first.

    Unknown ids are left out (see `unknown`); a cycle does not loop (see `cycle`).
    """
    order: list[str] = []
    seen: set[str] = set()

    def visit(id: str) -> None:
        # Iterative would be longer; the graphs are config files, a few levels deep.
        if id in seen or id not in graph:
            return
        seen.add(id)
        for required in graph[id]:
            visit(required)
        order.append(id)

    for id in ids:
        visit(id)
    return order


def unknown(graph: Graph, ids: Iterable[str]) -> list[tuple[str, str]]:
    """``(proc, requirement)`` for each requirement of `ids` (transitively) not in `graph`."""
    return [
        (id, required)
        for id in closure(graph, ids)
        for required in graph[id]
        if required not in graph
    ]


def cycle(graph: Graph, ids: Iterable[str] | None = None) -> list[str] | None:
    """A cycle among `ids` and their requirements (all procs when None), as the
    path ``[a, b, ..., a]``; None when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(id: str) -> list[str] | None:
        if state.get(id) == 2 or id not in graph:
            return None
        if state.get(id) == 1:
            return [*path[path.index(id) :], id]
        state[id] = 1
        path.append(id)
        for required in graph[id]:
            found = visit(required)
            if found is not None:
                return found
        path.pop()
        state[id] = 2
        return None

    for id in graph if ids is None else ids:
        found = visit(id)
        if found is not None:
            return found
    return None


def problems(graph: Graph, ids: Iterable[str] | None = None) -> list[str]:
    """Why `ids` (all procs when None) cannot be started: unknown requirements, a cycle."""
    start = list(graph if ids is None else ids)
    messages = []
    known = ", ".join(map(repr, sorted(graph))) or "none"
    for id, required in unknown(graph, start):
        messages.append(
            f"proc {id!r} requires {required!r}, which is not registered (known: {known})"
        )
    found = cycle(graph, start)
    if found is not None:
        messages.append(
            "the requirements form a cycle: "
            + " -> ".join(map(repr, found))
            + " (each would wait for the other to be ready first)"
        )
    return messages


def dependents(graph: Graph, id: str) -> list[str]:
    """The procs that require `id` directly."""
    return [other for other, required in graph.items() if id in required]


def depth(graph: Graph) -> int:
    """The number of procs on the longest chain of requirements (1 without any; 0 empty).

    A shutdown stops one level at a time, so it takes up to this many stop rounds.
    """
    memo: dict[str, int] = {}

    def level(id: str, path: frozenset[str]) -> int:
        if id in memo:
            return memo[id]
        below = [level(r, path | {id}) for r in graph[id] if r in graph and r not in path]
        memo[id] = 1 + max(below, default=0)
        return memo[id]

    return max((level(id, frozenset()) for id in graph), default=0)
