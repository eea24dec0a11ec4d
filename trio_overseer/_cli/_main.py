"""``trio-overseer``: the command line, parsed and dispatched to its commands.

Exit statuses: 0 success; 1 a proc failed (``start``) or a request failed
(control commands); 2 a usage or config error; 130 interrupted (``start``:
SIGINT, SIGTERM or SIGHUP; clients: Ctrl+C); 141 stdout closed (``start``).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._version import __version__

if TYPE_CHECKING:
    from ._project import Options, Project

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
_DEFAULT_SOCKET = ".trio-overseer.sock"
_STATUS_TIMEOUT = 10.0


class _UsageError(Exception):
    """Bad command line or config: print the message, exit 2."""


def _say(message: str) -> None:
    print(f"trio-overseer: {message}", file=sys.stderr, flush=True)


class _HideCannotStart(logging.Filter):
    """The library logs a proc that cannot start; our output has a line for it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("proc %r cannot start")


def _setup_logging() -> None:
    """The library's own warnings and errors go to stderr; proc lines do not."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("trio-overseer: %(message)s"))
    handler.addFilter(_HideCannotStart())
    log = logging.getLogger("trio_overseer")
    log.addHandler(handler)
    log.setLevel(logging.WARNING)  # also keeps the per-line INFO records of procs off
    log.propagate = False


# -- config ---------------------------------------------------------------------

# `-c web=2,worker=3`: honcho's concurrency, as opposed to `-c FILE`.
_CONCURRENCY = re.compile(r"\s*[^=,\s]+\s*=\s*\d+\s*(?:,\s*[^=,\s]+\s*=\s*\d+\s*)*")


def _options(args: argparse.Namespace, names: Sequence[str] = ()) -> Options:
    """The project options of the command line (see `_project_options`)."""
    from ._project import Options

    config: str | None = args.config
    concurrency: dict[str, int] = {}
    value: str | None = args.c_value
    if value is not None:
        looks = _CONCURRENCY.fullmatch(value) is not None
        if looks and Path(value).exists():
            raise _UsageError(
                f"-c {value}: ambiguous: a file of that name exists and it reads as "
                "concurrency; use -f FILE for the config file or -m NAME=N for concurrency"
            )
        if looks:
            concurrency.update(_concurrency(value, "-c"))
        elif config is not None:
            raise _UsageError(f"-c {value}: the config file is already given ({config})")
        else:
            config = value
    for spec in getattr(args, "concurrency", None) or ():
        concurrency.update(_concurrency(spec, "-m/--concurrency"))
    env_files = None
    if args.env is not None:
        env_files = tuple(name.strip() for name in args.env.split(",") if name.strip())
        if not env_files:
            raise _UsageError("-e: expected FILE[,FILE...]")
    port = getattr(args, "port", None)
    if port is not None and not 0 < port < 65536:
        raise _UsageError(f"-p/--port: expected a port number (1 to 65535), got {port}")
    wanted = list(names)
    only = getattr(args, "only", None)
    if only is not None:
        wanted += [name.strip() for name in only.split(",") if name.strip()]
        if not wanted:
            raise _UsageError("--only: expected ID[,ID...]")
    return Options(
        config=config,
        env_files=env_files,
        concurrency=concurrency,
        port=port,
        names=tuple(wanted),
    )


def _concurrency(text: str, option: str) -> dict[str, int]:
    from ._project import parse_concurrency

    try:
        return parse_concurrency(text)
    except ValueError as exc:
        raise _UsageError(f"{option} {text}: {exc}") from None


def _load(options: Options) -> Project:
    """The project of the options; `_UsageError` with the diagnosis if invalid."""
    try:
        from ._config import ConfigError
        from ._project import load_project
    except ImportError as exc:  # PyYAML is an optional dependency of the library
        raise _UsageError(
            f"the command-line tool needs PyYAML ({exc}); install it with "
            "pip install 'trio-overseer[cli]'"
        ) from None
    try:
        return load_project(options)
    except ConfigError as exc:
        raise _UsageError("\n".join(exc.problems)) from None


def _warn(project: Project) -> None:
    for warning in project.warnings:
        _say(f"warning: {warning}")


# -- commands -------------------------------------------------------------------


def _cmd_check(args: argparse.Namespace) -> int:
    from ._config import describe

    project = _load(_options(args, args.names))
    specs = project.specs
    lines = [f"{project.path}: {len(specs)} proc{'s' if len(specs) != 1 else ''}, valid"]
    if specs:
        width = max(len(spec.id) for spec in specs)
        for spec in specs:
            lines.append(f"  {spec.id.ljust(width)}  {describe(spec, hide=project.env)}")
    if project.env_files:
        names = ", ".join(project.env)
        lines.append(
            f"environment from {', '.join(map(str, project.env_files))}: "
            f"{len(project.env)} variable{'s' if len(project.env) != 1 else ''}"
            + (f" ({names})" if names else "")
        )
    notes = list(project.notes)
    if any(spec.script is not None for spec in specs):
        notes.insert(0, "each command is a shell line run by /bin/sh -c, as honcho and foreman do")
    if project.warnings:
        lines.append(f"{len(project.warnings)} warning{'s' if len(project.warnings) != 1 else ''}:")
        lines += [f"  {warning}" for warning in project.warnings]
    if notes:
        lines.append("notes:")
        lines += [f"  {note}" for note in notes]
    print("\n".join(lines))
    return EXIT_OK


def _cmd_start(args: argparse.Namespace) -> int:
    import trio

    from ._control import ControlServer, ControlSocketError
    from ._printer import want_colour
    from ._start import Instance

    try:
        project = _load(_options(args, args.names))
    except _UsageError as exc:
        raise _UsageError(f"{exc}\nnothing was started: fix the config file first") from None
    _warn(project)
    specs = list(project.specs)
    if not specs:
        raise _UsageError(f"{project.path}: every proc is scaled to 0: nothing to start")
    choice = "never" if args.json else args.color
    if hasattr(sys.stdout, "reconfigure"):  # never fail on what a terminal cannot show
        sys.stdout.reconfigure(errors="replace")
    server = None
    if not args.no_socket:
        try:
            server = ControlServer.bind(args.socket)
        except ControlSocketError as exc:
            raise _UsageError(str(exc)) from None
    try:
        instance = Instance(
            specs,
            out=sys.stdout,
            err=sys.stderr,
            colour=want_colour(sys.stdout, choice=choice),
            json_lines=args.json,
            server=server,
        )
        return trio.run(instance.run)
    finally:
        if server is not None:
            server.close()


def _cmd_status(args: argparse.Namespace) -> int:
    from ._client import answer, format_status

    rows = answer(args.socket, {"cmd": "status"}, timeout=_STATUS_TIMEOUT)["procs"]
    if args.json:
        sys.stdout.write("".join(_json(row) + "\n" for row in rows))
    else:
        sys.stdout.write(format_status(rows))
    return EXIT_OK


def _cmd_stop(args: argparse.Namespace) -> int:
    from ._client import answer, summary

    if args.all == (args.id is not None):
        raise _UsageError("stop: give a proc id or --all (not both)")
    if args.all:
        rows = answer(args.socket, {"cmd": "stop", "all": True})["procs"]
    else:
        rows = [answer(args.socket, {"cmd": "stop", "id": args.id})["proc"]]
    for row in rows:
        print(f"{row['id']}: {summary(row)}")
    return EXIT_OK


def _cmd_restart(args: argparse.Namespace) -> int:
    from ._client import answer, summary

    row = answer(args.socket, {"cmd": "restart", "id": args.id})["proc"]
    print(f"{row['id']}: {summary(row)}")
    return EXIT_OK


def _cmd_signal(args: argparse.Namespace) -> int:
    from ._client import answer
    from ._control import RequestError, parse_signal

    try:
        sig = parse_signal(args.signal)
    except RequestError as exc:
        raise _UsageError(str(exc)) from None
    reply = answer(args.socket, {"cmd": "signal", "id": args.id, "signal": sig})
    print(f"{args.id}: sent {reply['signal']} to process group {reply['proc']['PID']}")
    return EXIT_OK


def _cmd_logs(args: argparse.Namespace) -> int:
    from ._client import answer, print_logs

    if args.lines is not None and args.lines < 0:
        raise _UsageError("logs: --lines must be >= 0")
    rows = answer(args.socket, {"cmd": "status"}, timeout=_STATUS_TIMEOUT)["procs"]
    message = {"cmd": "logs", "id": args.id, "lines": args.lines, "follow": args.follow}
    ids = [row["id"] for row in rows]
    print_logs(args.socket, message, ids, json_lines=args.json, colour=args.color)
    return EXIT_OK


def _json(data: Any) -> str:
    import json

    return json.dumps(data)


# -- the parser -------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-overseer",
        description="Run and supervise the processes of a config file (overseer.yml, "
        "config.yml or Procfile), and control them from another terminal.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        return sub

    def socket_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--socket",
            metavar="PATH",
            default=_DEFAULT_SOCKET,
            help=f"the control socket (default: ./{_DEFAULT_SOCKET})",
        )

    def config_option(sub: argparse.ArgumentParser, *, scaling: bool = True) -> None:
        sub.add_argument(
            "-f",
            "--config",
            "--procfile",
            dest="config",
            metavar="FILE",
            help="config file (default: overseer.yml, overseer.yaml, overseer.toml, Procfile, "
            "then config.yml if it holds procs)",
        )
        sub.add_argument(
            "-c",
            dest="c_value",
            metavar="FILE|NAME=N,...",
            help="the config file, or concurrency as honcho's -c (web=2,worker=3)",
        )
        sub.add_argument(
            "-e",
            "--env",
            metavar="FILE[,FILE]",
            help="environment files, later ones win (default: .env, if present)",
        )
        sub.add_argument(
            "-d",
            "--root",
            "--app-root",
            dest="root",
            metavar="DIR",
            help="run as if started in DIR (config, env files, socket)",
        )
        if scaling:
            sub.add_argument(
                "-m",
                "--concurrency",
                "--formation",
                action="append",
                metavar="NAME=N,...",
                help="instances of each proc (all=N for every one); 0 runs none",
            )
            sub.add_argument(
                "-p",
                "--port",
                type=int,
                metavar="N",
                help="base port: PORT is N + 100 per proc, +1 per instance "
                "(default: PORT of the env files or the environment, else 5000)",
            )

    def colour_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--color",
            choices=("auto", "always", "never"),
            default="auto",
            help="colour the output (default: auto, on a terminal without NO_COLOR set)",
        )
        sub.add_argument("--no-color", action="store_true", help="same as --color=never")

    sub = command("start", "run every proc of the config file until all have ended")
    sub.add_argument("names", nargs="*", metavar="NAME", help="run only these procs")
    config_option(sub)
    sub.add_argument("--only", metavar="ID,ID", help="run only these procs")
    sub.add_argument("--json", action="store_true", help="write JSON Lines for machines")
    colour_options(sub)
    socket_option(sub)
    sub.add_argument("--no-socket", action="store_true", help="do not listen on a control socket")
    sub.set_defaults(func=_cmd_start)

    sub = command("check", "validate the config file and show each proc's command")
    sub.add_argument("names", nargs="*", metavar="NAME", help="check only these procs")
    config_option(sub)
    sub.set_defaults(func=_cmd_check)

    sub = command("status", "show the procs of the running instance")
    sub.add_argument("--json", action="store_true", help="one JSON object per proc and line")
    socket_option(sub)
    sub.set_defaults(func=_cmd_status)

    sub = command("stop", "stop a proc (no restart), or every proc with --all")
    sub.add_argument("id", nargs="?", metavar="ID")
    sub.add_argument("--all", action="store_true", help="stop every proc: the instance ends")
    socket_option(sub)
    sub.set_defaults(func=_cmd_stop)

    sub = command("restart", "stop a proc if it runs, then start it again")
    sub.add_argument("id", metavar="ID")
    socket_option(sub)
    sub.set_defaults(func=_cmd_restart)

    sub = command("signal", "send a signal to a proc's process group")
    sub.add_argument("id", metavar="ID")
    sub.add_argument("signal", metavar="SIGNAL", help="a name (TERM, SIGUSR1) or a number")
    socket_option(sub)
    sub.set_defaults(func=_cmd_signal)

    sub = command("logs", "show recent lines of one proc or of all")
    sub.add_argument("id", nargs="?", metavar="ID")
    sub.add_argument("-f", "--follow", action="store_true", help="keep showing new lines")
    sub.add_argument("-n", "--lines", type=int, metavar="N", help="only the last N lines")
    sub.add_argument("--json", action="store_true", help="write JSON Lines")
    colour_options(sub)
    socket_option(sub)
    sub.set_defaults(func=_cmd_logs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``trio-overseer`` command line; return the exit status."""
    _fill_closed_fds()
    if sys.stdout is None:  # started with stdout closed (>&-)
        _say("stdout is closed; redirect it instead (>/dev/null discards the output)")
        return EXIT_USAGE
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if getattr(args, "no_color", False):
        args.color = "never"
    _setup_logging()
    from ._client import ClientError

    try:
        root = getattr(args, "root", None)
        if root is not None:
            try:
                os.chdir(root)
            except OSError as exc:
                raise _UsageError(f"-d {root}: {exc.strerror or exc}") from None
        status: int = args.func(args)
        sys.stdout.flush()
    except _UsageError as exc:
        for line in str(exc).splitlines():
            _say(line)
        return EXIT_USAGE
    except ClientError as exc:
        _say(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_FAILED
    except OSError as exc:  # e.g. stdout is /dev/full
        if exc.filename is not None:  # not a write to stdout: a bug, keep its traceback
            raise
        _say(f"cannot write to stdout: {exc.strerror or exc}")
        _quiet_stdout()
        return EXIT_FAILED
    return status


def _fill_closed_fds() -> None:
    """Put /dev/null on a closed stdin, stdout or stderr.

    Otherwise the next file we open (the control socket) would get that
    number, and whatever writes to "stderr" would write into it.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: fd itself
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stderr is None:  # messages are lost, but go nowhere else
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 - lives as long as we do


def _quiet_stdout() -> None:
    """After EPIPE on stdout, keep the interpreter's last flush from complaining."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
