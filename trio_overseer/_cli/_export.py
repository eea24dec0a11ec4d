"""``trio-overseer export systemd|supervisord DIR``: the procs as init-system files.

As honcho and foreman export a Procfile: one unit (systemd) or program
section (supervisord) per proc and instance, each with its command, working
directory, environment (the env files, ``PORT``, its own), stop signal and
stop timeout, after which the whole group is killed (systemd
``KillMode=control-group``; supervisord ``stopasgroup`` and
``killasgroup``), and a restart policy from ``retry``, ``restart`` and
``success_codes``.

What the init systems cannot say exactly:

* ``retry: N`` (N restarts, with backoff) becomes systemd's ``Restart=``
  (``on-failure``, or ``always`` for ``restart: always``) with at most N
  restarts an hour (``StartLimitBurst``; none for ``retry: forever``), and
  supervisord's ``autorestart=unexpected`` (``true`` for ``restart:
  always``), which restarts without limit; ``restart: never`` or no
  ``retry`` restarts nothing.  ``success_codes`` become systemd's
  ``SuccessExitStatus`` (0 always counts there) and supervisord's
  ``exitcodes``.  ``reset_after`` has no equivalent (systemd forgets
  restarts older than the hour of ``StartLimitIntervalSec``);
* a ``stop_signals`` ladder becomes its first signal and its total time
  (``KillSignal``/``TimeoutStopSec``; ``stopsignal``/``stopwaitsecs``):
  neither init system has ladders;
* ``requires`` becomes systemd's ``Requires=`` and ``After=`` (ordered by
  start, not by readiness: systemd waits for a ``Type=simple`` service to be
  forked, not to answer) and ``restart_with`` its ``PartOf=``; supervisord
  has no dependencies: its ``priority`` starts the required programs first
  and stops them last, without waiting for them;
* ``delay`` becomes ``ExecStartPre=/bin/sleep`` (systemd) and is left out
  for supervisord, which has no start delay;
* ``pty`` is left out: their programs write to the journal or a log file.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

import attrs

from .._requires import closure as requirement_closure
from .._signals import signal_name
from ._config import ProcSpec

__all__ = ["FORMATS", "ExportFile", "app_name", "render"]

FORMATS = ("systemd", "supervisord")
_DEFAULT_STOP_TIMEOUT = 5.0  # the Overseer's, used when a proc sets none
_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
_AUTORESTART = {"on-failure": "unexpected", "always": "true"}  # supervisord's
_MANY = 2**31 - 1  # supervisord's startretries for `retry: forever` (it takes an int)


@attrs.frozen
class ExportFile:
    """One file to write: its name in the export directory and its text."""

    name: str
    text: str


def app_name(text: str) -> str:
    """An app name usable in unit and program names (``my app`` -> ``my-app``)."""
    return _NAME.sub("-", text).strip("-.") or "app"


def render(
    fmt: str,
    specs: Sequence[ProcSpec],
    *,
    app: str,
    user: str | None = None,
    log_dir: str | None = None,
    directory: str | None = None,
) -> list[ExportFile]:
    """The files that run `specs` under the init system `fmt` (see `FORMATS`).

    A proc without a ``cwd`` runs in `directory` (default: the current one),
    where ``start`` would run it.
    """
    here = os.path.abspath(directory or os.getcwd())
    specs = [spec if spec.cwd else attrs.evolve(spec, cwd=here) for spec in specs]
    if fmt == "systemd":
        return _systemd(specs, app=app, user=user)
    if fmt == "supervisord":
        return [_supervisord(specs, app=app, user=user, log_dir=log_dir)]
    raise ValueError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")


def _seconds(value: float) -> str:
    return f"{value:g}"


def _restarts(spec: ProcSpec) -> bool:
    """Whether the proc is ever restarted."""
    return bool(spec.retry) and spec.restart != "never"


# -- systemd ------------------------------------------------------------------


def _systemd(specs: Sequence[ProcSpec], *, app: str, user: str | None) -> list[ExportFile]:
    units = [_unit(app, spec.id) for spec in specs]
    files = [
        ExportFile(
            f"{app}.target",
            "\n".join(
                [
                    "[Unit]",
                    f"Description={_unit_text(app)}: every process",
                    f"Wants={' '.join(units)}",
                    "",
                    "[Install]",
                    "WantedBy=multi-user.target",
                    "",
                ]
            ),
        )
    ]
    for spec, unit in zip(specs, units, strict=True):
        stop_timeout = _DEFAULT_STOP_TIMEOUT if spec.stop_timeout is None else spec.stop_timeout
        lines = [
            "[Unit]",
            f"Description={_unit_text(app)}: {_unit_text(spec.id)}"
            + (f" (group {_unit_text(spec.group)})" if spec.group else ""),
            "PartOf=" + " ".join([f"{app}.target", *(_unit(app, r) for r in spec.restart_with)]),
            "After=" + " ".join(["network.target", *(_unit(app, r) for r in spec.requires)]),
        ]
        if spec.requires:
            lines.append("Requires=" + " ".join(_unit(app, r) for r in spec.requires))
        if _restarts(spec) and math.isinf(spec.retry):
            lines.append("StartLimitIntervalSec=0")  # no limit
        elif _restarts(spec):
            lines += ["StartLimitIntervalSec=3600", f"StartLimitBurst={int(spec.retry) + 1}"]
        lines += ["", "[Service]", "Type=simple"]
        if user:
            lines.append(f"User={_unit_text(user)}")
        if spec.cwd:
            lines.append(f"WorkingDirectory={_unit_text(spec.cwd)}")
        lines += [f"Environment={_unit_quote(f'{k}={v}')}" for k, v in spec.env.items()]
        if spec.delay:
            lines.append(f"ExecStartPre=/bin/sleep {_seconds(spec.delay)}")
        lines += [
            "ExecStart=" + " ".join(_unit_quote(arg, exec_line=True) for arg in spec.argv),
            # The whole control group gets the stop signal, then SIGKILL: as
            # the Overseer signals the whole process group.
            "KillMode=control-group",
            f"KillSignal={signal_name(spec.stop_signal)}",
            f"TimeoutStopSec={_seconds(stop_timeout)}",
            "SendSIGKILL=yes",
            f"Restart={spec.restart if _restarts(spec) else 'no'}",
            "RestartSec=1",
        ]
        success = [str(code) for code in spec.success_codes if code != 0]
        if success:
            lines.append(f"SuccessExitStatus={' '.join(success)}")
        lines += [
            "",
            "[Install]",
            f"WantedBy={app}.target",
            "",
        ]
        files.append(ExportFile(unit, "\n".join(lines)))
    return files


def _unit(app: str, id: str) -> str:
    return f"{app}-{id}.service"


def _unit_text(text: str) -> str:
    """Free text in a unit file: specifiers escaped, on one line."""
    return text.replace("%", "%%").replace("\n", " ")


_C_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _unit_quote(text: str, *, exec_line: bool = False) -> str:
    """A double-quoted word of a unit file; ``$`` kept literal on exec lines."""
    quoted = "".join(_C_ESCAPES.get(char, char) for char in text).replace("%", "%%")
    if exec_line:
        quoted = quoted.replace("$", "$$")
    return f'"{quoted}"'


# -- supervisord ----------------------------------------------------------------


def _supervisord(
    specs: Sequence[ProcSpec], *, app: str, user: str | None, log_dir: str | None
) -> ExportFile:
    sections = [f"[group:{app}]\nprograms={','.join(spec.id for spec in specs)}\n"]
    levels = _levels(specs)
    for spec in specs:
        for what, text in [("command", arg) for arg in spec.argv] + [
            (f"variable {name}", value) for name, value in spec.env.items()
        ]:
            if "\n" in text or "\r" in text:
                raise ValueError(
                    f"proc {spec.id!r}: its {what} spans several lines, which supervisord's "
                    "config cannot hold; put it in a script, or export to systemd"
                )
        stop_timeout = _DEFAULT_STOP_TIMEOUT if spec.stop_timeout is None else spec.stop_timeout
        lines = [
            f"[program:{spec.id}]",
            "command=" + _ini(" ".join(shlex.quote(arg) for arg in spec.argv)),
        ]
        if spec.cwd:
            lines.append(f"directory={_ini(spec.cwd)}")
        if spec.env:
            pairs = ",".join(
                f"{name}={_env_value(spec.id, name, value)}" for name, value in spec.env.items()
            )
            lines.append(f"environment={_ini(pairs)}")
        if user:
            lines.append(f"user={_ini(user)}")
        lines += [
            "autostart=true",
            "startsecs=0",
            f"autorestart={_AUTORESTART[spec.restart] if _restarts(spec) else 'false'}",
            f"exitcodes={','.join(map(str, spec.success_codes))}",
            f"startretries={_MANY if math.isinf(spec.retry) else int(spec.retry)}",
            f"stopsignal={signal_name(spec.stop_signal).removeprefix('SIG')}",
            f"stopwaitsecs={max(1, round(stop_timeout))}",
            *([f"priority={100 * levels[spec.id]}"] if levels else []),
            # The whole process group gets the stop signal, and SIGKILL.
            "stopasgroup=true",
            "killasgroup=true",
        ]
        if log_dir:
            base = str(Path(log_dir) / spec.id)
            lines += [f"stdout_logfile={_ini(base)}.log", f"stderr_logfile={_ini(base)}.error.log"]
        sections.append("\n".join(lines) + "\n")
    return ExportFile(f"{app}.conf", "\n".join(sections))


def _levels(specs: Sequence[ProcSpec]) -> dict[str, int]:
    """supervisord's start order for `requires`: 1 for a proc that requires
    nothing, one more than its deepest requirement otherwise ({} without any)."""
    if not any(spec.requires for spec in specs):
        return {}
    graph = {spec.id: spec.requires for spec in specs}
    levels: dict[str, int] = {}
    for id in requirement_closure(graph, list(graph)):  # requirements first
        levels[id] = 1 + max((levels.get(r, 0) for r in graph[id]), default=0)
    return levels


def _ini(text: str) -> str:
    """A value in supervisord's ini file (one line): ``%`` escaped."""
    return text.replace("%", "%%")


def _env_value(proc: str, name: str, value: str) -> str:
    """One value of supervisord's ``environment=``, quoted as it reads them.

    supervisord splits the pairs with a non-POSIX `shlex` (no escapes inside
    quotes) and strips every quote character from both ends of a value, so a
    value is quoted with the quote it does not hold, and one that holds both,
    or begins or ends with a quote, cannot be written.
    """
    quote = '"' if '"' not in value else "'" if "'" not in value else None
    if quote is None or (value and (value[0] in "'\"" or value[-1] in "'\"")):
        raise ValueError(
            f"proc {proc!r}: variable {name} = {value!r} cannot be written in supervisord's "
            "environment= (it holds both quotes, or begins or ends with one)"
        )
    return f"{quote}{value}{quote}"
