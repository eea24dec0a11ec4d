"""Signals by name and by number: the one parser and the one namer.

Pure (no trio, no I/O): the config files, the control socket, `Cmd`'s
``stop_signal`` and every message that names a signal go through here.
`parse_signal` raises `ValueError`; each caller wraps it into its own error
(a config problem naming file and field, a control-socket answer, a usage
error), so this module needs none of theirs.
"""

from __future__ import annotations

import signal

from ._text import shorten

__all__ = ["Ladder", "describe_signal", "parse_ladder", "parse_signal", "signal_name"]

#: A stop escalation: (signal, seconds to wait for the group to be gone) steps.
Ladder = tuple[tuple[int, float], ...]

_MAX_DIGITS = 3  # NSIG is below 1000 everywhere: more digits is no signal number


def parse_signal(value: object) -> int:
    """A signal given as a number (``15``, ``"15"``) or a name in any case, with
    or without its ``SIG`` (``"TERM"``, ``"SIGTERM"``, ``" usr1 "``).

    Raises:
      ValueError: not a signal of this platform; the message quotes the value
        (shortened) and says what is accepted.
    """
    limits = f"1 to {signal.NSIG - 1}"
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 < value < signal.NSIG:
            raise ValueError(f"no signal number {shorten(value)} ({limits})")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a signal name or number, got {shorten(value)}")
    text = value.strip()
    if text.isascii() and text.isdigit():  # not "²" or other Unicode digits
        if len(text) > _MAX_DIGITS or not 0 < int(text) < signal.NSIG:
            raise ValueError(f"no signal number {shorten(text)} ({limits})")
        return int(text)
    name = text.upper()
    member = signal.Signals.__members__.get(name if name.startswith("SIG") else "SIG" + name)
    if member is None:
        raise ValueError(
            f"unknown signal name {shorten(value)} (try TERM, HUP, USR1, 'SIGTERM' or a number)"
        )
    return int(member)


def parse_ladder(value: object) -> Ladder:
    """A stop escalation ladder: ``[(SIGINT, 5), ("TERM", 5)]``, each step a signal
    (`parse_signal`) and the seconds to wait after it for the process group to
    be gone; SIGKILL always follows the last step, so no step may be SIGKILL.

    Raises:
      ValueError: not a non-empty list of (signal, seconds) pairs; says which step.
    """
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple) or not value:
        raise ValueError(
            f"expected a list of (signal, seconds) steps, e.g. [(SIGINT, 5), (SIGTERM, 5)], "
            f"got {shorten(value)}"
        )
    steps = []
    for number, step in enumerate(value, 1):
        if isinstance(step, str | bytes) or not isinstance(step, list | tuple) or len(step) != 2:
            raise ValueError(
                f"step {number}: expected a (signal, seconds) pair, got {shorten(step)}"
            )
        sig, seconds = step
        try:
            sig = parse_signal(sig)
        except ValueError as exc:
            raise ValueError(f"step {number}: {exc}") from None
        if sig == signal.SIGKILL:
            raise ValueError(
                f"step {number}: SIGKILL always comes last, after the last step: leave it out"
            )
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 <= seconds < float("inf")
        ):
            raise ValueError(
                f"step {number}: expected a finite number of seconds >= 0, got {shorten(seconds)}"
            )
        steps.append((sig, float(seconds)))
    return tuple(steps)


def signal_name(sig: int) -> str:
    """``"SIGTERM"`` for 15; the bare number (``"35"``) for a signal without a name.

    A token `parse_signal` reads back: for config files and init systems.
    """
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


def describe_signal(sig: int) -> str:
    """``"SIGTERM"`` for 15; ``"signal 35"`` for a signal without a name: for prose."""
    name = signal_name(sig)
    return name if name.startswith("SIG") else f"signal {name}"
