"""Procfiles, and shell lines run as honcho and foreman run them.

A Procfile line is ``name: command``; the command is a shell line that
``/bin/sh -c`` runs, as honcho and foreman do, so ``--port=$PORT``,
``${PORT:-5000}``, ``cd src && gunicorn ...``, ``VAR=x celery ...`` and
``cmd >/dev/null 2>&1`` all work.

To keep the shell out of the way, `shell_argv` puts ``exec`` in front of the
last simple command of the line when that is safe: the program then replaces
the shell, so its exit status and the signal that ended it are its own and
no shell process sits between the supervisor and it.  Safe means: the line
is a list of simple commands joined by ``&&``, ``||`` or ``;`` (no pipe, no
``&``, no subshell, no command substitution, no multi-line script), and the
last one runs a program, not a builtin or keyword (``exec cd`` would fail).
Otherwise the line runs as written: the shell stays, signals still reach
every process of the group.
"""

from __future__ import annotations

import re

import attrs

__all__ = ["SHELL", "ProcfileEntry", "join_continuations", "parse_procfile", "shell_argv"]

SHELL = "/bin/sh"

# As honcho and foreman read a line (both ignore any other line; we warn).
_LINE = re.compile(r"([A-Za-z0-9_-]+):\s*(.*)")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
# Words that are no program of their own: `exec WORD` would fail or differ.
_NOT_PROGRAMS = frozenset(
    [
        "!",
        "{",
        "}",
        "(",
        ")",
        "[[",
        "]]",
        "if",
        "then",
        "else",
        "elif",
        "fi",
        "for",
        "while",
        "until",
        "do",
        "done",
        "case",
        "esac",
        "in",
        "function",
        "select",
        "time",
        "coproc",
        ".",
        ":",
        "source",
        "eval",
        "exec",
        "exit",
        "export",
        "readonly",
        "return",
        "set",
        "shift",
        "trap",
        "unset",
        "wait",
        "alias",
        "unalias",
        "read",
        "local",
        "ulimit",
        "umask",
        "getopts",
        "hash",
        "type",
        "command",
        "cd",
        "pushd",
        "popd",
        "fg",
        "bg",
        "jobs",
        "times",
        "break",
        "continue",
        "declare",
        "typeset",
        "let",
        "shopt",
        "builtin",
        "enable",
    ]
)
# Characters that make the line more than a list of simple commands.
_COMPLEX = frozenset("()`{}\n")


@attrs.frozen
class ProcfileEntry:
    """One ``name: command`` line."""

    line: int
    name: str
    command: str


def parse_procfile(text: str) -> tuple[list[ProcfileEntry], list[tuple[int, str]]]:
    """The entries of a Procfile and, as (line, message), the lines skipped.

    Blank lines and ``#`` comments are skipped silently; any other line that
    is not ``name: command`` is skipped with a warning.
    """
    entries: list[ProcfileEntry] = []
    warnings: list[tuple[int, str]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            name, sep, _ = line.partition(":")
            if sep and name.strip():
                why = f"invalid process name {name.strip()!r} (letters, digits, '_' and '-')"
            else:
                why = "expected 'name: command'"
            warnings.append((lineno, f"{why}, got {_show(line)}; skipped"))
            continue
        name, command = match.groups()
        if not command.strip() or command.lstrip().startswith("#"):
            warnings.append((lineno, f"process {name!r} has no command; skipped"))
            continue
        entries.append(ProcfileEntry(lineno, name, command.strip()))
    return entries, warnings


def join_continuations(text: str) -> str:
    """Remove backslash-newline pairs as a shell does (not inside single quotes)."""
    if "\\\n" not in text:
        return text
    out: list[str] = []
    quote = ""  # the quote we are in, if any
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and quote != "'":
            following = text[index + 1 : index + 2]
            if following == "\n":
                index += 2
                continue
            out.append(text[index : index + 2])
            index += 2
            continue
        if char in "'\"" and quote in ("", char):
            quote = "" if quote else char
        out.append(char)
        index += 1
    return "".join(out)


def shell_argv(command: str) -> tuple[str, ...]:
    """The argv that runs the shell line `command` (see the module docs)."""
    command = join_continuations(command)
    at = exec_position(command)
    if at is not None:
        command = f"{command[:at]}exec {command[at:]}"
    return (SHELL, "-c", command)


def exec_position(command: str) -> int | None:
    """Where ``exec `` can go in `command`, or None when it cannot safely."""
    segments = _segments(command)
    if segments is None:
        return None
    start, end = segments[-1]
    words = _words(command, start, end)
    for word_start, word in words:
        if _ASSIGNMENT.match(word):
            continue  # `VAR=x prog`: `VAR=x exec prog` exports VAR to prog
        if word in _NOT_PROGRAMS or _is_redirect(word):
            return None
        return word_start
    return None  # only assignments


def _is_redirect(word: str) -> bool:
    return re.match(r"\d*[<>]", word) is not None


def _segments(command: str) -> list[tuple[int, int]] | None:
    """The spans of the commands joined by ``&&``, ``||`` and ``;`` at the top
    level; None if the line holds a pipe, ``&`` or anything more complex."""
    spans: list[tuple[int, int]] = []
    start = 0
    index = 0
    length = len(command)
    at_word_start = True
    while index < length:
        char = command[index]
        if char == "\\":
            index += 2
            at_word_start = False
            continue
        if char == "'":
            close = command.find("'", index + 1)
            if close < 0:
                return None
            index = close + 1
            at_word_start = False
            continue
        if char == '"':
            index = _close_double(command, index)
            if index < 0:
                return None
            at_word_start = False
            continue
        if char == "$" and command[index + 1 : index + 2] == "(":
            return None
        if char in _COMPLEX:
            return None
        if char == "#" and at_word_start:
            break  # a comment runs to the end of the line
        if command.startswith(("&&", "||"), index):
            spans.append((start, index))
            index += 2
            start = index
            at_word_start = True
            continue
        if char == "&" and command[index - 1 : index] in ("<", ">"):
            index += 1  # `2>&1`, `<&3`
            at_word_start = False
            continue
        if char == "|" and command[index - 1 : index] == ">":
            index += 1  # `>|` (clobber)
            continue
        if char in "&|":
            return None  # background job or pipeline: the shell stays
        if char == ";":
            spans.append((start, index))
            index += 1
            start = index
            at_word_start = True
            continue
        at_word_start = char.isspace()
        index += 1
    spans.append((start, min(index, length)))
    if not command[spans[-1][0] : spans[-1][1]].strip():
        return None  # `a;` or `a &&`: nothing to exec
    return spans


def _close_double(command: str, index: int) -> int:
    """The index after the double-quoted string opened at `index`; -1 if unclosed or
    holding a command substitution."""
    index += 1
    while index < len(command):
        char = command[index]
        if char == "\\":
            index += 2
            continue
        if char == '"':
            return index + 1
        if char == "`" or command.startswith("$(", index):
            return -1
        index += 1
    return -1


def _words(command: str, start: int, end: int) -> list[tuple[int, str]]:
    """The raw words of ``command[start:end]`` with their offsets (quotes kept)."""
    words: list[tuple[int, str]] = []
    index = start
    while index < end:
        if command[index].isspace():
            index += 1
            continue
        if command[index] == "#":
            break
        word_start = index
        while index < end and not command[index].isspace():
            char = command[index]
            if char == "\\":
                index += 2
            elif char == "'":
                index = command.find("'", index + 1) + 1
            elif char == '"':
                index = _close_double(command, index)
            else:
                index += 1
        words.append((word_start, command[word_start:index]))
    return words


def _show(text: str, limit: int = 60) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"
