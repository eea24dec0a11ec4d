"""``.env`` files, read as python-dotenv reads them (and honcho and foreman apply them).

The grammar is python-dotenv's, written afresh:

* ``NAME=value`` bindings, optionally after ``export``; the name may be
  quoted with single quotes (``'NAME'=value``, ``export 'NAME'=value``);
* single-quoted values are literal but for ``\\'`` and ``\\\\``;
  double-quoted values understand ``\\n``, ``\\t``, ``\\"``, ``\\\\`` and the
  other C escapes; both may span several lines;
* unquoted values end at the end of the line, minus a `` #`` comment and
  trailing blanks; ``NAME= # comment`` is empty, ``NAME=#x`` is ``#x``;
* a bare ``NAME`` (no ``=``) binds nothing, and undoes an earlier binding of
  that name in the file (python-dotenv gives it the value None);
* ``#`` lines and blank lines are skipped.

Where python-dotenv and honcho/foreman disagree, this module follows honcho
and foreman: ``${VAR}`` in a value is kept as written, never expanded (a
note says so).  A line that cannot be read (``a: b``), and a name no shell
accepts (``uglyKey[%$``, ``-foo``, non-ASCII letters), is skipped with a
warning naming the line; the rest of the file applies.
"""

from __future__ import annotations

import re

import attrs

__all__ = ["DotEnv", "parse_dotenv"]

# What a POSIX shell accepts as a variable name (honcho and foreman agree).
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BLANKS = re.compile(r"[^\S\r\n]*")  # spaces and tabs, not newlines
_SPACE = re.compile(r"\s*")  # anything blank, newlines included
_EXPORT = re.compile(r"export[^\S\r\n]+")
_QUOTED_NAME = re.compile(r"'([^']+)'")
_BARE_NAME = re.compile(r"[^=#\s]+")
_SINGLE = re.compile(r"'((?:\\.|[^'\\])*)'", re.DOTALL)
_DOUBLE = re.compile(r'"((?:\\.|[^"\\])*)"', re.DOTALL)
_TO_EOL = re.compile(r"[^\r\n]*")
_COMMENT = re.compile(r"[^\S\r\n]*(?:#[^\r\n]*)?")
_EOL = re.compile(r"[^\S\r\n]*(?:\r\n|\n|\r|$)")
_SKIP_LINE = re.compile(r"[^\r\n]*(?:\r\n|\n|\r)?")
_SINGLE_ESCAPES = re.compile(r"\\([\\'])")
_DOUBLE_ESCAPES = re.compile(r"\\([\\'\"abfnrtv])")
_C_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_INTERPOLATION = re.compile(r"\$\{[^}]*\}")


@attrs.frozen
class DotEnv:
    """What a ``.env`` file holds: its variables, and what to tell the user."""

    values: dict[str, str]
    """The variables, in file order (a later binding of a name wins)."""
    warnings: tuple[tuple[int, str], ...] = ()
    """(line, message) for each line skipped."""
    notes: tuple[tuple[int, str], ...] = ()
    """(line, message) where other tools would read the line differently."""


class _Unreadable(Exception):
    """Internal: the binding at hand cannot be read."""


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def line(self, pos: int | None = None) -> int:
        """The 1-based line number of ``pos`` (default: here)."""
        end = self.pos if pos is None else pos
        return self.text.count("\n", 0, end) + 1

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def match(self, regex: re.Pattern[str]) -> re.Match[str]:
        found = regex.match(self.text, self.pos)
        if found is None:
            raise _Unreadable
        self.pos = found.end()
        return found


def parse_dotenv(text: str) -> DotEnv:
    """Read the text of a ``.env`` file; never raises (see the module docs)."""
    reader = _Reader(text.removeprefix("\ufeff"))
    values: dict[str, str] = {}
    warnings: list[tuple[int, str]] = []
    notes: list[tuple[int, str]] = []
    while True:
        reader.match(_SPACE)
        if reader.pos >= len(reader.text):
            break
        start = reader.pos
        lineno = reader.line()
        try:
            binding = _binding(reader)
        except _Unreadable:
            reader.match(_SKIP_LINE)
            shown = reader.text[start : reader.pos].strip()
            warnings.append((lineno, f"cannot read {_show(shown)}: expected NAME=value; skipped"))
            continue
        if binding is None:  # a comment
            continue
        name, value = binding
        if not _NAME.fullmatch(name):
            warnings.append(
                (
                    lineno,
                    f"invalid variable name {name!r} (letters, digits and '_', not first a "
                    "digit); skipped",
                )
            )
            continue
        if value is None:  # a bare name
            values.pop(name, None)
            continue
        if _INTERPOLATION.search(value):
            notes.append(
                (
                    lineno,
                    f"{name}: {_INTERPOLATION.search(value)[0]} is kept as written, as honcho"  # type: ignore[index]
                    " and foreman do (python-dotenv would expand it)",
                )
            )
        values[name] = value
    return DotEnv(values, tuple(warnings), tuple(notes))


def _binding(reader: _Reader) -> tuple[str, str | None] | None:
    """One ``NAME=value`` (value None for a bare name); None for a comment.

    Raises `_Unreadable`.
    """
    export = _EXPORT.match(reader.text, reader.pos)  # not `exporter=x`
    if export is not None:
        reader.pos = export.end()
    char = reader.peek()
    if char == "#":
        reader.match(_SKIP_LINE)
        return None
    name = reader.match(_QUOTED_NAME)[1] if char == "'" else reader.match(_BARE_NAME)[0]
    reader.match(_BLANKS)
    value: str | None = None
    if reader.peek() == "=":
        reader.pos += 1
        blanks = reader.match(_BLANKS)[0]
        # `NAME= # comment` is empty; `NAME=#x` is "#x".
        value = "" if blanks and reader.peek() == "#" else _value(reader)
    reader.match(_COMMENT)
    reader.match(_EOL)
    return name, value


def _value(reader: _Reader) -> str:
    char = reader.peek()
    if char == "'":
        raw = reader.match(_SINGLE)[1]
        return _SINGLE_ESCAPES.sub(lambda m: m[1], raw)
    if char == '"':
        raw = reader.match(_DOUBLE)[1]
        return _DOUBLE_ESCAPES.sub(lambda m: _C_ESCAPES.get(m[1], m[1]), raw)
    if char in ("", "\n", "\r"):
        return ""
    raw = reader.match(_TO_EOL)[0]
    return re.sub(r"\s+#.*", "", raw).rstrip()


def _show(text: str, limit: int = 40) -> str:
    text = text.splitlines()[0] if text else text
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"
