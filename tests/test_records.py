"""The value records: LogBatch and how it turns into LogMsg."""

from __future__ import annotations

import attrs
import pytest

from trio_overseer import STDERR, STDOUT, LogBatch, LogMsg
from trio_overseer._records import log_msgs


def test_log_batch_is_a_frozen_sized_iterable_of_log_msgs() -> None:
    batch = LogBatch("web", STDERR, 12.5, ["one", "", "three"])
    assert batch.lines == ("one", "", "three")  # any iterable becomes a tuple
    assert len(batch) == 3
    msgs = list(batch)
    assert msgs == [
        LogMsg("web", STDERR, "one", 12.5),
        LogMsg("web", STDERR, "", 12.5),
        LogMsg("web", STDERR, "three", 12.5),
    ]
    assert list(batch) == msgs  # iterable again
    assert log_msgs(batch) == msgs
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        batch.lines = ()  # type: ignore[misc]
    assert batch == LogBatch("web", STDERR, 12.5, ("one", "", "three"))
    assert hash(batch) == hash(LogBatch("web", STDERR, 12.5, ("one", "", "three")))


def test_log_msgs_are_made_as_the_iteration_reaches_them() -> None:
    it = iter(LogBatch("a", STDOUT, 1.0, ("x", "y")))
    assert next(it) == LogMsg("a", STDOUT, "x", 1.0)
    assert next(it) == LogMsg("a", STDOUT, "y", 1.0)
    with pytest.raises(StopIteration):
        next(it)
    empty = LogBatch("a", STDOUT, 1.0, ())
    assert len(empty) == 0
    assert list(empty) == []
    assert log_msgs(empty) == []
