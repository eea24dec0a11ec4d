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
from ._defaults import DEFAULT_SOCKET, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from ._config import ProcSpec
    from ._project import Options, Project
    from ._start import ExitPolicy

__all__ = ["main"]

_STATUS_TIMEOUT = 10.0


class _UsageError(Exception):
    """Bad command line or config: print the message, exit 2."""


def _say(message: str) -> None:
    print(f"trio-overseer: {message}", file=sys.stderr, flush=True)


class _HideCannotStart(logging.Filter):
    """The library logs a proc that cannot start; our output has a line for it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "state", None) != "fatal"


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
        os.getcwd()
    except OSError:  # relative paths, and the default config file, mean nothing now
        raise _UsageError(
            "the current directory does not exist any more (was it deleted?); "
            "cd to an existing directory"
        ) from None
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
    from .._overseer import Overseer
    from ._config import describe
    from ._start import add_procs

    project = _load(_options(args, args.names))
    specs = project.specs
    # What `start` would refuse, `check` refuses: the same registration, nothing started.
    problems = add_procs(Overseer(handle_signals=False), specs)
    if problems:
        raise _UsageError("\n".join(problems))
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

    from ._client import is_running
    from ._control import ControlServer, ControlSocketError
    from ._printer import Printer, want_colour
    from ._start import Instance

    if args.names and not args.no_socket and is_running(args.socket):
        # `start web` while an instance runs here: ask it to start those procs.
        return _control_many(args.socket, "start", args.names)
    policy = _policy(args)
    if args.timestamp_format is not None and "%" not in args.timestamp_format:
        raise _UsageError(
            f"--timestamp-format {args.timestamp_format!r}: expected a strftime format "
            "such as '%H:%M:%S' or '%Y-%m-%dT%H:%M:%S.%f'"
        )
    options = _options(args, args.names)
    try:
        project = _load(options)
    except _UsageError as exc:
        raise _UsageError(f"{exc}\nnothing was started: fix the config file first") from None
    _warn(project)
    specs = list(project.specs)
    if not specs:
        raise _UsageError(f"{project.path}: every proc is scaled to 0: nothing to start")
    unknown = [
        name
        for name in sorted(policy.can_die)
        if not any(name in (spec.id, spec.type) for spec in specs)
    ]
    if unknown:
        known = ", ".join(dict.fromkeys(spec.type for spec in specs))
        raise _UsageError(f"--can-die: no proc {', '.join(map(repr, unknown))} (known: {known})")
    choice = "never" if args.json else args.color
    if hasattr(sys.stdout, "reconfigure"):  # never fail on what a terminal cannot show
        sys.stdout.reconfigure(errors="replace")

    def reloader() -> tuple[list[ProcSpec], tuple[str, ...]]:
        from ._project import load_project

        fresh = load_project(options)
        return list(fresh.specs), fresh.warnings

    server = None
    if not args.no_socket:
        try:
            server = ControlServer.bind(args.socket)
        except ControlSocketError as exc:
            raise _UsageError(str(exc)) from None
    try:
        printer = Printer(
            [spec.id for spec in specs],
            colour=want_colour(sys.stdout, choice=choice),
            json_lines=args.json,
            prefix=not args.no_prefix,
            timestamp_format=None if args.no_timestamp else args.timestamp_format or "%H:%M:%S",
        )
        instance = Instance(
            specs,
            out=sys.stdout,
            err=sys.stderr,
            server=server,
            policy=policy,
            printer=printer,
            reloader=reloader,
        )
        return trio.run(instance.run)
    finally:
        if server is not None:
            server.close()


def _policy(args: argparse.Namespace) -> ExitPolicy:
    from ._start import ExitPolicy

    can_die = frozenset(
        name.strip() for item in args.can_die or () for name in item.split(",") if name.strip()
    )
    exit_on_first = args.exit_on_first or bool(can_die)
    if exit_on_first and args.keep_running:
        option = "--exit-on-first" if args.exit_on_first else "--can-die"
        raise _UsageError(f"{option} and --keep-running contradict each other: choose one")
    return ExitPolicy(exit_on_first=exit_on_first, can_die=can_die, keep_running=args.keep_running)


def _cmd_export(args: argparse.Namespace) -> int:
    from ._export import app_name, render

    project = _load(_options(args))
    _warn(project)
    if not project.specs:
        raise _UsageError(f"{project.path}: every proc is scaled to 0: nothing to export")
    app = app_name(args.app or Path.cwd().name)
    try:
        files = render(args.format, project.specs, app=app, user=args.user, log_dir=args.log)
    except ValueError as exc:
        raise _UsageError(f"export {args.format}: {exc}") from None
    target = Path(args.location)
    try:
        target.mkdir(parents=True, exist_ok=True)
        for file in files:
            path = target / file.name
            path.write_text(file.text, encoding="utf-8")
            print(f"wrote {path}")
    except OSError as exc:
        raise _UsageError(f"export: cannot write to {target}: {exc.strerror or exc}") from None
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    from ._client import answer, format_status

    rows = answer(args.socket, {"cmd": "status"}, timeout=_STATUS_TIMEOUT)["procs"]
    if args.json:
        sys.stdout.write("".join(_json(row) + "\n" for row in rows))
    else:
        sys.stdout.write(format_status(rows))
    return EXIT_OK


def _names(args: argparse.Namespace, command: str) -> list[str]:
    """The ids and groups a control command addresses (``--group G`` is ``G:*``)."""
    names = list(args.ids) + [f"{group}:*" for group in args.group or ()]
    if not names:
        raise _UsageError(f"{command}: give one or more proc ids (or --group GROUP)")
    return names


def _control_many(socket: str, command: str, names: list[str], **extra: Any) -> int:
    from ._client import answer, summary

    reply = answer(socket, {"cmd": command, "ids": names, **extra})
    for row in reply["procs"]:
        if command == "signal":
            print(f"{row['id']}: sent {reply['signal']} to process group {row['PID']}")
        else:
            print(f"{row['id']}: {summary(row)}")
    return EXIT_OK


def _cmd_stop(args: argparse.Namespace) -> int:
    from ._client import answer, summary

    if args.all and (args.ids or args.group):
        raise _UsageError("stop: give proc ids or --all (not both)")
    if not args.all:
        return _control_many(args.socket, "stop", _names(args, "stop"))
    rows = answer(args.socket, {"cmd": "stop", "all": True})["procs"]
    for row in rows:
        print(f"{row['id']}: {summary(row)}")
    return EXIT_OK


def _cmd_restart(args: argparse.Namespace) -> int:
    return _control_many(args.socket, "restart", _names(args, "restart"))


def _cmd_signal(args: argparse.Namespace) -> int:
    from ._control import RequestError, parse_signal

    if not args.ids or (len(args.ids) == 1 and not args.group):
        raise _UsageError("signal: give one or more proc ids (or --group GROUP), then a signal")
    *ids, signal_text = args.ids
    try:
        sig = parse_signal(signal_text)
    except RequestError as exc:
        raise _UsageError(str(exc)) from None
    args.ids = ids
    return _control_many(args.socket, "signal", _names(args, "signal"), signal=sig)


def _cmd_reload(args: argparse.Namespace) -> int:
    from ._client import answer

    reply = answer(args.socket, {"cmd": "reload"})
    for warning in reply.get("warnings", ()):
        _say(f"warning: {warning}")
    for key in ("added", "removed", "changed", "unchanged"):
        if reply.get(key):
            print(f"{key}: {', '.join(reply[key])}")
    for error in reply.get("errors", ()):
        _say(f"reload: {error}")
    return EXIT_FAILED if reply.get("errors") else EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from ._procfile import SHELL

    argv = list(args.argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise _UsageError("run: give a command to run (trio-overseer run [OPTIONS] -- CMD ...)")
    project = _load(_options(args))
    _warn(project)
    env = {**os.environ, **project.env}
    if len(argv) == 1 and any(char in argv[0] for char in " \t;&|<>$`'\"*?()"):
        argv = [SHELL, "-c", argv[0]]  # one shell line, as in a Procfile
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        _say(f"run: cannot run {argv[0]!r}: {exc.strerror or exc}")
        return 127 if isinstance(exc, FileNotFoundError) else 126
    return EXIT_FAILED  # not reached: exec replaced this process


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
            default=DEFAULT_SOCKET,
            help=f"the control socket (default: ./{DEFAULT_SOCKET})",
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

    def colour_options(sub: argparse._ActionsContainer) -> None:
        sub.add_argument(
            "--color",
            choices=("auto", "always", "never"),
            default="auto",
            help="colour the output (default: auto, on a terminal without NO_COLOR set)",
        )
        sub.add_argument("--no-color", action="store_true", help="same as --color=never")

    sub = command("start", "run every proc of the config file until all have ended")
    sub.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="run only these procs; if an instance already runs here, ask it to start them",
    )
    config_option(sub)
    sub.add_argument("--only", metavar="ID,ID", help="run only these procs")
    policy = sub.add_argument_group("when the instance ends")
    policy.add_argument(
        "--exit-on-first",
        action="store_true",
        help="when a proc ends by itself, stop the others and exit with its exit code "
        "(honcho and foreman do)",
    )
    policy.add_argument(
        "--can-die",
        action="append",
        metavar="ID,...",
        help="these procs may end without stopping the others (implies --exit-on-first)",
    )
    policy.add_argument(
        "--keep-running",
        action="store_true",
        help="stay up when every proc has ended (status, start, restart still work) until "
        "stop --all or a signal",
    )
    output = sub.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="write JSON Lines for machines")
    output.add_argument("--no-prefix", action="store_true", help="print lines without prefix")
    output.add_argument("--no-timestamp", action="store_true", help="no time in the prefix")
    output.add_argument(
        "--timestamp-format",
        metavar="FORMAT",
        help="strftime format of the time (default %%H:%%M:%%S; %%f for microseconds)",
    )
    colour_options(output)
    socket_option(sub)
    sub.add_argument("--no-socket", action="store_true", help="do not listen on a control socket")
    sub.set_defaults(func=_cmd_start)

    sub = command(
        "run", "run one command with the project's environment (.env), exit with its status"
    )
    config_option(sub, scaling=False)
    sub.add_argument(
        "argv",
        nargs=argparse.REMAINDER,
        metavar="CMD",
        help="the command and its arguments (one argument: a shell line)",
    )
    sub.set_defaults(func=_cmd_run)

    sub = command("check", "validate the config file and show each proc's command")
    sub.add_argument("names", nargs="*", metavar="NAME", help="check only these procs")
    config_option(sub)
    sub.set_defaults(func=_cmd_check)

    sub = command("export", "write systemd units or a supervisord config for the procs")
    sub.add_argument("format", choices=("systemd", "supervisord"), help="the init system")
    sub.add_argument("location", metavar="DIR", help="where to write the files")
    config_option(sub)
    sub.add_argument("-a", "--app", metavar="APP", help="the app name (default: the directory's)")
    sub.add_argument("-u", "--user", metavar="USER", help="run the procs as USER")
    sub.add_argument("-l", "--log", metavar="DIR", help="supervisord: log files in DIR")
    sub.set_defaults(func=_cmd_export)

    sub = command("status", "show the procs of the running instance")
    sub.add_argument("--json", action="store_true", help="one JSON object per proc and line")
    socket_option(sub)
    sub.set_defaults(func=_cmd_status)

    ids_help = "proc ids, types (web for web.1, web.2), GROUP:* or patterns (web.*)"

    def group_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--group", "-g", action="append", metavar="GROUP", help="every proc of GROUP"
        )

    sub = command("stop", "stop procs (no restart), or every proc with --all")
    sub.add_argument("ids", nargs="*", metavar="ID", help=ids_help)
    group_option(sub)
    sub.add_argument("--all", action="store_true", help="stop every proc: the instance ends")
    socket_option(sub)
    sub.set_defaults(func=_cmd_stop)

    sub = command("restart", "stop procs if they run, then start them again")
    sub.add_argument("ids", nargs="*", metavar="ID", help=ids_help)
    group_option(sub)
    socket_option(sub)
    sub.set_defaults(func=_cmd_restart)

    sub = command("signal", "send a signal to the process groups of procs")
    sub.add_argument(
        "ids",
        nargs="+",
        metavar="ID... SIGNAL",
        help=f"{ids_help}; then a signal: a name (TERM, SIGUSR1) or a number",
    )
    group_option(sub)
    socket_option(sub)
    sub.set_defaults(func=_cmd_signal)

    sub = command(
        "reload",
        "re-read the config: start added procs, stop removed ones, restart changed ones",
    )
    socket_option(sub)
    sub.set_defaults(func=_cmd_reload)

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
        for line in str(exc).splitlines():
            _say(line)
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
