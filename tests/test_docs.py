"""Every code block of README.md and docs/*.md runs as a user would paste it.

Each fenced block says what it is with its info string: ``python`` and ``sh``
(or ``bash``/``shell``) blocks are run; ``text`` (output samples), ``yaml``,
``toml`` and ``json`` blocks are data, checked only where a directive says
so.  A directive is an HTML comment on the line before the fence (invisible
on the rendered page), several separated by ``;``:

``<!-- docs-test: skip REASON -->``
    not run (install lines that need PyPI, commands that run until Ctrl+C);
    keep these few.
``<!-- docs-test: xfail REASON -->``
    run, and expected to fail (strict: a block that passes must lose it).
``<!-- docs-test: pytest -->``
    a ``python`` block that is a test module: run by pytest.
``<!-- docs-test: file NAME -->``
    the block is written to NAME for the later blocks of the same page.
``<!-- docs-test: config NAME -->``
    the same, and ``trio-overseer check -c NAME`` must accept it.
``<!-- docs-test: instance CONFIG -->``
    the block runs while ``trio-overseer start -c CONFIG`` runs beside it.
``<!-- docs-test: needs PROGRAM -->``
    skipped, saying so, where PROGRAM is not installed.

Blocks run in a temporary directory holding a copy of ``examples/``, with the
interpreter running these tests (and its venv's scripts) first on ``PATH``
and ``PYTHONUNBUFFERED`` unset, as on users' machines.  A ``python`` block
with a top-level ``await`` is pasted into Trio's REPL (``python -m trio``), as
the docs tell users to do: a blank line must end each top-level compound
statement, and none may stand inside one.
Whatever a block leaves running fails the test (the ``no_survivors`` check).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PY = sys.executable
RUN = {"python": "python", "py": "python", "sh": "sh", "bash": "sh", "shell": "sh"}
DATA = {"text", "yaml", "toml", "json"}
DIRECTIVES = {"skip", "xfail", "pytest", "file", "config", "instance", "needs"}
#: Generous: a block is a short example, but CI machines are busy.
TIMEOUT = 120.0

#: What Trio's REPL writes to stderr when a pasted line fails.
REPL_ERROR = re.compile(r"^Traceback \(most recent call last\)|^\w+(Error|Exception)\b", re.M)


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    directives: tuple[tuple[str, str], ...]

    def directive(self, name: str) -> str | None:
        return next((arg for key, arg in self.directives if key == name), None)

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*(\S*)")
_DIRECTIVE = re.compile(r"^<!--\s*docs-test:(.*?)-->\s*$")


def parse(doc: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, with their directives."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, lang = match.groups()
        start = i
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i].removeprefix(indent))
            i += 1
        i += 1  # the closing fence
        directives: list[tuple[str, str]] = []
        previous = lines[start - 1].strip() if start else ""
        if found := _DIRECTIVE.match(previous):
            for part in found.group(1).split(";"):
                key, _, arg = part.strip().partition(" ")
                directives.append((key, arg.strip()))
        blocks.append(Block(doc, start + 1, lang, "\n".join(body) + "\n", tuple(directives)))
    return blocks


BLOCKS = [block for doc in DOCS for block in parse(doc)]
RUNNABLE = [block for block in BLOCKS if block.lang in RUN]


def test_docs_found() -> None:
    assert ROOT / "README.md" in DOCS
    assert len(DOCS) > 1
    assert RUNNABLE


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_every_block_says_what_it_is(block: Block) -> None:
    assert block.lang in RUN or block.lang in DATA, (
        f"{block.id}: say what the block is with its info string: one of "
        f"{sorted(RUN)} (run) or {sorted(DATA)} (not run)"
    )
    for key, arg in block.directives:
        assert key in DIRECTIVES, f"{block.id}: unknown docs-test directive {key!r}"
        if key in {"skip", "xfail", "file", "config", "instance", "needs"}:
            assert arg, f"{block.id}: docs-test {key} needs an argument"


def test_install_lines_name_existing_extras() -> None:
    # Every `pip install 'trio-overseer[X]'` (or `-e '.[X]'`) in the docs
    # names an extra that the installed distribution provides.
    meta = importlib.metadata.metadata("trio-overseer")
    extras = set(meta.get_all("Provides-Extra") or [])
    install = re.compile(r"pip install (?:-e )?'?(?:trio-overseer|\.)\[([^\]]+)\]")
    found = []
    for doc in DOCS:
        for match in install.finditer(doc.read_text()):
            found.append(match.group(1))
            for extra in match.group(1).split(","):
                assert extra.strip() in extras, f"{doc.name}: no extra {extra!r}: {sorted(extras)}"
    assert "cli" in found


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["PATH"] = os.pathsep.join([str(Path(PY).parent), env.get("PATH", "")])
    return env


def run(argv: list[str], cwd: Path, what: str, paste: str | None = None) -> str:
    """Run `argv` in its own process group; fail with its output unless it exits 0.

    With `paste`, that text is its standard input (as pasted into a REPL),
    and any error the REPL reports fails too.
    """
    proc = subprocess.Popen(
        argv, cwd=cwd, env=environment(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if paste is None else subprocess.PIPE,
        stdin=subprocess.DEVNULL if paste is None else subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        output, errors = proc.communicate(paste, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, errors = proc.communicate()
        pytest.fail(f"{what} did not end within {TIMEOUT:.0f} s; output:\n{output}{errors or ''}")
    if proc.returncode != 0 or (paste is not None and REPL_ERROR.search(errors)):
        pytest.fail(f"{what} exited with status {proc.returncode}; output:\n{output}{errors or ''}")
    return output


def prepare(block: Block, cwd: Path) -> None:
    """The examples, and the files written by the page's earlier blocks."""
    shutil.copytree(ROOT / "examples", cwd / "examples")
    for earlier in BLOCKS:
        if earlier.doc == block.doc and earlier.line < block.line:
            name = earlier.directive("file") or earlier.directive("config")
            if name:
                (cwd / name).write_text(earlier.code)


@contextmanager
def instance(config: str, cwd: Path) -> Iterator[None]:
    """``trio-overseer start -c CONFIG`` running beside the block, stopped after it."""
    log = (cwd / "instance.log").open("w")
    proc = subprocess.Popen(
        [PY, "-m", "trio_overseer", "start", "-c", config, "--no-color"], cwd=cwd,
        env=environment(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + TIMEOUT
        while not _answers(cwd / ".trio-overseer.sock"):  # wait for the control socket
            assert proc.poll() is None, (cwd / "instance.log").read_text()
            assert time.monotonic() < deadline, "the instance never opened its control socket"
            time.sleep(0.05)
        yield
    finally:
        with suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
        return True


def _marks(block: Block) -> list[pytest.MarkDecorator]:
    if (reason := block.directive("skip")) is not None:
        return [pytest.mark.skip(reason=reason)]
    if (reason := block.directive("xfail")) is not None:
        return [pytest.mark.xfail(reason=reason, strict=True)]
    return []


@pytest.mark.parametrize(
    "block", [pytest.param(b, id=b.id, marks=_marks(b)) for b in RUNNABLE]
)  # fmt: skip
def test_block_runs(block: Block, tmp_path: Path) -> None:
    for program in (arg for key, arg in block.directives if key == "needs"):
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed")
    prepare(block, tmp_path)
    what = f"the {block.lang} block at {block.id}"
    paste = None
    if block.lang == "python":
        if block.directive("pytest") is not None:
            (tmp_path / "test_snippet.py").write_text(block.code)
            argv = [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_snippet.py"]
        else:
            (tmp_path / "snippet.py").write_text(block.code)
            try:
                compile(block.code, "snippet.py", "exec")
                argv = [PY, "snippet.py"]
            except SyntaxError:  # top-level await: pasted into Trio's REPL
                argv = [PY, "-m", "trio"]
                paste = block.code + "\n\n"
    else:
        (tmp_path / "snippet.sh").write_text(block.code)
        argv = ["bash", "-e", "-o", "pipefail", "snippet.sh"]
    config = block.directive("instance")
    with instance(config, tmp_path) if config else _nothing():
        run(argv, tmp_path, what, paste)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


CONFIGS = [b for b in BLOCKS if b.directive("config")]


@pytest.mark.parametrize("block", CONFIGS, ids=[b.id for b in CONFIGS])
def test_config_block_is_valid(block: Block, tmp_path: Path) -> None:
    prepare(block, tmp_path)
    name = block.directive("config")
    assert name
    (tmp_path / name).write_text(block.code)
    argv = [PY, "-m", "trio_overseer", "check", "-c", name]
    run(argv, tmp_path, f"trio-overseer check of {block.id}")


def test_the_layout_table_is_true() -> None:
    """docs/design.md's table of modules lists every module, and at run time each
    imports only modules below it (the one-way imports the table promises)."""
    import ast
    import re

    import trio_overseer

    design = (ROOT / "docs" / "design.md").read_text()
    table = design[design.index("| module | owns |") :].split("\n\n", 1)[0]
    order = [
        name
        for row in table.splitlines()[2:]
        for name in re.findall(r"`(_?[a-z_]+)/?`", row.split("|")[1])
    ]
    rank = {name: i for i, name in enumerate(order)}
    # The package under test: the checkout's, or the installed one when the suite
    # runs from outside the checkout (as .ci/run does with the built wheel).
    package = Path(trio_overseer.__file__).parent
    modules = {p.stem for p in package.glob("*.py")} - {"__init__", "__main__", "_version"}
    assert modules | {"_cli"} == set(order), "docs/design.md's layout table lists other modules"
    for name in sorted(modules):
        tree = ast.parse((package / f"{name}.py").read_text())
        typing_only = {
            id(node)
            for branch in ast.walk(tree)
            if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
            for node in ast.walk(branch)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and id(node) not in typing_only:
                for target in [node.module] if node.module else [a.name for a in node.names]:
                    target = target.split(".")[0]
                    if target in rank:
                        assert rank[target] > rank[name], f"{name} imports {target}, above it"
