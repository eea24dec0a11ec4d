"""How a benchmark module describes itself to the runner (`plan(quick) -> Bench`)."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

_OPS = {">=": operator.ge, "<=": operator.le, "<": operator.lt, ">": operator.gt}
_SIGNS = {">=": "≥", "<=": "≤", "<": "<", ">": ">"}


@dataclass
class Variant:
    """One thing measured: `func(params)` of the benchmark module, in a worker process."""

    key: str
    label: str
    role: str  # "candidate" (trio_overseer), "baseline" (raw Trio), "peer", "info"
    func: str
    params: dict[str, Any] = field(default_factory=dict)
    rounds: int | None = None  # fewer rounds than the benchmark (slow peers)


@dataclass
class Target:
    """A goal: subject/reference ratio (or, with no reference, subject's value) `op` threshold."""

    text: str  # what is compared, e.g. "seq: trio_overseer / raw Trio"
    subject: str
    reference: str | None
    op: str  # ">=", "<=", "<", ">", or "info" (reported, no target)
    threshold: float
    metric: str = "value"  # or the name of an extra
    stretch: bool = False
    unit: str = "×"  # how to print the threshold

    def check(self, x: float) -> bool | None:
        if self.op == "info":
            return None
        return bool(_OPS[self.op](x, self.threshold))

    def target_text(self) -> str:
        if self.op == "info":
            return "– (info)"
        sign = _SIGNS[self.op]
        if self.reference is None:
            return f"{sign} {fmt(self.threshold, self.unit)}"
        text = f"{sign} {self.threshold:g}×"
        return text + " (stretch)" if self.stretch else text


@dataclass
class Bench:
    name: str
    title: str
    unit: str  # of the main value: "/s", "lines/s", "s", "ms", "MiB"
    higher_is_better: bool
    variants: list[Variant]
    targets: list[Target]
    rounds: int
    parallel: bool = False  # run a round's variants at once (idle, memory: long and quiet)
    timeout: float = 300.0  # per measurement
    extras: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (label, unit)


def fmt(value: float | None, unit: str) -> str:
    """A number with its unit, at a precision that suits it."""
    if value is None:
        return "–"
    if unit == "lines/s":
        return f"{value / 1e6:.2f} M lines/s"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "ns":
        return f"{value:.0f} ns"
    if unit == "µs":
        return f"{value:.0f} µs"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    if unit == "KiB":
        return f"{value:.1f} KiB"
    if unit == "×":
        return f"{value:.2f}×"
    return f"{value:g} {unit}"
