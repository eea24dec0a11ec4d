"""`_requires`: the requirement graph, checked with Hypothesis against simple models."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from trio_overseer._requires import closure, cycle, dependents, depth, problems, unknown

ids = st.sampled_from("abcdefg")
graphs = st.dictionaries(ids, st.lists(st.sampled_from("abcdefghz"), max_size=3, unique=True))


def acyclic(graph: dict[str, list[str]]) -> bool:
    """Kahn's algorithm on the known ids: a model of "has no cycle"."""
    edges = {id: [r for r in required if r in graph] for id, required in graph.items()}
    waiting = {id: len(required) for id, required in edges.items()}
    ready = [id for id, n in waiting.items() if n == 0]
    done = 0
    while ready:
        id = ready.pop()
        done += 1
        for other, required in edges.items():
            if id in required:
                waiting[other] -= 1
                if waiting[other] == 0:
                    ready.append(other)
    return done == len(graph)


@given(graphs)
def test_cycle_agrees_with_a_topological_sort(graph: dict[str, list[str]]) -> None:
    found = cycle(graph)
    assert (found is None) == acyclic(graph)
    if found is not None:
        assert found[0] == found[-1]
        assert len(found) >= 2
        for a, b in itertools.pairwise(found):
            assert b in graph[a]  # each one requires the next


@given(graphs, st.lists(ids, max_size=3))
def test_closure_puts_requirements_first(graph: dict[str, list[str]], start: list[str]) -> None:
    if not acyclic(graph):
        return
    order = closure(graph, start)
    assert len(order) == len(set(order))
    assert set(order) >= {id for id in start if id in graph}
    for position, id in enumerate(order):
        for required in graph[id]:
            if required in graph:
                assert order.index(required) < position


@given(graphs)
def test_unknown_and_problems(graph: dict[str, list[str]]) -> None:
    missing = unknown(graph, list(graph))
    assert {(id, r) for id, r in missing} == {
        (id, r) for id in graph for r in graph[id] if r not in graph
    }
    messages = problems(graph)
    assert len(messages) == len(missing) + (0 if acyclic(graph) else 1)
    assert all("cycle" in m for m in messages[len(missing) :])


def test_messages_name_the_procs() -> None:
    graph = {"api": ["db", "cache"], "db": ["api"], "cache": []}
    assert problems(graph, ["api"]) == [
        "the requirements form a cycle: 'api' -> 'db' -> 'api' "
        "(each would wait for the other to be ready first)"
    ]
    assert problems({"api": ["dbx"]}) == [
        "proc 'api' requires 'dbx', which is not registered (known: 'api')"
    ]
    assert problems(graph, ["cache"]) == []  # only what the start brings along
    assert dependents(graph, "db") == ["api"]


def test_depth() -> None:
    assert depth({}) == 0
    assert depth({"a": []}) == 1
    assert depth({"a": ["b"], "b": ["c"], "c": [], "d": ["c"]}) == 3
    assert depth({"a": ["b"], "b": ["a"]}) >= 1  # a cycle does not loop
