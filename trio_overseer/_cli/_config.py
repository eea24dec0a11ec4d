"""Config files of the ``trio-overseer`` command-line tool.

Pure parsing: this module turns a config file into a list of `ProcSpec`
objects and never starts anything.  Three formats are understood:

* YAML (``overseer.yml``), compatible with the Go tool ShinyTrinkets/overseer::

      web:
        cmd: python3 -m http.server 8000   # split like a shell would
        cwd: ./public                      # relative to this file
        env: [GREETING=hi]                 # added to the inherited environment
        delay: 500                         # milliseconds before the first start
        retry: 3                           # restarts after a failure ("forever": no limit)
        restart: on-failure                # or always, never
        success_codes: [0]                 # the exit codes that count as success
        reset_after: 60                    # seconds up after which the restart count resets
        ready_port: $PORT                  # ready once it accepts connections (or ready_line,
                                           # ready_url, ready_path; ready_timeout: 30)
        requires: [db]                     # start once db is ready, stop before it
        restart_with: [db]                 # and run again when db does
        group: frontend
        stop_signal: SIGINT
        stop_timeout: 5                    # seconds before escalating to SIGKILL
        # or a ladder (instead of stop_signal and stop_timeout): each signal
        # and its wait, then SIGKILL:
        # stop_signals: [[SIGINT, 5], [SIGTERM, 5]]
        pty: true                          # stdout and stderr on a terminal (merged)

* TOML (``overseer.toml``), the same keys under ``[procs.ID]`` tables.
* Procfile (``name: command`` lines, as honcho and foreman read them): each
  command is a shell line, run by ``/bin/sh -c`` (see `_procfile`).

The environment files (``.env``), ``PORT`` and concurrency are the project's
business (`_project`): this module reads one file.

Every problem found in a file is collected in one pass and reported together
in a single `ConfigError`, so that a user fixes a config in one round trip
instead of one error at a time.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
import reprlib
import shlex
import signal
import tomllib
from collections.abc import Callable, Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .._requires import cycle as requirement_cycle
from .._signals import Ladder, parse_ladder, parse_signal, signal_name
from ._procfile import join_continuations, parse_procfile, shell_argv

__all__ = [
    "CONFIG_FILE_NAMES",
    "ConfigError",
    "ProcSpec",
    "describe",
    "find_config",
    "load_config",
    "read_config",
]

logger = logging.getLogger(__name__)

#: File names `find_config` looks for, in order of preference.  The generic
#: ``config.yml`` counts only if it reads as a procs file (`_is_procs_file`).
CONFIG_FILE_NAMES: tuple[str, ...] = (
    "overseer.yml",
    "overseer.yaml",
    "overseer.toml",
    "Procfile",
    "config.yml",
)
_GENERIC_NAMES = frozenset({"config.yml"})

#: Keys allowed in a proc's settings (YAML and TOML).
_FIELDS: tuple[str, ...] = (
    "cmd",
    "cwd",
    "env",
    "delay",
    "retry",
    "restart",
    "success_codes",
    "reset_after",
    "requires",
    "restart_with",
    "ready_line",
    "ready_port",
    "ready_url",
    "ready_path",
    "ready_timeout",
    "group",
    "stop_signal",
    "stop_timeout",
    "stop_signals",
    "shell",
    "scale",
    "pty",
)

_Format = Literal["yaml", "toml", "procfile"]

# Procfile line, as honcho reads them (to guess a format).
_PROCFILE_LINE = re.compile(r"([A-Za-z0-9_-]+):\s*(.*)")
# tomllib's wording for a table declared twice, used to name the proc.
_TOML_DUPLICATE = re.compile(r"Cannot declare \('procs', '([^']*)'\) twice")
# tomllib's position suffix, moved to the front of our messages.
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column \d+\)$")
# Hostile files: nesting deeper than this, or aliases expanding to more
# values than this, are refused before anything walks the values (a few
# nested aliases describe billions of them; the parsers recurse per level).
_MAX_DEPTH = 64
_MAX_VALUES = 100_000
_MAX_DIGITS = 100  # in a number
_MAX_BITS = 333  # ... about as many bits
_MAX_SCALE = 1000  # instances of one proc (as -c/--concurrency allows)


class ConfigError(ValueError):
    """A config file could not be found, read or understood.

    ``problems`` holds every problem found, each naming the file and, where
    relevant, the proc and field; ``str()`` lists them one per line.
    """

    problems: list[str]

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if not self.problems:
            raise ValueError("ConfigError needs at least one problem")
        super().__init__("\n".join(self.problems))

    def __reduce__(self) -> tuple[type[ConfigError], tuple[list[str]]]:
        """Keep ``problems`` intact across pickling (e.g. to a worker process)."""
        return (type(self), (self.problems,))


@attrs.frozen
class ProcSpec:
    """One process to supervise, as described by a config file.

    ``env`` only holds the variables the config adds on top of the inherited
    environment (with a project: the env files, ``PORT``, then the proc's
    own).  ``delay`` is in seconds (config files give milliseconds).
    ``retry`` is ``math.inf`` for ``retry: forever``.
    ``stop_timeout`` and ``reset_after`` are None when the config leaves them
    to the supervisor.  ``stop_signals`` is a stop ladder, or None; given, it
    sets ``stop_signal`` and ``stop_timeout`` to its first signal and total time.
    ``pty``: stdout and stderr on a pseudo-terminal.
    ``requires`` and ``restart_with`` name procs of the file (types); the
    project turns them into the ids of their instances.  ``ready_port`` is a
    port number, or ``"$PORT"``: the proc's own ``PORT``.
    ``script`` is the shell line as written when ``argv`` runs it with
    ``/bin/sh -c``.  ``type`` and ``instance`` name the proc an instance comes
    from (``web.2``: ``web`` and 2; 0 when not scaled); the project sets them.
    """

    id: str
    argv: tuple[str, ...]
    cwd: str | None = None
    env: dict[str, str] = attrs.field(factory=dict, hash=False)
    delay: float = 0.0
    retry: float = 0
    restart: str = "on-failure"
    success_codes: tuple[int, ...] = (0,)
    reset_after: float | None = None
    requires: tuple[str, ...] = ()
    restart_with: tuple[str, ...] = ()
    ready_line: str | None = None
    ready_port: int | str | None = None
    ready_url: str | None = None
    ready_path: str | None = None
    ready_timeout: float | None = None
    group: str = ""
    stop_signal: int = int(signal.SIGTERM)
    stop_timeout: float | None = None
    stop_signals: tuple[tuple[int, float], ...] | None = None
    source: str = ""
    script: str | None = None
    scale: int = 1
    type: str = ""
    instance: int = 0
    pty: bool = False


# --------------------------------------------------------------------------
# Public entry points


def find_config(directory: Path) -> Path:
    """Return the config file to use in ``directory``.

    Looks for the names in `CONFIG_FILE_NAMES`, in that order, so that an
    explicit ``overseer.yml`` wins over a Procfile kept for other tools, and
    a Procfile over an application's own ``config.yml``: that generic name
    counts only when the file reads as procs (every entry has a ``cmd``).
    """
    skipped: list[str] = []
    for name in CONFIG_FILE_NAMES:
        candidate = directory / name
        if not candidate.is_file():
            continue
        if name in _GENERIC_NAMES and not _is_procs_file(candidate):
            skipped.append(name)
            continue
        logger.debug("using config file %s", candidate)
        return candidate
    why = f"; {', '.join(skipped)} is not a procs file (no entry with a 'cmd')" if skipped else ""
    raise ConfigError(
        f"{directory}: no config file found (looked for {', '.join(CONFIG_FILE_NAMES)}){why}"
    )


def _is_procs_file(path: Path) -> bool:
    """Whether a generic YAML file reads as procs: a mapping of mappings with ``cmd``."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
        return False
    return (
        isinstance(data, dict)
        and bool(data)
        and all(isinstance(value, dict) and "cmd" in value for value in data.values())
    )


def load_config(path: Path) -> list[ProcSpec]:
    """Parse the config file at ``path`` into proc specs, in file order.

    The format is chosen by file name (``.yml``/``.yaml``, ``.toml``,
    ``Procfile``/``Procfile.*``), otherwise guessed from the content.
    Raises `ConfigError` listing every problem found; warnings (lines
    skipped) are dropped: `read_config` returns them.
    """
    return read_config(path)[0]


def read_config(path: Path) -> tuple[list[ProcSpec], list[str]]:
    """Like `load_config`, also returning the warnings, each naming file and line."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read config file: {_os_error(exc)}") from None

    fmt = _detect_format(path, text)
    logger.debug("reading %s as %s", source, fmt)
    problems = _Problems(source)
    if fmt == "procfile":
        specs = _parse_procfile(path, text, problems)
    else:
        raw = _read_yaml(text, problems) if fmt == "yaml" else _read_toml(text, problems)
        specs = _build_specs(path, raw, problems) if raw is not None else []
    if not problems and not specs:
        problems.add("no procs defined")
    problems.raise_if_any()
    logger.debug("loaded %d procs from %s", len(specs), source)
    return specs, problems.warnings


def describe(spec: ProcSpec, *, hide: Mapping[str, str] | None = None) -> str:
    """Render ``spec`` on one line for humans, e.g. for ``trio-overseer check``.

    The command is quoted so it could be pasted into a shell; settings that
    differ from the defaults follow in brackets.  Variables of ``hide`` (the
    env files, shown once) are left out, and so is ``PORT`` unless the
    command mentions it.
    """
    extras: list[str] = []
    hide = hide or {}
    text = spec.script if spec.script is not None else " ".join(spec.argv)
    env = {
        name: value
        for name, value in spec.env.items()
        if hide.get(name) != value and (name != "PORT" or "PORT" in text)
    }
    if spec.scale != 1:
        extras.append(f"scale={spec.scale}")
    if spec.cwd is not None:
        extras.append(f"cwd={_quote(spec.cwd)}")
    if env:
        extras.append("env=" + " ".join(f"{k}={_quote(v)}" for k, v in env.items()))
    if spec.delay:
        extras.append(f"delay={spec.delay:g}s")
    if spec.retry:
        extras.append(f"retry={'forever' if math.isinf(spec.retry) else spec.retry}")
    if spec.restart != "on-failure":
        extras.append(f"restart={spec.restart}")
    if spec.success_codes != (0,):
        extras.append(f"success_codes={','.join(map(str, spec.success_codes))}")
    if spec.reset_after is not None:
        extras.append(f"reset_after={spec.reset_after:g}s")
    if spec.group:
        extras.append(f"group={_quote(spec.group)}")
    if spec.stop_signals is not None:
        steps = ",".join(f"{signal_name(sig)}:{seconds:g}s" for sig, seconds in spec.stop_signals)
        extras.append(f"stop_signals={steps}")
    else:
        if spec.stop_signal != signal.SIGTERM:
            extras.append(f"stop_signal={signal_name(spec.stop_signal)}")
        if spec.stop_timeout is not None:
            extras.append(f"stop_timeout={spec.stop_timeout:g}s")
    if spec.pty:
        extras.append("pty")
    if spec.requires:
        extras.append(f"requires={','.join(spec.requires)}")
    if spec.restart_with:
        extras.append(f"restart_with={','.join(spec.restart_with)}")
    for name in ("ready_line", "ready_port", "ready_url", "ready_path"):
        if (value := getattr(spec, name)) is not None:
            extras.append(f"{name}={_quote(str(value))}")
    if spec.ready_timeout is not None:
        extras.append(f"ready_timeout={spec.ready_timeout:g}s")
    if spec.script is not None:
        command = (
            f"sh -c: {spec.script}" if spec.script.isprintable() else f"sh -c {_quote(spec.script)}"
        )
    else:
        command = " ".join(_quote(arg) for arg in spec.argv)
    return f"{command}  [{'; '.join(extras)}]" if extras else command


# --------------------------------------------------------------------------
# Problem collection


class _Problems:
    """Accumulates problems for one file, each prefixed with where it is."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.messages: list[str] = []
        self.warnings: list[str] = []  # lines skipped: the rest of the file applies

    def __bool__(self) -> bool:
        return bool(self.messages)

    def add(
        self,
        message: str,
        *,
        proc: str | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        """Record ``message`` located at the given line / proc / field."""
        parts = [self.source]
        if line is not None:
            parts.append(f"line {line}")
        if proc is not None:
            parts.append(f"proc {_show(proc, 80)}")
        if field is not None:
            parts.append(f"field {_show(field, 80)}")
        parts.append(message)
        self.messages.append(": ".join(parts))

    def warn(self, message: str, *, line: int | None = None) -> None:
        """Record a warning at ``line``: something skipped, nothing refused."""
        where = f"{self.source}: line {line}" if line is not None else self.source
        self.warnings.append(f"{where}: {message}")

    def raise_if_any(self) -> None:
        """Raise one `ConfigError` holding everything collected so far (the
        warnings last: a line skipped may be why nothing is left)."""
        if self.messages:
            raise ConfigError(self.messages + [f"warning: {w}" for w in self.warnings])


class _Invalid(Exception):
    """Internal: a single field value is wrong; the message says why."""


# --------------------------------------------------------------------------
# Format detection


def _detect_format(path: Path, text: str) -> _Format:
    """Pick the format from the file name, or failing that, the content."""
    suffix = path.suffix.lower()
    if suffix in (".yml", ".yaml"):
        return "yaml"
    if suffix == ".toml":
        return "toml"
    name = path.name.lower()
    if name == "procfile" or name.startswith("procfile."):
        return "procfile"
    return _sniff_format(text)


def _sniff_format(text: str) -> _Format:
    """Guess the format of a file with an unhelpful name.

    TOML if it parses as TOML with a ``procs`` table; Procfile if every
    meaningful line is an unindented ``name: command``; YAML otherwise
    (which also gives the most useful syntax errors).
    """
    try:
        if isinstance(tomllib.loads(text).get("procs"), dict):
            return "toml"
    except (tomllib.TOMLDecodeError, ValueError):
        pass
    except RecursionError:  # deep nesting: only TOML's [table] header starts that way
        return "toml" if text.lstrip().startswith("[") else "yaml"
    lines = [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    if lines and all(_looks_like_procfile_line(line) for line in lines):
        return "procfile"
    return "yaml"


def _looks_like_procfile_line(line: str) -> bool:
    """True for ``name: command`` that is not also a nested YAML mapping."""
    match = _PROCFILE_LINE.fullmatch(line.rstrip())
    return match is not None and match.group(2)[:1] not in ("", "{", "[", "|", ">", "&", "*")


# --------------------------------------------------------------------------
# YAML


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that notes duplicate mapping keys instead of letting the
    last one silently win (PyYAML's default), so they can be reported.

    Duplicates are recorded rather than raised so that all of them, and all
    other problems, are reported in one go.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        #: (mapping node, duplicate key, its line, line of the first occurrence)
        self.duplicates: list[tuple[MappingNode, Hashable, int, int]] = []
        self._depth = 0
        #: id(node) -> how many values it holds once its aliases are expanded
        self._values: dict[int, int] = {}

    def construct_yaml_int(self, node: ScalarNode) -> int:
        """An integer, unless it is too long to be a setting (Python refuses
        to read more than 4300 digits, and reading fewer is already slow)."""
        digits = sum(c.isdigit() for c in node.value)
        if digits > _MAX_DIGITS:
            raise ConstructorError(
                None, None, f"a number of {digits} digits is too long", node.start_mark
            )
        return super().construct_yaml_int(node)

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        """Compose as usual, refusing nesting beyond `_MAX_DEPTH` and aliases
        that expand to more than `_MAX_VALUES` values."""
        if self._depth >= _MAX_DEPTH:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise ComposerError(None, None, f"nested more than {_MAX_DEPTH} levels deep", mark)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is None:
            return None
        values = self._values.get(id(node))
        if values is None:  # a new node (an alias gives one already counted)
            if isinstance(node, MappingNode):
                children = [child for pair in node.value for child in pair]
            elif isinstance(node, SequenceNode):
                children = node.value
            else:
                children = []
            values = 1 + sum(self._values.get(id(child), 1) for child in children)
            self._values[id(node)] = values
            if values > _MAX_VALUES:
                raise ComposerError(
                    None,
                    None,
                    f"aliases expand to more than {_MAX_VALUES:,} values here; "
                    "write the values out or use fewer nested aliases",
                    node.start_mark,
                )
        return node

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        """Construct the mapping, recording any key given more than once."""
        seen: dict[Hashable, int] = {}
        # Look at the explicit keys only: keys brought in by a `<<` merge
        # are meant to be overridden.
        for key_node, _value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # SafeConstructor reports unhashable keys itself.
            line = key_node.start_mark.line + 1
            if key in seen:
                self.duplicates.append((node, key, line, seen[key]))
            else:
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _UniqueKeyLoader.construct_yaml_int)


def _read_yaml(text: str, problems: _Problems) -> Mapping[Any, Any] | None:
    """Load YAML text, reporting syntax errors and duplicate keys.

    Returns the top-level mapping, or None when there is nothing usable.
    """
    try:
        loader = _UniqueKeyLoader(text)  # reads the whole text: may raise ReaderError
    except yaml.reader.ReaderError as exc:
        problems.add(_yaml_reader_message(exc), line=text.count("\n", 0, exc.position) + 1)
        return None
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        problems.add(_yaml_error_message(exc), line=_yaml_error_line(exc))
        return None
    except yaml.YAMLError as exc:
        problems.add(f"invalid YAML: {_show(str(exc), 200)}")
        return None
    finally:
        loader.dispose()

    if data is None:
        problems.add("file is empty (no procs defined)")
        return None
    if not isinstance(data, dict):
        problems.add(f"top level must be a mapping of proc id to settings, got {_type_name(data)}")
        return None
    assert root is not None
    for node, key, line, first_line in loader.duplicates:
        proc, field = _locate_yaml_mapping(root, node)
        if node is root:
            problems.add(
                f"duplicate proc id (first defined on line {first_line})", proc=str(key), line=line
            )
        elif proc is not None and field is None:
            problems.add(
                f"duplicate field (first given on line {first_line})",
                proc=proc,
                field=str(key),
                line=line,
            )
        else:
            problems.add(
                f"duplicate key {key!r} (first given on line {first_line})",
                proc=proc,
                field=field,
                line=line,
            )
    return data


def _locate_yaml_mapping(root: Node, node: MappingNode) -> tuple[str | None, str | None]:
    """Name the proc (and field) whose value is the mapping ``node``."""
    if not isinstance(root, MappingNode) or node is root:
        return None, None
    for proc_key, proc_value in root.value:
        proc = _scalar_text(proc_key)
        if proc_value is node:
            return proc, None
        if isinstance(proc_value, MappingNode):
            for field_key, field_value in proc_value.value:
                if _contains(field_value, node):
                    return proc, _scalar_text(field_key)
    return None, None


def _contains(tree: Node, node: Node) -> bool:
    """True if ``node`` is ``tree`` or nested anywhere inside it."""
    stack = [tree]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if current is node:
            return True
        if id(current) in seen:  # aliases can make the tree a graph
            continue
        seen.add(id(current))
        if isinstance(current, MappingNode):
            for key, value in current.value:
                stack.extend((key, value))
        elif not isinstance(current, ScalarNode):
            stack.extend(current.value)
    return False


def _scalar_text(node: Node) -> str | None:
    """The text of a scalar node, None for collections."""
    return str(node.value) if isinstance(node, ScalarNode) else None


def _yaml_error_message(exc: yaml.MarkedYAMLError) -> str:
    """A one-line rendering of a PyYAML syntax error."""
    parts = [p for p in (exc.context, exc.problem) if p]
    return "invalid YAML: " + (", ".join(parts) if parts else "syntax error")


def _yaml_reader_message(exc: yaml.reader.ReaderError) -> str:
    """A raw character YAML does not allow, e.g. ESC pasted from a coloured terminal."""
    code = exc.character if isinstance(exc.character, int) else ord(exc.character)
    if exc.encoding != "unicode":  # bytes input: a byte that is not in the encoding
        return f"invalid YAML: byte {code:#04x} is not {exc.encoding} text"
    return (
        f"invalid YAML: control character U+{code:04X} is not allowed as is; "
        f'inside double quotes write it as "\\x{code:02x}"'
        if code < 0x100
        else f"invalid YAML: character U+{code:04X} is not allowed as is; "
        f'inside double quotes write it as "\\u{code:04x}"'
    )


def _yaml_error_line(exc: yaml.MarkedYAMLError) -> int | None:
    """The 1-based line a PyYAML error points at, if any."""
    mark = exc.problem_mark or exc.context_mark
    return mark.line + 1 if mark is not None else None


# --------------------------------------------------------------------------
# TOML


def _read_toml(text: str, problems: _Problems) -> Mapping[Any, Any] | None:
    """Load TOML text and return its ``procs`` table, or None on problems."""
    try:
        data = tomllib.loads(text)
    except RecursionError:  # tomllib recurses per level of arrays and inline tables
        problems.add("invalid TOML: arrays or inline tables nested too deeply")
        return None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        position = _TOML_POSITION.search(message)
        line = int(position.group(1)) if position is not None else None
        if position is not None:
            message = message[: position.start()]
        duplicate = _TOML_DUPLICATE.search(message)
        if duplicate is not None:
            problems.add("duplicate proc id", proc=duplicate.group(1), line=line)
        else:
            problems.add(f"invalid TOML: {message}", line=line)
        return None
    except ValueError as exc:  # int() of a number of more than 4300 digits
        problems.add(f"invalid TOML: a number is too long ({_show(str(exc), 80)})")
        return None

    if not data:
        problems.add("file is empty (no procs defined)")
        return None
    for key in data:
        if key != "procs":
            problems.add(f"unknown top-level key {key!r} (procs go in [procs.ID] tables)")
    procs = data.get("procs")
    if procs is None:
        if not problems:
            problems.add("no [procs.ID] tables found")
        return None
    if not isinstance(procs, dict):
        problems.add(f"'procs' must be a table of proc tables, got {_type_name(procs)}")
        return None
    return procs


# --------------------------------------------------------------------------
# YAML and TOML settings


def _build_specs(path: Path, raw: Mapping[Any, Any], problems: _Problems) -> list[ProcSpec]:
    """Validate each ``id: {settings}`` entry and build its `ProcSpec`."""
    specs: list[ProcSpec] = []
    named: list[str] = []  # every proc id of the file, also of procs with problems
    for raw_id, settings in raw.items():
        if isinstance(raw_id, str) and raw_id:
            proc_id = raw_id
        elif isinstance(raw_id, int) and not isinstance(raw_id, bool) and raw_id.bit_length() < 64:
            proc_id = str(raw_id)  # as the Go tool reads `123:` keys
        else:
            problems.add(f"proc id must be a non-empty string, got {_show(raw_id)}")
            continue
        if not proc_id.isprintable():
            problems.add(
                "proc id must be printable: no newlines, tabs, escape sequences or other "
                f"control characters, got {_show(proc_id)}"
            )
            continue
        named.append(proc_id)
        spec = _build_spec(path, proc_id, settings, problems)
        if spec is not None:
            specs.append(spec)
    _check_requires(specs, named, problems)
    return specs


def _check_requires(specs: list[ProcSpec], named: list[str], problems: _Problems) -> None:
    """Each proc `requires` procs of this file (`named`), and no cycle."""
    known = ", ".join(named)
    for spec in specs:
        for required in spec.requires:
            if required not in named:
                problems.add(
                    f"no proc {required!r} in this file (known: {known})",
                    proc=spec.id,
                    field="requires",
                )
    found = requirement_cycle({spec.id: spec.requires for spec in specs})
    if found is not None:
        problems.add(
            "the requirements form a cycle: "
            + " -> ".join(map(repr, found))
            + " (each would wait for the other to be ready first)",
            proc=found[0],
            field="requires",
        )


def _build_spec(path: Path, proc_id: str, settings: object, problems: _Problems) -> ProcSpec | None:
    """Validate one proc's settings; None if any of them is wrong."""
    if settings is None:
        problems.add("no settings given (at least 'cmd' is needed)", proc=proc_id)
        return None
    if not isinstance(settings, dict):
        problems.add(
            f"expected a mapping of settings, got {_type_name(settings)} {_show(settings)}",
            proc=proc_id,
        )
        return None

    before = len(problems.messages)
    for key in settings:
        if key not in _FIELDS:
            problems.add(_unknown_field_message(key), proc=proc_id, field=_id_text(key))

    def check(field: str, parse: Callable[[Any], Any], default: Any) -> Any:
        value = settings.get(field)
        if value is None:
            return default
        if isinstance(value, int) and value.bit_length() > _MAX_BITS:  # TOML reads any length
            problems.add(f"a number of more than {_MAX_DIGITS} digits", proc=proc_id, field=field)
            return default
        try:
            return parse(value)
        except _Invalid as exc:
            problems.add(str(exc), proc=proc_id, field=field)
            return default

    if settings.get("cmd") is None:
        problems.add("missing (the command to run is required)", proc=proc_id, field="cmd")
    shell: bool = check("shell", _parse_shell, False)
    script: str | None = None
    if shell and isinstance(settings.get("cmd"), str):
        script = settings["cmd"].strip()
        if not script:
            problems.add("must not be empty", proc=proc_id, field="cmd")
        elif "\0" in script:
            problems.add(
                "the shell line contains a NUL byte (\\0), which a process cannot be given",
                proc=proc_id,
                field="cmd",
            )
        argv: tuple[str, ...] = shell_argv(script)
    elif shell and settings.get("cmd") is not None:
        problems.add(
            f"with 'shell: true', expected the shell line as a string, got"
            f" {_type_name(settings['cmd'])} {_show(settings['cmd'])}",
            proc=proc_id,
            field="cmd",
        )
        argv = ()
    else:
        argv = check("cmd", _parse_cmd, ())
    scale: int = check("scale", _parse_scale, 1)
    cwd: str | None = check("cwd", lambda v: _parse_cwd(v, path), None)
    env: dict[str, str] = check("env", _parse_env, {})
    delay: float = check("delay", _parse_delay, 0.0)
    retry: float = check("retry", _parse_retry, 0)
    restart: str = check("restart", _parse_restart, "on-failure")
    success_codes: tuple[int, ...] = check("success_codes", _parse_success_codes, (0,))
    reset_after: float | None = check("reset_after", _parse_reset_after, None)
    requires: tuple[str, ...] = check("requires", _parse_ids, ())
    restart_with: tuple[str, ...] = check("restart_with", _parse_ids, ())
    ready_line: str | None = check("ready_line", _parse_ready_line, None)
    ready_port: int | str | None = check("ready_port", _parse_ready_port, None)
    ready_url: str | None = check("ready_url", _parse_ready_url, None)
    ready_path: str | None = check("ready_path", _parse_ready_path, None)
    ready_timeout: float | None = check("ready_timeout", _parse_ready_timeout, None)
    if not set(restart_with) <= set(requires):
        extra = ", ".join(repr(id) for id in restart_with if id not in requires)
        problems.add(
            f"names {extra}, which 'requires' does not: restart_with must be some of "
            "the procs of requires",
            proc=proc_id,
            field="restart_with",
        )
    group: str = check("group", _parse_group, "")
    stop_signal: int = check("stop_signal", _parse_signal, int(signal.SIGTERM))
    stop_timeout: float | None = check("stop_timeout", _parse_stop_timeout, None)
    stop_signals: Ladder | None = check("stop_signals", _parse_stop_signals, None)
    if stop_signals is not None:
        both = [key for key in ("stop_signal", "stop_timeout") if settings.get(key) is not None]
        if both:
            problems.add(
                f"give either a ladder or {' and '.join(both)}, not both (stop_signals "
                "holds each signal and its wait)",
                proc=proc_id,
                field="stop_signals",
            )
        stop_signal = stop_signals[0][0]
        stop_timeout = sum(seconds for _, seconds in stop_signals)
    pty: bool = check("pty", _parse_pty, False)
    if len(problems.messages) != before:
        return None
    return ProcSpec(
        id=proc_id,
        argv=argv,
        cwd=cwd,
        env=env,
        delay=delay,
        retry=retry,
        restart=restart,
        success_codes=success_codes,
        reset_after=reset_after,
        requires=requires,
        restart_with=restart_with,
        ready_line=ready_line,
        ready_port=ready_port,
        ready_url=ready_url,
        ready_path=ready_path,
        ready_timeout=ready_timeout,
        group=group,
        stop_signal=stop_signal,
        stop_timeout=stop_timeout,
        stop_signals=stop_signals,
        pty=pty,
        source=str(path),
        script=script,
        scale=scale,
    )


def _unknown_field_message(key: object) -> str:
    """Say a key is unknown, suggesting the closest known one."""
    close = difflib.get_close_matches(key, _FIELDS, n=1) if isinstance(key, str) else []
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown field ({hint}known fields: {', '.join(_FIELDS)})"


def _parse_cmd(value: object) -> tuple[str, ...]:
    """A command given as a shell-like string or a list of strings."""
    if isinstance(value, str):
        argv = _split_command(join_continuations(value))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise _Invalid(
                    f"item {index}: expected a string, got {_type_name(item)} {_show(item)}"
                    " (quote it)"
                )
        argv = list(value)
    else:
        raise _Invalid(
            f"expected a command string or a list of strings, got {_type_name(value)}"
            f" {_show(value)}"
        )
    if not argv or not argv[0]:
        raise _Invalid("must not be empty")
    for index, arg in enumerate(argv):
        _no_nul(arg, f"item {index}" if isinstance(value, list) else "the command")
    return tuple(argv)


def _split_command(command: str, *, comments: bool = False) -> list[str]:
    """Split ``command`` like a POSIX shell would, without running one."""
    try:
        return shlex.split(command, comments=comments)
    except ValueError as exc:  # shlex says "No closing quotation" / "No escaped character"
        raise _Invalid(f"cannot split command ({str(exc).lower()}): {_show(command)}") from None


def _parse_cwd(value: object, config_path: Path) -> str | None:
    """A working directory; relative ones are relative to the config file."""
    if not isinstance(value, str):
        raise _Invalid(f"expected a directory path, got {_type_name(value)} {_show(value)}")
    if not value:
        return None  # as the Go tool: empty means "inherit"
    return _resolve_dir(config_path, _no_nul(value, "the path"))


def _resolve_dir(config_path: Path, directory: str) -> str:
    """Resolve ``directory`` (``~`` allowed) against the config file's directory."""
    expanded = Path(directory).expanduser()
    return os.path.abspath(config_path.parent / expanded)


def _parse_env(value: object) -> dict[str, str]:
    """Extra environment, as ``["K=V", ...]`` (the Go tool's form) or a mapping."""
    env: dict[str, str] = {}
    errors: list[str] = []
    if isinstance(value, list):
        for index, item in enumerate(value):
            if not isinstance(item, str):
                errors.append(f"item {index}: expected a 'NAME=value' string, got {_show(item)}")
                continue
            name, sep, text = item.partition("=")
            if not sep or not name:
                errors.append(f"item {index}: expected 'NAME=value', got {_show(item)}")
            elif "\0" in item:
                errors.append(f"item {index}: contains a NUL byte (\\0), got {_show(item)}")
            else:
                env[name] = text
    elif isinstance(value, dict):
        for name, item in value.items():
            if not isinstance(name, str) or not name or "=" in name:
                errors.append(f"invalid variable name {_show(name)}")
            elif "\0" in name:
                errors.append(f"invalid variable name {_show(name)}: contains a NUL byte (\\0)")
            elif (
                isinstance(item, bool)
                or not isinstance(item, str | int | float)
                or (isinstance(item, int) and item.bit_length() > 600)
            ):
                errors.append(
                    f"variable {_show(name)}: expected a string, got {_type_name(item)}"
                    f" {_show(item)}" + (" (quote it)" if isinstance(item, bool) else "")
                )
            elif "\0" in str(item):
                errors.append(f"variable {_show(name)}: contains a NUL byte (\\0)")
            else:
                env[name] = str(item)
    else:
        raise _Invalid(
            f"expected a list of 'NAME=value' strings or a mapping, got {_type_name(value)}"
            f" {_show(value)}"
        )
    if errors:
        raise _Invalid("; ".join(errors))
    return env


def _parse_delay(value: object) -> float:
    """Start delay given in milliseconds, returned in seconds."""
    return _non_negative_number(value, "a non-negative number of milliseconds") / 1000


def _parse_stop_timeout(value: object) -> float:
    """Grace period in seconds between the stop signal and SIGKILL."""
    return _non_negative_number(value, "a non-negative number of seconds")


def _non_negative_number(value: object, expected: str) -> float:
    """A finite int or float >= 0 (booleans are not numbers here)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, int) and value.bit_length() > _MAX_BITS)  # float() overflows
        or not math.isfinite(value)
        or value < 0
    ):
        raise _Invalid(f"expected {expected}, got {_show(value)}")
    return float(value)


def _parse_retry(value: object) -> float:
    """How many times to restart a proc: a count, or ``forever`` (math.inf)."""
    if value == "forever" or (isinstance(value, float) and value == math.inf):
        return math.inf
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Invalid(
            f"expected a non-negative integer, or 'forever' for no limit, got {_show(value)}"
        )
    return value


_RESTART_POLICIES = ("on-failure", "always", "never")


def _parse_restart(value: object) -> str:
    """Which ended runs are restarted."""
    if value not in _RESTART_POLICIES:
        # YAML 1.1 reads a bare `never`... as a string, but `no`/`off` as false.
        raise _Invalid(f"expected one of {', '.join(_RESTART_POLICIES)}, got {_show(value)}")
    assert isinstance(value, str)
    return value


def _parse_success_codes(value: object) -> tuple[int, ...]:
    """The exit codes that count as success: a list (or a single code)."""
    codes = value if isinstance(value, list) else [value]
    for code in codes:
        if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 255:
            raise _Invalid(
                f"expected a list of exit codes from 0 to 255, e.g. [0, 2], got {_show(value)}"
            )
    if not codes:
        raise _Invalid("expected at least one exit code, e.g. [0]")
    return tuple(codes)


def _parse_ids(value: object) -> tuple[str, ...]:
    """Proc ids: a list of strings (or a single one)."""
    ids = value if isinstance(value, list) else [value]
    for id in ids:
        if isinstance(id, int) and not isinstance(id, bool):
            id = str(id)  # as proc ids given as numbers (`123:`)
        if not isinstance(id, str) or not id:
            raise _Invalid(f"expected a list of proc ids, e.g. [db, cache], got {_show(value)}")
    return tuple(dict.fromkeys(str(id) for id in ids))


def _parse_ready_line(value: object) -> str:
    """A regular expression a line of output matches once the proc is ready."""
    if not isinstance(value, str) or not value:
        raise _Invalid(f"expected a regular expression, got {_show(value)}")
    try:
        re.compile(value)
    except re.error as exc:
        raise _Invalid(f"not a regular expression: {exc}") from None
    return value


def _parse_ready_port(value: object) -> int | str:
    """A TCP port on 127.0.0.1 that accepts connections once ready; ``$PORT``: the proc's."""
    if value in ("$PORT", "${PORT}"):
        return "$PORT"
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise _Invalid(f"expected a port number (1 to 65535) or '$PORT', got {_show(value)}")
    return value


def _parse_ready_url(value: object) -> str:
    """An http:// or https:// URL answering below 500 once ready."""
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise _Invalid(f"expected an http:// or https:// URL, got {_show(value)}")
    return value


def _parse_ready_path(value: object) -> str:
    """A path (relative to the proc's cwd) that exists once ready."""
    if not isinstance(value, str) or not value:
        raise _Invalid(f"expected a path, got {_show(value)}")
    return _no_nul(value, "the path")


def _parse_ready_timeout(value: object) -> float:
    """Seconds to wait for readiness."""
    seconds = _non_negative_number(value, "a number of seconds > 0")
    if not seconds > 0:
        raise _Invalid(f"expected a number of seconds > 0, got {_show(value)}")
    return seconds


def _parse_reset_after(value: object) -> float:
    """Seconds a run must stay up for the restart count to start again."""
    return _non_negative_number(value, "a non-negative number of seconds")


def _parse_shell(value: object) -> bool:
    """Whether ``cmd`` is a shell line for ``/bin/sh -c`` (as in a Procfile)."""
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_show(value)}")
    return value


def _parse_pty(value: object) -> bool:
    """Whether stdout and stderr are a pseudo-terminal (``add(..., pty=True)``)."""
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_show(value)}")
    return value


def _parse_scale(value: object) -> int:
    """How many instances to run (``web.1``, ``web.2``...); 0 runs none."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_SCALE:
        raise _Invalid(f"expected a number of instances (0 to {_MAX_SCALE}), got {_show(value)}")
    return value


def _parse_group(value: object) -> str:
    """A group name used to start/stop procs together."""
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_type_name(value)} {_show(value)}")
    if not value.isprintable():
        raise _Invalid(
            f"must be printable: no newlines, tabs or escape sequences, got {_show(value)}"
        )
    return value


def _no_nul(value: str, what: str) -> str:
    """`value`, unless it holds a NUL byte, which no command line or environment can."""
    if "\0" in value:
        raise _Invalid(f"{what} contains a NUL byte (\\0), which a process cannot be given")
    return value


def _parse_stop_signals(value: object) -> Ladder:
    """A stop ladder: ``[[SIGINT, 5], [SIGTERM, 5]]``, then SIGKILL."""
    try:
        return parse_ladder(value)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _parse_signal(value: object) -> int:
    """A signal given by name (``SIGINT``, ``INT``, any case) or number."""
    try:
        return parse_signal(value)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


# --------------------------------------------------------------------------
# Procfile and .env


def _parse_procfile(path: Path, text: str, problems: _Problems) -> list[ProcSpec]:
    """Parse ``name: command`` lines; procs run in the Procfile's directory.

    Each command is a shell line run by ``/bin/sh -c``, as honcho and foreman
    run it; lines they would ignore are skipped with a warning.
    """
    cwd = _resolve_dir(path, ".")
    entries, warnings = parse_procfile(text)
    for line, message in warnings:
        problems.warn(message, line=line)
    specs: list[ProcSpec] = []
    first_line: dict[str, int] = {}
    for entry in entries:
        if entry.name in first_line:
            problems.add(
                f"duplicate proc id (first defined on line {first_line[entry.name]})",
                proc=entry.name,
                line=entry.line,
            )
            continue
        first_line[entry.name] = entry.line
        specs.append(
            ProcSpec(
                id=entry.name,
                argv=shell_argv(entry.command),
                cwd=cwd,
                source=str(path),
                script=entry.command,
            )
        )
    return specs


# --------------------------------------------------------------------------
# Small helpers


class _ShortRepr(reprlib.Repr):
    """`repr` that renders only what will be shown: a few items of a few levels."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxtuple = self.maxlist = self.maxdict = self.maxset = self.maxfrozenset = 6
        self.maxstring = self.maxlong = self.maxother = 200

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 600:  # str() of a long int is slow, and refused past 4300 digits
            return f"<a number of about {int(x.bit_length() * math.log10(2))} digits>"
        return super().repr_int(x, level)


_SHORT_REPR = _ShortRepr()


def _show(value: object, limit: int = 60) -> str:
    """``repr(value)``, shortened so error messages stay readable.

    Never renders more than it shows: an alias bomb or a 5,000-digit number
    costs no more than a short value.
    """
    text = _SHORT_REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _id_text(value: object) -> str:
    """A key as the user wrote it, if it is a string; else its short repr."""
    return value if isinstance(value, str) else _show(value)


def _type_name(value: object) -> str:
    """A user-facing name for the type of a parsed config value."""
    names = {
        type(None): "nothing",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }
    return names.get(type(value), type(value).__name__)


def _os_error(exc: BaseException) -> str:
    """Describe a read error without repeating the file name."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _quote(arg: str) -> str:
    """Shell-quote ``arg`` on one line, using bash's ``$'...'`` for control
    characters (e.g. the newlines of a multi-line ``python3 -c`` script)."""
    if arg.isprintable():
        quoted = shlex.quote(arg)
        if "'" in arg and not any(char in arg for char in '"$`\\!'):
            return f'"{arg}"'  # more readable than shlex's '"'"' dance
        return quoted
    return "$'" + "".join(_escape_char(char) for char in arg) + "'"


_ANSI_C_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\", "'": "\\'"}


def _escape_char(char: str) -> str:
    """One character as bash writes it inside ``$'...'``."""
    if char in _ANSI_C_ESCAPES:
        return _ANSI_C_ESCAPES[char]
    if char.isprintable():
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
