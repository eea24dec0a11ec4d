"""A project: the config file plus what honcho and foreman add around it.

`load_project` reads the config file (`_config`), the environment files
(``.env`` by default, ``-e a,b``: later files win), and expands every proc
type into its instances:

* concurrency comes from ``scale:`` in YAML/TOML, overridden by ``-c
  web=2,worker=3`` (``all=N`` for every type); an instance of a type run more
  than once is named ``web.1``, ``web.2``...; a type scaled to 0 runs none;
* ``PORT``: as foreman, type number *i* (in file order, counting every
  type, selected or not) gets ``base + 100 * i`` and its instances ``+1``
  each; the base is ``-p N``, else ``PORT`` from the env files, else from the
  environment, else 5000.  A proc whose own ``env`` sets ``PORT`` keeps it;
* ``requires`` (and ``restart_with``) of a type become the ids of the
  required types' instances (none for a type scaled to 0); selecting a proc
  (``start api``) selects what it requires too.

A proc's environment, from the bottom up: the inherited environment, the
env files, ``PORT``, the proc's own ``env``.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from .._requires import closure as requirement_closure
from ._config import ConfigError, ProcSpec, find_config, read_config
from ._dotenv import parse_dotenv

__all__ = ["DEFAULT_PORT", "Options", "Project", "load_project", "parse_concurrency"]

DEFAULT_PORT = 5000
_PORT_STEP = 100
_MAX_INSTANCES = 1000


@attrs.frozen
class Options:
    """How to read a project, from the command line."""

    config: str | None = None
    """The config file (``-f``/``-c FILE``); None to look for one."""
    env_files: tuple[str, ...] | None = None
    """Environment files (``-e``); None: ``.env`` beside the config, if any."""
    concurrency: Mapping[str, int] = attrs.field(factory=dict)
    """Instances per type (``-c web=2``); ``all`` applies to every type."""
    port: int | None = None
    """The base port (``-p``)."""
    names: tuple[str, ...] = ()
    """Run only these types or instances (positional names, ``--only``)."""


@attrs.frozen
class Project:
    """What `load_project` found."""

    path: Path
    """The config file."""
    specs: tuple[ProcSpec, ...]
    """The procs to run (instances, selected)."""
    all_specs: tuple[ProcSpec, ...]
    """Every instance of every type, selected or not."""
    env: dict[str, str]
    """What the env files set (shared by every proc)."""
    env_files: tuple[Path, ...]
    """The env files read."""
    warnings: tuple[str, ...] = ()
    """Lines skipped, each naming its file and line."""
    notes: tuple[str, ...] = ()
    """Where honcho, foreman or python-dotenv would read something differently."""


def parse_concurrency(text: str) -> dict[str, int]:
    """``web=2,worker=3`` as a mapping; `ValueError` saying what is wrong."""
    counts: dict[str, int] = {}
    for item in text.split(","):
        name, sep, number = item.strip().partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"expected NAME=N, got {item.strip()!r}")
        try:
            count = int(number)
        except ValueError:
            raise ValueError(f"{name}: expected a number of instances, got {number!r}") from None
        if not 0 <= count <= _MAX_INSTANCES:
            raise ValueError(f"{name}: expected 0 to {_MAX_INSTANCES} instances, got {count}")
        counts[name] = count
    return counts


def load_project(options: Options, directory: Path | None = None) -> Project:
    """Read the project in `directory` (default: the current one).

    Raises `ConfigError` listing every problem (the config file, env files,
    options naming unknown procs); warnings never raise.
    """
    here = Path.cwd()
    directory = here if directory is None else directory
    if options.config is not None:
        path = Path(options.config)
    else:
        path = find_config(directory)
        if directory == here:
            path = Path(path.name)  # messages name it as the user would
    base, warnings = read_config(path)
    root = path.parent
    env, env_files, env_warnings, notes = _read_env_files(root, options.env_files)
    warnings += env_warnings
    problems: list[str] = []
    names = {spec.id for spec in base}
    for name in options.concurrency:
        if name != "all" and name not in names:
            problems.append(
                f"concurrency: no proc {name!r} in {path} (known: {', '.join(sorted(names))})"
            )
    if problems:
        raise ConfigError(problems)
    port_file = next((f for f in reversed(env_files) if "PORT" in parse_env_names(f)), None)
    all_specs = _expand(base, env, options, port_file)
    specs = _select(all_specs, options.names, path)
    return Project(
        path=path,
        specs=tuple(specs),
        all_specs=tuple(all_specs),
        env=env,
        env_files=tuple(env_files),
        warnings=tuple(warnings),
        notes=tuple(notes),
    )


def _read_env_files(
    root: Path, names: Sequence[str] | None
) -> tuple[dict[str, str], list[Path], list[str], list[str]]:
    """The variables of the env files, the files read, warnings and notes."""
    explicit = names is not None
    paths = [root / name for name in (names if names is not None else (".env",))]
    env: dict[str, str] = {}
    read: list[Path] = []
    warnings: list[str] = []
    notes: list[str] = []
    problems: list[str] = []
    for path in paths:
        if not explicit and not path.exists():
            continue
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            problems.append(f"{path}: cannot read env file: {why}")
            continue
        parsed = parse_dotenv(text)
        env.update(parsed.values)
        read.append(path)
        warnings += [f"{path}: line {line}: {message}" for line, message in parsed.warnings]
        notes += [f"{path}: line {line}: {message}" for line, message in parsed.notes]
    if problems:
        raise ConfigError(problems)
    return env, read, warnings, notes


def parse_env_names(path: Path) -> set[str]:
    """The names an env file sets (read again: only to name it in a message)."""
    try:
        return set(parse_dotenv(path.read_text(encoding="utf-8-sig")).values)
    except (OSError, UnicodeDecodeError):
        return set()


def base_port(options: Options, env: Mapping[str, str], port_file: Path | None = None) -> int:
    """``-p``, else ``PORT`` of the env files, else of the environment, else 5000."""
    if options.port is not None:
        return options.port
    env_files = str(port_file) if port_file is not None else "the env files"
    for source, where in ((env, env_files), (os.environ, "the environment")):
        text = source.get("PORT")
        if text:
            try:
                return int(text)
            except ValueError:
                raise ConfigError(f"PORT in {where} is not a number: {text!r}") from None
    return DEFAULT_PORT


def _expand(
    base: list[ProcSpec], env: dict[str, str], options: Options, port_file: Path | None
) -> list[ProcSpec]:
    """Every instance of every type, with its environment."""
    port = base_port(options, env, port_file)
    counts = {
        spec.id: options.concurrency.get(spec.id, options.concurrency.get("all", spec.scale))
        for spec in base
    }
    # A requirement names a type: its instances are required (none when scaled to 0).
    instances = {
        type: [f"{type}.{n}" for n in range(1, count + 1)] if count > 1 else [type] * count
        for type, count in counts.items()
    }
    specs: list[ProcSpec] = []
    for index, spec in enumerate(base):
        count = counts[spec.id]
        requires = tuple(id for type in spec.requires for id in instances.get(type, [type]))
        restart_with = tuple(id for type in spec.restart_with for id in instances.get(type, [type]))
        for number in range(1, count + 1):
            proc_env = dict(env)
            if "PORT" not in spec.env:
                proc_env["PORT"] = str(port + _PORT_STEP * index + number - 1)
            proc_env.update(spec.env)
            scaled = count > 1
            specs.append(
                attrs.evolve(
                    spec,
                    id=f"{spec.id}.{number}" if scaled else spec.id,
                    env=proc_env,
                    scale=count,
                    type=spec.id,
                    instance=number if scaled else 0,
                    requires=requires,
                    restart_with=restart_with,
                )
            )
    return specs


def _select(specs: list[ProcSpec], names: Sequence[str], path: Path) -> list[ProcSpec]:
    """The specs `names` ask for: ids, types or ``*`` patterns, with what they
    require (transitively); all when none."""
    if not names:
        return specs
    chosen: set[str] = set()
    unknown: list[str] = []
    for name in names:
        found = {spec.id for spec in specs if matches(spec, name)}
        if not found:
            unknown.append(name)
        chosen |= found
    if unknown:
        known = ", ".join(dict.fromkeys(spec.type for spec in specs))
        raise ConfigError(
            f"no proc {', '.join(map(repr, unknown))} in {path} (known: {known or 'none'})"
        )
    graph = {spec.id: spec.requires for spec in specs}
    chosen = set(requirement_closure(graph, sorted(chosen)))
    return [spec for spec in specs if spec.id in chosen]


def matches(spec: ProcSpec, name: str) -> bool:
    """Whether `name` addresses `spec`: its id, its type, its group as ``group:*``,
    or a shell pattern of ids (``web.*``)."""
    if name in (spec.id, spec.type):
        return True
    if name.endswith(":*"):
        return bool(spec.group) and spec.group == name[:-2]
    return any(c in name for c in "*?[") and fnmatch.fnmatchcase(spec.id, name)
