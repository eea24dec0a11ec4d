"""Tests for the config-file layer of the CLI (trio_overseer._cli._config).

Pure parsing: config files are written to tmp_path and loaded; nothing is run.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import shlex
import signal
import textwrap
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_overseer._cli._config import (
    CONFIG_FILE_NAMES,
    ConfigError,
    ProcSpec,
    describe,
    find_config,
    load_config,
    read_config,
)
from trio_overseer._cli._dotenv import parse_dotenv
from trio_overseer._cli._procfile import shell_argv
from trio_overseer._cli._project import Options, Project, load_project

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def write(directory: Path, name: str, text: str) -> Path:
    """Write a dedented config file and return its path."""
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load_yaml(tmp_path: Path, text: str, name: str = "overseer.yml") -> list[ProcSpec]:
    return load_config(write(tmp_path, name, text))


def config_error(path: Path) -> ConfigError:
    """Load ``path`` expecting a ConfigError, and return it."""
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


def yaml_error(tmp_path: Path, text: str) -> ConfigError:
    return config_error(write(tmp_path, "overseer.yml", text))


# --------------------------------------------------------------------------
# find_config


def test_find_config_order(tmp_path: Path) -> None:
    for name in reversed(CONFIG_FILE_NAMES):
        (tmp_path / name).write_text("x: {cmd: y}\n")
        assert find_config(tmp_path) == tmp_path / name
    assert CONFIG_FILE_NAMES == (
        "overseer.yml",
        "overseer.yaml",
        "overseer.toml",
        "Procfile",
        "config.yml",
    )


@pytest.mark.parametrize("name", [n for n in CONFIG_FILE_NAMES if n != "config.yml"])
def test_find_config_each_name(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("")
    assert find_config(tmp_path) == tmp_path / name


@pytest.mark.parametrize(
    "text",
    [
        "database: {host: db.example.com, port: 5432}\n",
        "",
        "- a\n- b\n",
        "web: {cmd: x}\nlogging: {level: debug}\n",
        "web: [unclosed\n",
    ],
)
def test_generic_config_yml_counts_only_as_procs(tmp_path: Path, text: str) -> None:
    (tmp_path / "config.yml").write_text(text)
    with pytest.raises(ConfigError, match=r"config\.yml is not a procs file"):
        find_config(tmp_path)
    (tmp_path / "Procfile").write_text("web: x\n")
    assert find_config(tmp_path) == tmp_path / "Procfile"


def test_generic_config_yml_with_procs(tmp_path: Path) -> None:
    (tmp_path / "config.yml").write_text("web: {cmd: x}\nworker:\n  cmd: [y]\n")
    assert find_config(tmp_path) == tmp_path / "config.yml"


def test_find_config_none(tmp_path: Path) -> None:
    (tmp_path / "overseer.yml").mkdir()  # a directory does not count
    (tmp_path / "README").write_text("hi")
    with pytest.raises(ConfigError) as info:
        find_config(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "overseer.yml" in message
    assert "Procfile" in message


def test_find_config_on_examples() -> None:
    assert find_config(EXAMPLES) == EXAMPLES / "overseer.yml"


# --------------------------------------------------------------------------
# YAML: happy paths


def test_yaml_go_overseer_config(tmp_path: Path) -> None:
    # The config shipped with the Go tool ShinyTrinkets/overseer.
    specs = load_yaml(
        tmp_path,
        """
        app1:
          cmd: ping localhost -c 5
          delay: 10
          retry: 5

        app2:
          cmd: ls nonExistent
          delay: 1
          retry: 2

        app3:
          cmd: bash -C ENV
          env:
            - EDITOR=vim
            - ZZZ=123
          delay: 1
          retry: 5
        """,
    )
    assert [s.id for s in specs] == ["app1", "app2", "app3"]
    app1, app2, app3 = specs
    assert app1.argv == ("ping", "localhost", "-c", "5")
    assert app1.delay == pytest.approx(0.010)
    assert app1.retry == 5
    assert app2.argv == ("ls", "nonExistent")
    assert app2.delay == pytest.approx(0.001)
    assert app3.env == {"EDITOR": "vim", "ZZZ": "123"}
    for spec in specs:
        assert spec.cwd is None
        assert spec.source == str(tmp_path / "overseer.yml")


def test_yaml_defaults(tmp_path: Path) -> None:
    (spec,) = load_yaml(tmp_path, "web: {cmd: python3 app.py}\n")
    assert spec == ProcSpec(
        id="web",
        argv=("python3", "app.py"),
        cwd=None,
        env={},
        delay=0.0,
        retry=0,
        group="",
        stop_signal=int(signal.SIGTERM),
        stop_timeout=None,
        source=str(tmp_path / "overseer.yml"),
    )


def test_yaml_all_fields(tmp_path: Path) -> None:
    (spec,) = load_yaml(
        tmp_path,
        """
        web:
          cmd: python3 -m http.server 8000 --bind '127.0.0.1'
          cwd: public
          env: [PORT=8000, "MSG=a=b c"]
          delay: 1500
          retry: 3
          group: frontend
          stop_signal: SIGINT
          stop_timeout: 2.5
        """,
    )
    assert spec.argv == ("python3", "-m", "http.server", "8000", "--bind", "127.0.0.1")
    assert spec.cwd == str(tmp_path / "public")
    assert spec.env == {"PORT": "8000", "MSG": "a=b c"}
    assert spec.delay == 1.5
    assert spec.retry == 3
    assert spec.group == "frontend"
    assert spec.stop_signal == signal.SIGINT
    assert spec.stop_timeout == 2.5


def test_yaml_file_order_is_kept(tmp_path: Path) -> None:
    names = ["zeta", "alpha", "mid", "beta", "10"]
    text = "".join(f"{name}:\n  cmd: echo {name}\n" for name in names)
    assert [s.id for s in load_yaml(tmp_path, text)] == names


def test_yaml_cmd_as_list(tmp_path: Path) -> None:
    (spec,) = load_yaml(
        tmp_path,
        """
        script:
          cmd: [python3, -c, "print('a b')  # not a comment"]
        """,
    )
    assert spec.argv == ("python3", "-c", "print('a b')  # not a comment")


def test_yaml_cmd_shell_quoting(tmp_path: Path) -> None:
    (spec,) = load_yaml(
        tmp_path,
        """
        q:
          cmd: >-
            echo "two words" 'single $HOME' escaped\\ space ""
        """,
    )
    assert spec.argv == ("echo", "two words", "single $HOME", "escaped space", "")


def test_yaml_env_as_mapping(tmp_path: Path) -> None:
    (spec,) = load_yaml(
        tmp_path,
        """
        web:
          cmd: env
          env:
            PORT: 8000
            RATIO: 0.5
            NAME: web
            EMPTY: ""
        """,
    )
    assert spec.env == {"PORT": "8000", "RATIO": "0.5", "NAME": "web", "EMPTY": ""}


def test_yaml_env_list_later_entry_wins(tmp_path: Path) -> None:
    (spec,) = load_yaml(tmp_path, "a: {cmd: env, env: [X=1, X=2, 'Y=', Z==]}\n")
    assert spec.env == {"X": "2", "Y": "", "Z": "="}


def test_env_is_only_the_additions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INHERITED_VAR", "1")
    (spec,) = load_yaml(tmp_path, "a: {cmd: env, env: [X=1]}\n")
    assert spec.env == {"X": "1"}


@pytest.mark.parametrize(
    ("yaml_delay", "seconds"),
    [(0, 0.0), (1, 0.001), (250, 0.25), (1000, 1.0), (1500.5, 1.5005), (60000, 60.0)],
)
def test_delay_milliseconds_to_seconds(tmp_path: Path, yaml_delay: float, seconds: float) -> None:
    (spec,) = load_yaml(tmp_path, f"a: {{cmd: x, delay: {yaml_delay}}}\n")
    assert spec.delay == pytest.approx(seconds)
    assert isinstance(spec.delay, float)


def test_cwd_resolution(tmp_path: Path) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    specs = load_config(
        write(
            conf_dir,
            "overseer.yml",
            f"""
            rel: {{cmd: x, cwd: sub/dir}}
            dot: {{cmd: x, cwd: .}}
            up: {{cmd: x, cwd: ../other}}
            abs: {{cmd: x, cwd: {tmp_path / "elsewhere"}}}
            home: {{cmd: x, cwd: ~/proj}}
            empty: {{cmd: x, cwd: ""}}
            unset: {{cmd: x}}
            """,
        )
    )
    cwds = {s.id: s.cwd for s in specs}
    assert cwds == {
        "rel": str(conf_dir / "sub" / "dir"),
        "dot": str(conf_dir),
        "up": str(tmp_path / "other"),
        "abs": str(tmp_path / "elsewhere"),
        "home": str(Path("~/proj").expanduser()),
        "empty": None,
        "unset": None,
    }


def test_cwd_resolution_relative_config_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf", "overseer.yml", "a: {cmd: x, cwd: sub}\n")
    monkeypatch.chdir(tmp_path)
    (spec,) = load_config(Path("conf/overseer.yml"))
    assert spec.cwd == str(tmp_path / "conf" / "sub")
    assert os.path.isabs(spec.cwd)
    assert spec.source == str(Path("conf/overseer.yml"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("SIGINT", signal.SIGINT),
        ("INT", signal.SIGINT),
        ("sigterm", signal.SIGTERM),
        ("hup", signal.SIGHUP) if hasattr(signal, "SIGHUP") else ("SIGTERM", signal.SIGTERM),
        (" KILL ", signal.SIGKILL) if hasattr(signal, "SIGKILL") else ("INT", signal.SIGINT),
        (int(signal.SIGINT), signal.SIGINT),
        (int(signal.SIGTERM), signal.SIGTERM),
    ],
)
def test_stop_signal(tmp_path: Path, value: object, expected: signal.Signals) -> None:
    (spec,) = load_yaml(tmp_path, f"a: {{cmd: x, stop_signal: {value!r}}}\n".replace("'", '"'))
    assert spec.stop_signal == expected
    assert type(spec.stop_signal) is int


def test_yaml_merge_keys_may_override(tmp_path: Path) -> None:
    # `<<` merges are not duplicates: explicit keys override merged ones.
    specs = load_yaml(
        tmp_path,
        """
        base: &base
          cmd: python3 worker.py
          retry: 2
        worker:
          <<: *base
          retry: 5
        """,
    )
    assert [(s.id, s.argv, s.retry) for s in specs] == [
        ("base", ("python3", "worker.py"), 2),
        ("worker", ("python3", "worker.py"), 5),
    ]


def test_integer_proc_id(tmp_path: Path) -> None:
    (spec,) = load_yaml(tmp_path, "123: {cmd: x}\n")
    assert spec.id == "123"


def test_null_fields_mean_default(tmp_path: Path) -> None:
    (spec,) = load_yaml(
        tmp_path,
        """
        a:
          cmd: x
          cwd:
          env:
          delay:
          retry:
          group:
          stop_signal:
          stop_timeout:
        """,
    )
    assert spec == ProcSpec(id="a", argv=("x",), source=spec.source)


# --------------------------------------------------------------------------
# YAML: errors


def test_error_message_format(tmp_path: Path) -> None:
    path = write(tmp_path, "overseer.yml", "web:\n  cmd: x\n  retry: x\n")
    error = config_error(path)
    assert isinstance(error, ValueError)
    assert error.problems == [
        f"{path}: proc 'web': field 'retry': "
        "expected a non-negative integer, or 'forever' for no limit, got 'x'"
    ]
    assert str(error) == error.problems[0]


def test_error_message_with_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "overseer.yml", "web:\n  cmd: x\n  retry: x\n")
    monkeypatch.chdir(tmp_path)
    error = config_error(Path("overseer.yml"))
    assert str(error) == (
        "overseer.yml: proc 'web': field 'retry': "
        "expected a non-negative integer, or 'forever' for no limit, got 'x'"
    )


@pytest.mark.parametrize(
    ("settings", "field", "fragment"),
    [
        ("cmd: x\n  retry: x", "retry", "non-negative integer"),
        ("cmd: x\n  retry: -1", "retry", "for no limit, got -1"),
        ("cmd: x\n  retry: 1.5", "retry", "non-negative integer"),
        ("cmd: x\n  retry: true", "retry", "for no limit, got True"),
        ("cmd: x\n  delay: -5", "delay", "non-negative number of milliseconds"),
        ("cmd: x\n  delay: soon", "delay", "got 'soon'"),
        ("cmd: x\n  delay: .inf", "delay", "non-negative number"),
        ("cmd: x\n  delay: .nan", "delay", "non-negative number"),
        ("cmd: x\n  delay: [1]", "delay", "non-negative number"),
        ('cmd: ""', "cmd", "must not be empty"),
        ('cmd: "   "', "cmd", "must not be empty"),
        ("cmd: []", "cmd", "must not be empty"),
        ("cmd: ['', x]", "cmd", "must not be empty"),
        ("retry: 1", "cmd", "missing"),
        ("cmd:", "cmd", "missing"),
        ("cmd: [python3, 5]", "cmd", "item 1: expected a string"),
        ("cmd: {a: b}", "cmd", "expected a command string or a list"),
        ("cmd: 42", "cmd", "expected a command string"),
        ("cmd: echo 'unbalanced", "cmd", "no closing quotation"),
        ('cmd: echo "unbalanced', "cmd", "no closing quotation"),
        ("cmd: echo trailing\\", "cmd", "cannot split command"),
        ("cmd: x\n  retries: 3", "retries", "did you mean 'retry'"),
        ("cmd: x\n  command: y", "command", "unknown field"),
        ("cmd: x\n  env: [NOEQUALS]", "env", "expected 'NAME=value', got 'NOEQUALS'"),
        ("cmd: x\n  env: ['=value']", "env", "expected 'NAME=value'"),
        ("cmd: x\n  env: [5]", "env", "item 0"),
        ("cmd: x\n  env: A=1", "env", "expected a list of 'NAME=value' strings or a mapping"),
        ("cmd: x\n  env: {A: true}", "env", "variable 'A': expected a string"),
        ("cmd: x\n  env: {A: [1]}", "env", "variable 'A': expected a string"),
        ("cmd: x\n  env: {A: null}", "env", "variable 'A': expected a string"),
        ("cmd: x\n  env: {'A=B': c}", "env", "invalid variable name"),
        ("cmd: x\n  cwd: 5", "cwd", "expected a directory path"),
        ("cmd: x\n  group: 5", "group", "expected a string"),
        ("cmd: x\n  stop_signal: SIGBOGUS", "stop_signal", "unknown signal name 'SIGBOGUS'"),
        ("cmd: x\n  stop_signal: 99999", "stop_signal", "no signal number 99999"),
        ("cmd: x\n  stop_signal: true", "stop_signal", "expected a signal name or number"),
        ("cmd: x\n  stop_signal: 2.0", "stop_signal", "expected a signal name or number"),
        ("cmd: x\n  stop_timeout: -1", "stop_timeout", "non-negative number of seconds"),
        ("cmd: x\n  stop_timeout: forever", "stop_timeout", "got 'forever'"),
    ],
)
def test_yaml_field_errors(tmp_path: Path, settings: str, field: str, fragment: str) -> None:
    path = write(tmp_path, "overseer.yml", f"ok:\n  cmd: x\nweb:\n  {settings}\n")
    error = config_error(path)
    assert len(error.problems) == 1, error.problems
    (problem,) = error.problems
    assert problem.startswith(f"{path}: proc 'web': field '{field}': ")
    assert fragment.lower() in problem.lower()


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("python3 app.py", "expected a mapping of settings, got a string 'python3 app.py'"),
        ("[python3, app.py]", "expected a mapping of settings, got a list"),
        ("", "no settings given"),
    ],
)
def test_yaml_proc_not_a_mapping(tmp_path: Path, value: str, fragment: str) -> None:
    path = write(tmp_path, "overseer.yml", f"web: {value}\n")
    (problem,) = config_error(path).problems
    assert problem.startswith(f"{path}: proc 'web': {fragment}"), problem


def test_all_problems_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "overseer.yml",
        """
        good:
          cmd: echo fine
        web:
          cmd: ""
          retry: x
          delay: -1
        api:
          cmd: echo 'oops
          bogus: 1
        worker:
          env: [NOPE]
        """,
    )
    error = config_error(path)
    expected = [
        ("web", "cmd"),
        ("web", "retry"),
        ("web", "delay"),
        ("api", "cmd"),
        ("api", "bogus"),
        ("worker", "cmd"),
        ("worker", "env"),
    ]
    assert len(error.problems) == len(expected), error.problems
    for proc, field in expected:
        prefix = f"{path}: proc '{proc}': field '{field}': "
        assert any(p.startswith(prefix) for p in error.problems), (prefix, error.problems)
    assert str(error).splitlines() == error.problems
    assert "good" not in str(error)


def test_yaml_duplicate_proc_ids(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "overseer.yml",
        """
        web:
          cmd: one
        api:
          cmd: two
        web:
          cmd: three
        """,
    )
    error = config_error(path)
    assert error.problems == [
        f"{path}: line 5: proc 'web': duplicate proc id (first defined on line 1)"
    ]


def test_yaml_duplicate_fields_and_env_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "overseer.yml",
        """
        web:
          cmd: one
          retry: 1
          cmd: two
          env:
            A: 1
            A: 2
        """,
    )
    problems = config_error(path).problems
    assert sorted(problems) == sorted(
        [
            f"{path}: line 4: proc 'web': field 'cmd': duplicate field (first given on line 2)",
            f"{path}: line 7: proc 'web': field 'env': duplicate key 'A' (first given on line 6)",
        ]
    )


def test_yaml_duplicates_reported_with_other_problems(tmp_path: Path) -> None:
    path = write(tmp_path, "overseer.yml", "a: {cmd: x}\nb: {cmd: x, retry: -1}\na: {cmd: y}\n")
    problems = config_error(path).problems
    assert len(problems) == 2
    assert any("proc 'a': duplicate proc id" in p for p in problems)
    assert any("proc 'b': field 'retry'" in p for p in problems)


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("overseer.yml", "", "file is empty"),
        ("overseer.yml", "\n\n   \n", "file is empty"),
        ("overseer.yml", "# only a comment\n", "file is empty"),
        ("overseer.yml", "{}\n", "no procs defined"),
        (
            "overseer.yml",
            "- cmd: x\n",
            "top level must be a mapping of proc id to settings, got a list",
        ),
        (
            "overseer.yml",
            "just a string\n",
            "top level must be a mapping of proc id to settings, got a string",
        ),
        ("overseer.yml", "42\n", "top level must be a mapping"),
        ("overseer.toml", "", "file is empty"),
        ("overseer.toml", "# nothing\n", "file is empty"),
        ("overseer.toml", "procs = 3\n", "'procs' must be a table of proc tables"),
        (
            "overseer.toml",
            '[procs]\nweb = "python3 app.py"\n',
            "proc 'web': expected a mapping of settings",
        ),
        ("overseer.toml", '[web]\ncmd = "x"\n', "unknown top-level key 'web'"),
        ("overseer.toml", "[procs.web\n", "line 1: invalid TOML: "),
        ("overseer.toml", '[procs.web]\ncmd = "x\n', "line 2: invalid TOML: "),
        ("overseer.toml", "[procs]\n", "no procs defined"),
    ],
)
def test_bad_files(tmp_path: Path, name: str, text: str, fragment: str) -> None:
    path = write(tmp_path, name, text)
    (problem,) = config_error(path).problems
    assert problem.startswith(f"{path}: ")
    assert fragment in problem


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("web:\n  cmd: x\n   bad: indent\n", 3),
        ("web: {cmd: x\n", 2),
        ("web:\n  cmd: 'unterminated\n", 3),
        ("a: b: c\n", 1),
        ("web:\n\tcmd: x\n", 2),
    ],
)
def test_yaml_syntax_errors(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path, "overseer.yml", text)
    (problem,) = config_error(path).problems
    assert problem.startswith(f"{path}: line {line}: invalid YAML: "), problem
    assert "\n" not in problem


def test_yaml_bad_proc_id(tmp_path: Path) -> None:
    path = write(tmp_path, "overseer.yml", "? [a, b]\n: {cmd: x}\n")
    (problem,) = config_error(path).problems
    assert problem.startswith(f"{path}: ")


def test_yaml_unsafe_tags_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "overseer.yml", "a: !!python/object/apply:os.system ['true']\n")
    (problem,) = config_error(path).problems
    assert "invalid YAML" in problem


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    assert str(config_error(missing)).startswith(f"{missing}: cannot read config file")
    assert str(config_error(tmp_path)).startswith(f"{tmp_path}: cannot read config file")
    binary = tmp_path / "bin.yml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    assert str(config_error(binary)).startswith(f"{binary}: cannot read config file")


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "overseer.yml"
    path.write_bytes("\ufeffweb: {cmd: echo é}\n".encode())
    (spec,) = load_config(path)
    assert spec.argv == ("echo", "é")


# --------------------------------------------------------------------------
# TOML


def test_toml(tmp_path: Path) -> None:
    specs = load_config(
        write(
            tmp_path,
            "overseer.toml",
            """
            [procs.web]
            cmd = "python3 -m http.server 'a b'"
            cwd = "www"
            env = ["A=1", "B=2"]
            delay = 250
            retry = 2
            group = "front"
            stop_signal = "INT"
            stop_timeout = 3

            [procs.worker]
            cmd = ["python3", "worker.py"]
            env = { QUEUE = "jobs", N = 4 }
            """,
        )
    )
    web, worker = specs
    assert web == ProcSpec(
        id="web",
        argv=("python3", "-m", "http.server", "a b"),
        cwd=str(tmp_path / "www"),
        env={"A": "1", "B": "2"},
        delay=0.25,
        retry=2,
        group="front",
        stop_signal=int(signal.SIGINT),
        stop_timeout=3.0,
        source=str(tmp_path / "overseer.toml"),
    )
    assert worker.argv == ("python3", "worker.py")
    assert worker.env == {"QUEUE": "jobs", "N": "4"}


def test_toml_keeps_file_order(tmp_path: Path) -> None:
    names = ["z", "a", "m"]
    text = "".join(f'[procs.{n}]\ncmd = "echo {n}"\n' for n in names)
    assert [s.id for s in load_config(write(tmp_path, "overseer.toml", text))] == names


def test_toml_field_errors_collected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "overseer.toml",
        """
        [procs.web]
        cmd = ""
        retry = "x"

        [procs.api]
        cmd = "echo 'x"
        stop_signal = "NOPE"
        """,
    )
    problems = config_error(path).problems
    assert [p.split(": ")[1:3] for p in problems] == [
        ["proc 'web'", "field 'cmd'"],
        ["proc 'web'", "field 'retry'"],
        ["proc 'api'", "field 'cmd'"],
        ["proc 'api'", "field 'stop_signal'"],
    ]
    assert all(p.startswith(f"{path}: ") for p in problems)


def test_toml_duplicate_proc(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "overseer.toml",
        """
        [procs.web]
        cmd = "a"

        [procs.web]
        cmd = "b"
        """,
    )
    assert config_error(path).problems == [f"{path}: line 4: proc 'web': duplicate proc id"]


# --------------------------------------------------------------------------
# Procfile and .env


def load(tmp_path: Path, **options: Any) -> Project:
    """The project in tmp_path, read as the CLI would."""
    return load_project(Options(**options), tmp_path)


def test_procfile_lines_are_shell_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "Procfile",
        """
        # a comment
        web: gunicorn app --port=$PORT

          worker_2:   celery worker --queue 'high prio'   # trailing comment
        clock-1:cd src && REMAP_SIGTERM=SIGQUIT python3 clock.py
        pipe: tail -f log | grep x
        """,
    )
    specs = load_config(path)
    assert [(s.id, s.argv, s.script) for s in specs] == [
        ("web", ("/bin/sh", "-c", "exec gunicorn app --port=$PORT"), "gunicorn app --port=$PORT"),
        (
            "worker_2",
            ("/bin/sh", "-c", "exec celery worker --queue 'high prio'   # trailing comment"),
            "celery worker --queue 'high prio'   # trailing comment",
        ),
        (
            "clock-1",
            ("/bin/sh", "-c", "cd src && REMAP_SIGTERM=SIGQUIT exec python3 clock.py"),
            "cd src && REMAP_SIGTERM=SIGQUIT python3 clock.py",
        ),
        ("pipe", ("/bin/sh", "-c", "tail -f log | grep x"), "tail -f log | grep x"),
    ]
    for spec in specs:
        assert spec.cwd == str(tmp_path)  # honcho and foreman run procs there
        assert spec.env == {}
        assert spec.retry == 0
        assert spec.delay == 0.0
        assert spec.source == str(path)
    assert describe(specs[0]) == "sh -c: gunicorn app --port=$PORT  [cwd=" + str(tmp_path) + "]"


@pytest.mark.parametrize(
    ("line", "script"),
    [
        ("prog a b", "exec prog a b"),
        ("prog >/dev/null 2>&1", "exec prog >/dev/null 2>&1"),
        ("A=1 B='x y' prog", "A=1 B='x y' exec prog"),
        ("cd src && prog", "cd src && exec prog"),
        ("setup; prog", "setup; exec prog"),
        ("try || fallback", "try || exec fallback"),
        ('echo "a;b|c" ; prog', 'echo "a;b|c" ; exec prog'),
        ("prog 'it''s'", "exec prog 'it''s'"),
        ("prog \\; x", "exec prog \\; x"),
        # The shell stays: pipes, jobs, subshells, substitutions, builtins.
        ("a | b", "a | b"),
        ("a & b", "a & b"),
        ("a &", "a &"),
        ("(cd x; prog)", "(cd x; prog)"),
        ("{ prog; }", "{ prog; }"),
        ("prog $(date)", "prog $(date)"),
        ('prog "`date`"', 'prog "`date`"'),
        ("cd src", "cd src"),
        ("exec prog", "exec prog"),
        ("x=1", "x=1"),
        ("prog;", "prog;"),
        ("while true; do x; done", "while true; do x; done"),
        (">log prog", ">log prog"),
        ("prog 'unclosed", "prog 'unclosed"),
    ],
)
def test_exec_only_where_safe(line: str, script: str) -> None:
    assert shell_argv(line) == ("/bin/sh", "-c", script)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("+foo: x\n", "line 3: invalid process name '+foo'"),
        ("my web: x\n", "line 3: invalid process name 'my web'"),
        ("wéb: x\n", "line 3: invalid process name 'wéb'"),
        ("just some text\n", "line 3: expected 'name: command'"),
        (": x\n", "line 3: expected 'name: command'"),
        ("web:\n", "line 3: process 'web' has no command"),
        ("web:    # only a comment\n", "line 3: process 'web' has no command"),
    ],
)
def test_procfile_lines_skipped_with_a_warning(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, "Procfile", "ok: x\n\n" + text + "last: y\n")
    specs, warnings = read_config(path)
    assert [s.id for s in specs] == ["ok", "last"]
    (warning,) = warnings
    assert warning.startswith(f"{path}: {fragment}"), warning
    assert warning.endswith("; skipped")


def test_procfile_duplicate_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "Procfile", "a: x\na: y\n+b: q\n")
    problem, warning = config_error(path).problems
    assert problem == f"{path}: line 2: proc 'a': duplicate proc id (first defined on line 1)"
    assert warning.startswith(f"warning: {path}: line 3: invalid process name '+b'")


@pytest.mark.parametrize("text", ["", "# only comments\n\n", "+bad: x\n"])
def test_procfile_empty(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "Procfile", text)
    problems = config_error(path).problems
    assert problems[0] == f"{path}: no procs defined"
    assert len(problems) == (2 if "+" in text else 1)  # the line skipped, as a warning


def test_dotenv_applies_to_every_proc(tmp_path: Path) -> None:
    write(
        tmp_path,
        ".env",
        """
        # comment
        PLAIN=value
        export EXPORTED=yes
        SPACED = around
        SINGLE='$NOT expanded \\n'  # comment
        DOUBLE="line1\\nline2 \\"q\\" \\\\ \\$x"
        INLINE=value # a comment
        HASH=a#b
        QUOTED_HASH="a # b"  # comment
        EMPTY=
        EMPTY_QUOTED=""
        URL=postgres://u:p@host/db?x=1
        exporter=not-a-prefix
        'QUOTED_KEY'=1
        export 'EXPORTED_QUOTED'=2
        ESCAPED='it\\'s'
        MULTI="first
        second"
        BARE
        """,
    )
    write(tmp_path, "Procfile", "web: env\nworker: env\n")
    project = load(tmp_path)
    assert project.warnings == ()
    web, worker = project.specs
    expected = {
        "PLAIN": "value",
        "EXPORTED": "yes",
        "SPACED": "around",
        "SINGLE": "$NOT expanded \\n",
        "DOUBLE": 'line1\nline2 "q" \\ \\$x',
        "INLINE": "value",
        "HASH": "a#b",
        "QUOTED_HASH": "a # b",
        "EMPTY": "",
        "EMPTY_QUOTED": "",
        "URL": "postgres://u:p@host/db?x=1",
        "exporter": "not-a-prefix",
        "QUOTED_KEY": "1",
        "EXPORTED_QUOTED": "2",
        "ESCAPED": "it's",
        "MULTI": "first\nsecond",
    }
    assert project.env == expected
    assert web.env == {**expected, "PORT": "5000"}
    assert worker.env == {**expected, "PORT": "5100"}


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("a: b", "cannot read 'a: b'"),
        ("uglyKey[%$=1", "invalid variable name 'uglyKey[%$'"),
        ("-foo=x", "invalid variable name '-foo'"),
        ("héllo=1", "invalid variable name 'héllo'"),
        ("1BAD=x", "invalid variable name '1BAD'"),
        ('A="x" junk', "cannot read"),
        ("A='unterminated", "cannot read"),
    ],
)
def test_dotenv_unreadable_lines_are_skipped(tmp_path: Path, line: str, fragment: str) -> None:
    env_path = write(tmp_path, ".env", f"OK=1\n{line}\nLAST=2\n")
    write(tmp_path, "Procfile", "web: env\n")
    project = load(tmp_path)
    assert project.env == {"OK": "1", "LAST": "2"}
    (warning,) = project.warnings
    assert warning.startswith(f"{env_path}: line 2: "), warning
    assert fragment in warning


def test_dotenv_interpolation_is_a_note(tmp_path: Path) -> None:
    env_path = write(tmp_path, ".env", "HOST=db\nURL=${HOST}:5432\n")
    write(tmp_path, "Procfile", "web: env\n")
    project = load(tmp_path)
    assert project.env["URL"] == "${HOST}:5432"  # as honcho and foreman
    (note,) = project.notes
    assert note.startswith(f"{env_path}: line 2: URL: ${{HOST}} is kept as written")


NAME_CHARS = st.sampled_from("AZaz_09-.[%$:é ")
LINES = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(["", "export ", "  "]),
            st.one_of(
                st.sampled_from(["A", "B_1", "x", "_y"]),
                st.text(NAME_CHARS, min_size=1, max_size=5),
            ),
            st.sampled_from(["=", " = ", "= ", ""]),
            st.one_of(
                st.text(st.sampled_from("ab #'\"\\\n=$x"), max_size=8),
                st.text(st.sampled_from('ab #"\\\n'), max_size=6).map(lambda t: f"'{t}'"),
                st.text(st.sampled_from("ab #'\\\nnt"), max_size=6).map(lambda t: f'"{t}"'),
            ),
        ).map("".join),
        st.sampled_from(["# comment", "", "   ", "a: b", "'quoted'=v", "BARE"]),
    ),
    max_size=6,
).map("\n".join)


@settings(max_examples=300, deadline=None)
@given(LINES)
def test_dotenv_reads_as_python_dotenv(text: str) -> None:
    """Differential: the same values as python-dotenv (without its ${VAR} expansion),
    but for names no shell accepts, which are skipped with a warning."""
    import dotenv

    theirs = dotenv.dotenv_values(stream=io.StringIO(text), interpolate=False)
    ours = parse_dotenv(text)
    valid = {k: v for k, v in theirs.items() if v is not None and re.fullmatch(r"[A-Za-z_]\w*", k)}
    valid = {k: v for k, v in valid.items() if k.isascii()}
    assert ours.values == valid
    skipped_names = {k for k in theirs if k not in valid and theirs[k] is not None}
    assert len(ours.warnings) >= len(skipped_names)


# --------------------------------------------------------------------------
# Format selection


@pytest.mark.parametrize("name", ["overseer.yml", "x.yaml", "CONFIG.YML"])
def test_format_by_suffix_yaml(tmp_path: Path, name: str) -> None:
    (spec,) = load_config(write(tmp_path, name, "web:\n  cmd: a b\n"))
    assert spec.argv == ("a", "b")


@pytest.mark.parametrize("name", ["Procfile", "Procfile.dev", "procfile"])
def test_format_procfile_names(tmp_path: Path, name: str) -> None:
    (spec,) = load_config(write(tmp_path, name, "web: a b\n"))
    assert (spec.id, spec.script, spec.cwd) == ("web", "a b", str(tmp_path))


def test_yaml_suffix_wins_over_procfile_look(tmp_path: Path) -> None:
    # Valid as a Procfile too, but the suffix says YAML: proc must be a mapping.
    path = write(tmp_path, "procs.yml", "web: a b\n")
    assert "expected a mapping of settings" in str(config_error(path))


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ('[procs.web]\ncmd = "a b"\n', "toml"),
        ("web:\n  cmd: a b\n", "yaml"),
        ("web: {cmd: a b}\n", "yaml"),
        ("# comment\nweb: a b\n", "procfile"),
    ],
)
def test_format_sniffed_from_content(tmp_path: Path, text: str, kind: str) -> None:
    (spec,) = load_config(write(tmp_path, "procs.conf", text))
    assert spec.id == "web"
    assert spec.argv == (("/bin/sh", "-c", "exec a b") if kind == "procfile" else ("a", "b"))
    assert (spec.cwd is not None) == (kind == "procfile")


# --------------------------------------------------------------------------
# ProcSpec, ConfigError and describe


def test_procspec_is_frozen_and_hashable() -> None:
    spec = ProcSpec(id="a", argv=("x",), env={"A": "1"})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        spec.retry = 3  # type: ignore[misc]
    assert hash(spec) == hash(ProcSpec(id="a", argv=("x",), env={"A": "2"}))
    assert spec != ProcSpec(id="a", argv=("x",), env={"A": "2"})
    assert spec == ProcSpec(id="a", argv=("x",), env={"A": "1"})


def test_config_error() -> None:
    error = ConfigError(["a: one", "b: two"])
    assert isinstance(error, ValueError)
    assert str(error) == "a: one\nb: two"
    single = ConfigError("only")
    assert single.problems == ["only"]
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, ConfigError)
    assert copy.problems == error.problems
    with pytest.raises(ValueError, match="at least one"):
        ConfigError([])


def test_describe_plain() -> None:
    assert describe(ProcSpec(id="web", argv=("python3", "app.py"))) == "python3 app.py"


def test_describe_everything() -> None:
    spec = ProcSpec(
        id="web",
        argv=("python3", "-c", "print('hi there')"),
        cwd="/srv/my app",
        env={"A": "1", "B": "x y"},
        delay=1.5,
        retry=3,
        group="front",
        stop_signal=int(signal.SIGINT),
        stop_timeout=2.0,
    )
    assert describe(spec) == (
        "python3 -c \"print('hi there')\"  [cwd='/srv/my app'; env=A=1 B='x y'; "
        "delay=1.5s; retry=3; group=front; stop_signal=SIGINT; stop_timeout=2s]"
    )


def test_describe_is_one_line_and_shell_faithful() -> None:
    spec = ProcSpec(id="t", argv=("python3", "-c", "import x\nprint('a')\tb", "$HOME", "it's"))
    text = describe(spec)
    assert "\n" not in text
    assert text == "python3 -c $'import x\\nprint(\\'a\\')\\tb' '$HOME' \"it's\""
    # Without control characters, shlex can read the rendering back.
    plain = ProcSpec(id="p", argv=("echo", "a b", "'q'", '"d"', "$x", "", "!"))
    assert tuple(shlex.split(describe(plain))) == plain.argv


@settings(max_examples=60, deadline=None)
@given(
    argv=st.lists(
        st.text(
            # Printable characters (control ones are rendered as $'...' by describe).
            alphabet=st.characters(
                codec="utf-8", exclude_categories=("C", "Zl", "Zp", "Zs"), include_characters=" "
            ),
            max_size=12,
        ),
        min_size=1,
        max_size=5,
    ).filter(lambda argv: argv[0] != "")
)
def test_shlex_join_round_trip(tmp_path_factory: pytest.TempPathFactory, argv: list[str]) -> None:
    # A `cmd` written with shell quoting comes back as the same argv, and so
    # does the `describe` rendering of it.
    directory = tmp_path_factory.mktemp("roundtrip")
    path = directory / "overseer.toml"
    command = shlex.join(argv).replace("\\", "\\\\").replace('"', '\\"')
    path.write_text(f'[procs.p]\ncmd = "{command}"\n', encoding="utf-8")
    (spec,) = load_config(path)
    assert spec.argv == tuple(argv)
    assert tuple(shlex.split(describe(spec))) == tuple(argv)


# --------------------------------------------------------------------------
# The example files


def python_code(spec: ProcSpec) -> str | None:
    """The script of a ``python3 ... -c SCRIPT`` proc, if it is one."""
    if spec.argv[0] != "python3" or "-c" not in spec.argv:
        return None
    return spec.argv[spec.argv.index("-c") + 1]


def test_example_yaml() -> None:
    specs = {s.id: s for s in load_config(EXAMPLES / "overseer.yml")}
    assert list(specs) == ["flaky", "broken", "ticker", "greeter"]
    flaky, broken, ticker, greeter = specs.values()
    # (a) fails a few times and is restarted
    assert flaky.retry == 3
    assert "sys.exit(1)" in (python_code(flaky) or "")
    # (b) fails for good
    assert broken.retry == 0
    assert "sys.exit(2)" in (python_code(broken) or "")
    # (c) long-running, one line a second
    assert "while True" in (python_code(ticker) or "") or "count(" in (python_code(ticker) or "")
    assert ticker.stop_signal == signal.SIGINT
    # (d) delay and env
    assert greeter.delay == 2.0
    assert greeter.env == {"GREETING": "hello"}
    assert greeter.cwd == str(EXAMPLES)


@pytest.mark.parametrize("name", ["overseer.yml", "overseer.toml", "Procfile"])
def test_examples_parse_and_python_compiles(name: str) -> None:
    specs = load_config(EXAMPLES / name)
    assert len(specs) >= 3
    for spec in specs:
        assert spec.source == str(EXAMPLES / name)
        assert "\n" not in describe(spec)
        code = python_code(spec)
        if code is not None:
            compile(code, f"<{name}:{spec.id}>", "exec")


def test_example_toml_and_procfile_match_the_idea() -> None:
    toml = {s.id: s for s in load_config(EXAMPLES / "overseer.toml")}
    assert toml["flaky"].retry > 0
    assert toml["greeter"].delay > 0
    assert toml["greeter"].env
    procfile = load_project(Options(config=str(EXAMPLES / "Procfile"))).specs
    assert all(s.env.get("GREETING") == "hello from .env" for s in procfile)
    assert all(s.cwd == str(EXAMPLES) for s in procfile)
