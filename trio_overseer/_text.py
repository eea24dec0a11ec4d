"""Values quoted in error messages: short, and never costly to render.

Pure: used by the parsers of untrusted input (config files, the control
socket), whose messages quote what they refused.
"""

from __future__ import annotations

__all__ = ["shorten"]


def shorten(value: object, limit: int = 60) -> str:
    """`value` for an error message: its repr (a string of ASCII digits as is),
    cut at `limit` characters; a huge int is summarised, never converted
    (Python refuses to render more than 4300 digits, and rendering fewer is
    already slow: a request may hold 64 KiB of them)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 100:
        return f"<a number of about {int(value.bit_length() * 0.30103) + 1} digits>"
    plain = isinstance(value, str) and value.isascii() and value.isdigit()
    text = value if plain and isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
