"""LineTail: the last N lines of a proc, kept as batches."""

from __future__ import annotations

from collections import deque

from hypothesis import given
from hypothesis import strategies as st

from trio_overseer import STDERR, STDOUT, LogBatch
from trio_overseer._tail import LineTail, last_lines

sizes = st.lists(st.integers(min_value=0, max_value=30), max_size=30)


def batches_of(counts: list[int]) -> list[LogBatch]:
    """Batches with distinct lines, alternating streams."""
    out = []
    serial = 0
    for i, n in enumerate(counts):
        lines = tuple(f"{i}.{serial + j}" for j in range(n))
        serial += n
        out.append(LogBatch("p", STDOUT if i % 2 else STDERR, float(i), lines))
    return out


def flat(batches: list[LogBatch]) -> list[tuple[int, float, str]]:
    return [(b.type, b.ts, line) for b in batches for line in b.lines]


@given(sizes, st.integers(min_value=0, max_value=40), st.integers(min_value=0, max_value=50))
def test_tail_keeps_exactly_the_last_lines(counts: list[int], maxlen: int, ask: int) -> None:
    tail = LineTail(maxlen)
    model: deque[tuple[int, float, str]] = deque(maxlen=maxlen)
    for batch in batches_of(counts):
        tail.add(batch)
        model.extend(flat([batch]))
        assert len(tail) == len(model)
        assert flat(tail.batches()) == list(model)
    kept = tail.batches(ask)
    assert flat(kept) == list(model)[max(0, len(model) - ask) :]
    assert all(len(b) for b in kept)
    tail.clear()
    assert len(tail) == 0
    assert tail.batches() == []


@given(sizes, st.integers(min_value=0, max_value=50))
def test_last_lines_of_a_list(counts: list[int], count: int) -> None:
    batches = batches_of(counts)
    want = flat(batches)
    assert flat(last_lines(batches, count)) == want[max(0, len(want) - count) :]
