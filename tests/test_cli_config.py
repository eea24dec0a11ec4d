"""Hostile config files: ``check`` and ``start`` refuse them alike, clearly (issue 10).

Items 7 (alias bomb), 8 (raw control character), 10 (deep nesting), 13
(what ``start`` refuses, ``check`` refuses too; unprintable ids; a deleted
working directory).  The installed command runs in a temporary directory;
each answer must be exit status 2 and a message naming the file (and the
line where there is one), never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import trio
from cli_children import INSTALLED, SLEEP_FOREVER, T, client, py, write_text

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the CLI tests run on Linux"
)


async def refused(cwd: Path, name: str) -> tuple[str, str]:
    """Run ``check`` and ``start`` on `name`; both must exit 2: their stderr."""
    errors = []
    for command in (["check", "-c", name], ["start", "--no-socket", "-c", name]):
        rc, out, err = await client(cwd, *command, tool=INSTALLED)
        assert (rc, out) == (2, ""), (command, rc, out, err)
        assert "Traceback" not in err, err
        assert name in err, err
        errors.append(err)
    assert "nothing was started" in errors[1]
    return errors[0], errors[1]


# --- item 7: an alias bomb -------------------------------------------------------------


async def test_yaml_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["x"]']
    for level in range(1, 10):  # nine levels of nine aliases: 9 ** 9 values expanded
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]")
    lines.append("web:\n  cmd: *a9")
    write_text(tmp_path, "overseer.yml", "\n".join(lines) + "\n")
    with trio.fail_after(T):  # was: more than 30 s
        check, _ = await refused(tmp_path, "overseer.yml")
    assert "aliases expand to more than" in check, check


BIG = "1" * 5000  # more digits than int() reads
TOO_LONG = "invalid YAML: a number of 5000 digits is too long"


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("overseer.yml", f"web:\n  cmd: x\n  retry: {BIG}\n", f"line 3: {TOO_LONG}"),
        ("overseer.yml", f"? {BIG}\n: {{cmd: x}}\n", f"line 1: {TOO_LONG}"),
        ("overseer.toml", f"[procs.web]\ncmd = 'x'\nretry = {BIG}\n", "a number is too long"),
        (
            "overseer.toml",
            f"[procs.web]\ncmd = 'x'\nstop_timeout = {BIG[:400]}\n",
            "field 'stop_timeout': a number of more than 100 digits",
        ),
        ("overseer.yml", "web:\n  cmd: x\n  scale: 100000000\n", "(0 to 1000), got 100000000"),
        (
            "overseer.yml",
            f"web:\n  cmd: [{', '.join(['[1, 2]'] * 2000)}]\n  env: ['{'x' * 100_000}']\n",
            "proc 'web': field 'env': item 0: expected 'NAME=value', got 'xxxxx",
        ),
    ],
    ids=["yaml-number", "yaml-key", "toml-number", "toml-float", "scale", "long-values"],
)
async def test_long_values_are_refused_and_shown_short(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    write_text(tmp_path, name, text)
    check, _ = await refused(tmp_path, name)
    assert expected in check, check
    assert all(len(line) < 400 for line in check.splitlines()), check


# --- item 8: a raw control character ------------------------------------------------------


async def test_raw_control_character_in_yaml(tmp_path: Path) -> None:
    write_text(tmp_path, "overseer.yml", 'web:\n  cmd: printf "\x1b[31mred"\n')
    check, start = await refused(tmp_path, "overseer.yml")
    assert "overseer.yml: line 2: invalid YAML: control character" in check, check
    assert check.splitlines()[0] == start.splitlines()[0]


# --- item 10: deep nesting ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("overseer.yml", "web:\n  cmd: " + "[" * 20000 + "\n"),
        ("overseer.yml", "web:\n  cmd: " + "{a: " * 20000 + "\n"),
        ("overseer.toml", "[procs.web]\ncmd = " + "[" * 20000 + "\n"),
        ("overseer.toml", "[procs.web]\ncmd = " + "{a = " * 20000 + "\n"),
        ("procs.conf", "[procs.web]\ncmd = " + "[" * 20000 + "\n"),  # the format is sniffed
    ],
    ids=["yaml-list", "yaml-map", "toml-array", "toml-table", "sniffed"],
)
async def test_deep_nesting_is_refused(tmp_path: Path, name: str, text: str) -> None:
    write_text(tmp_path, name, text)
    check, _ = await refused(tmp_path, name)
    assert "nested" in check, check


# --- item 13: check refuses what start refuses ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('web:\n  cmd: ["sleep", "1\\0"]\n', "field 'cmd'"),
        ('web:\n  cmd: "sleep 1\\0"\n', "field 'cmd'"),
        ('web:\n  cmd: sleep 1\n  env: ["A=x\\0y"]\n', "field 'env'"),
        ('web:\n  cmd: sleep 1\n  env: {"A\\0": "x"}\n', "field 'env'"),
        ('web:\n  cmd: sleep 1\n  cwd: "sub\\0dir"\n', "field 'cwd'"),
        ('web:\n  shell: true\n  cmd: "echo \\0"\n', "field 'cmd'"),
    ],
    ids=["argv", "cmd-string", "env-value", "env-name", "cwd", "shell-line"],
)
async def test_nul_bytes_are_refused_by_check_too(tmp_path: Path, text: str, where: str) -> None:
    write_text(tmp_path, "overseer.yml", text)
    check, start = await refused(tmp_path, "overseer.yml")
    assert "proc 'web'" in check, check
    assert where in check, check
    assert "NUL" in check, check
    assert check.splitlines()[0] == start.splitlines()[0]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("overseer.yml", '"web\\nserver":\n  cmd: sleep 1\n'),
        ("overseer.yml", '"\\e[2J\\e[31mweb":\n  cmd: sleep 1\n'),
        ("overseer.toml", '[procs."web\\u001b[31m"]\ncmd = "sleep 1"\n'),
        ("overseer.yml", 'web:\n  cmd: sleep 1\n  group: "g\\r\\e[1A"\n'),
    ],
    ids=["newline", "escape", "toml-escape", "group"],
)
async def test_unprintable_ids_are_refused(tmp_path: Path, name: str, text: str) -> None:
    write_text(tmp_path, name, text)
    check, _ = await refused(tmp_path, name)
    assert "\x1b" not in check, repr(check)
    assert "\r" not in check, repr(check)
    assert "printable" in check, check
    assert len(check.splitlines()) == 1, check


async def test_check_in_a_deleted_directory(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    write_text(gone, "overseer.yml", f"web:\n  cmd: {SLEEP_FOREVER!r}\n")
    code = f"""
        import json, os, subprocess, sys
        os.chdir({os.fspath(gone)!r})
        os.unlink("overseer.yml")
        os.rmdir({os.fspath(gone)!r})
        for command in (["check"], ["start", "--no-socket"], ["check", "-c", "x.yml"]):
            result = subprocess.run([{INSTALLED[0]!r}, *command], capture_output=True, text=True)
            print(json.dumps([result.returncode, result.stdout, result.stderr]))
    """
    with trio.fail_after(T):
        result = await trio.run_process(py(code), capture_stdout=True, check=True)
    answers = result.stdout.decode().splitlines()
    assert len(answers) == 3, answers
    for answer in answers:
        rc, out, err = json.loads(answer)
        assert (rc, out) == (2, ""), answer
        assert "the current directory does not exist any more" in err, answer
        assert "Traceback" not in err, answer
