"""The recent lines of a proc, kept as the `LogBatch`es they arrived in.

Readiness waits, failure reports, the pytest plugin and the CLI's ``logs``
command all want "the last N lines".  Keeping them as batches costs nothing
per line (no `LogMsg`, no deque entry): a batch is appended whole, and the
oldest batches are dropped once the newer ones hold N lines without them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from ._records import LogBatch

__all__ = ["LineTail", "last_lines"]


def last_lines(batches: Iterable[LogBatch], count: int) -> list[LogBatch]:
    """The batches holding the last `count` lines of `batches`, the first one cut to fit."""
    kept: list[LogBatch] = []
    need = count
    for batch in reversed(list(batches)):
        if need <= 0:
            break
        n = len(batch.lines)
        if n > need:
            batch = LogBatch(batch.id, batch.type, batch.ts, batch.lines[n - need :])
            n = need
        if n:
            kept.append(batch)
        need -= n
    kept.reverse()
    return kept


class LineTail:
    """The last `maxlen` lines of one proc's output (both streams, in arrival order)."""

    __slots__ = ("_batches", "_count", "maxlen")

    def __init__(self, maxlen: int) -> None:
        self.maxlen = maxlen
        # Invariant: _count == total lines in _batches, and dropping the first
        # batch would leave fewer than maxlen lines.
        self._batches: deque[LogBatch] = deque()
        self._count = 0

    def __len__(self) -> int:
        """The number of lines kept (at most `maxlen`)."""
        return min(self._count, self.maxlen)

    def add(self, batch: LogBatch) -> None:
        """Append the lines of `batch`, forgetting the ones that fall out."""
        n = len(batch.lines)
        if not n or self.maxlen <= 0:
            return
        batches = self._batches
        if n >= self.maxlen:
            batches.clear()
            if n > self.maxlen:  # keep only what can be shown
                batch = LogBatch(batch.id, batch.type, batch.ts, batch.lines[n - self.maxlen :])
                n = self.maxlen
            self._count = 0
        batches.append(batch)
        self._count += n
        while self._count - len(batches[0].lines) >= self.maxlen:
            self._count -= len(batches.popleft().lines)

    def clear(self) -> None:
        """Forget every line (a new run starts)."""
        self._batches.clear()
        self._count = 0

    def batches(self, count: int | None = None) -> list[LogBatch]:
        """The batches of the last `count` lines kept (all of them when None), oldest first."""
        want = len(self) if count is None else min(count, len(self))
        return last_lines(self._batches, want)
