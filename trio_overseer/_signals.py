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

__all__ = ["describe_signal", "parse_signal", "signal_name"]

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
