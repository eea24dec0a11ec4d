"""``trio-overseer export systemd|supervisord``, checked with the real tools.

The systemd units go through ``systemd-analyze verify`` where it is
installed; the supervisord config is run by a real ``supervisord -n``
(the ``supervisor`` package of the test extra): the programs start with
the environment, directory and PORT of the export, and ``supervisorctl
stop`` takes down every process of each group, SIGKILL after the stop
timeout included.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from children import until
from cli_children import INSTALLED, PY, T, client, pid_alive, write_text

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the tests watch processes through /proc"
)

BIN = Path(sys.executable).parent
SEEN = """
import json, os, signal, sys, time
if "--stubborn" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("SEEN " + json.dumps({
    "argv": sys.argv[1:], "port": os.environ.get("PORT"), "cwd": os.getcwd(),
    "pid": os.getpid(), "greeting": os.environ.get("GREETING"),
}), flush=True)
time.sleep(3600)
"""

CONFIG = """
web:
  cmd: {py} seen.py --port=$PORT
  shell: true
  scale: 2
  retry: 3
piped:
  cmd: {py} seen.py piped | cat
  shell: true
  stop_signal: SIGINT
stubborn:
  cmd: [{pyj}, seen.py, --stubborn]
  stop_timeout: 1
  env: {{GREETING: "100% \\"quoted\\" $x"}}
"""


def write_project(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    app.mkdir()
    (app / "seen.py").write_text(SEEN)
    write_text(app, "overseer.yml", CONFIG.format(py=PY, pyj=json.dumps(PY)))
    write_text(app, ".env", "GREETING=hello\n")
    return app


async def export(app: Path, *args: str) -> str:
    rc, out, err = await client(app, "export", *args, tool=INSTALLED)
    assert rc == 0, err
    return out


async def test_systemd_units(tmp_path: Path) -> None:
    app = write_project(tmp_path)
    out = await export(app, "systemd", str(tmp_path / "units"), "-a", "demo")
    units = tmp_path / "units"
    names = sorted(p.name for p in units.iterdir())
    assert names == [
        "demo-piped.service",
        "demo-stubborn.service",
        "demo-web.1.service",
        "demo-web.2.service",
        "demo.target",
    ]
    assert out.count("wrote ") == 5
    web2 = (units / "demo-web.2.service").read_text()
    assert f"WorkingDirectory={app}\n" in web2
    assert 'Environment="GREETING=hello"\n' in web2
    assert 'Environment="PORT=5001"\n' in web2
    assert f'ExecStart="/bin/sh" "-c" "exec {PY} seen.py --port=$$PORT"\n' in web2
    for line in ("KillMode=control-group", "KillSignal=SIGTERM", "TimeoutStopSec=5"):
        assert line + "\n" in web2
    assert "Restart=on-failure\n" in web2
    assert "StartLimitBurst=4\n" in web2
    piped = (units / "demo-piped.service").read_text()
    assert "KillSignal=SIGINT\n" in piped
    assert "Restart=no\n" in piped
    stubborn = (units / "demo-stubborn.service").read_text()
    assert 'Environment="GREETING=100%% \\"quoted\\" $x"\n' in stubborn
    assert "TimeoutStopSec=1\n" in stubborn
    assert "Wants=demo-web.1.service demo-web.2.service" in (units / "demo.target").read_text()
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here: the units were not verified")
    with trio.fail_after(T):
        result = await trio.run_process(
            [analyze, "verify", *sorted(map(str, units.iterdir()))],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert (result.returncode, result.stderr) == (0, b""), result.stderr.decode()


def seen_in(log: Path) -> dict[str, object] | None:
    try:
        text = log.read_text()
    except FileNotFoundError:
        return None
    match = re.search(r"^SEEN (.*)$", text, re.MULTILINE)
    return json.loads(match[1]) if match else None


@pytest.mark.skipif(not (BIN / "supervisord").exists(), reason="supervisor is not installed")
async def test_supervisord_runs_the_export(tmp_path: Path) -> None:
    app = write_project(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    await export(app, "supervisord", str(tmp_path / "conf.d"), "-a", "demo", "-l", str(logs))
    conf = (tmp_path / "conf.d" / "demo.conf").read_text()
    assert "[group:demo]\nprograms=web.1,web.2,piped,stubborn\n" in conf
    assert "stopasgroup=true\nkillasgroup=true\n" in conf
    main = write_text(
        tmp_path,
        "supervisord.conf",
        f"""
        [unix_http_server]
        file={tmp_path}/sv.sock
        [supervisord]
        logfile={tmp_path}/supervisord.log
        pidfile={tmp_path}/supervisord.pid
        childlogdir={logs}
        [rpcinterface:supervisor]
        supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
        [supervisorctl]
        serverurl=unix://{tmp_path}/sv.sock
        [include]
        files={tmp_path}/conf.d/*.conf
        """,
    )
    ctl = [str(BIN / "supervisorctl"), "-c", str(main)]
    daemon = await trio.lowlevel.open_process(
        [str(BIN / "supervisord"), "-c", str(main), "-n"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ids = ("web.1", "web.2", "piped", "stubborn")
        await until(lambda: all(seen_in(logs / f"{id}.log") for id in ids), "programs")
        seen = {id: seen_in(logs / f"{id}.log") or {} for id in ids}
        assert seen["web.1"]["argv"] == ["--port=5000"]
        assert seen["web.1"]["port"] == "5000"
        assert seen["web.2"]["port"] == "5001"
        assert seen["piped"]["port"] == "5100"
        assert {s["cwd"] for s in seen.values()} == {str(app)}
        assert seen["web.1"]["greeting"] == "hello"
        assert seen["stubborn"]["greeting"] == '100% "quoted" $x'
        pids = [int(s["pid"]) for s in seen.values()]  # type: ignore[call-overload]
        with trio.fail_after(T):
            result = await trio.run_process([*ctl, "stop", "demo:*"], capture_stdout=True)
        assert b"stubborn: stopped" in result.stdout, result.stdout
        # Every process of every group is gone: the python behind `| cat` and
        # the one that ignores SIGTERM (SIGKILL after its stop timeout) too.
        assert not [pid for pid in pids if pid_alive(pid)]
    finally:
        with trio.CancelScope(shield=True):
            if daemon.returncode is None:
                daemon.terminate()
                with trio.move_on_after(T):
                    await daemon.wait()
            if daemon.returncode is None:
                daemon.kill()
                await daemon.wait()
    assert daemon.returncode == 0


async def test_export_errors(tmp_path: Path) -> None:
    app = write_project(tmp_path)
    write_text(app, "overseer.yml", "multi:\n  cmd: [python3, -c, 'import sys\n\n    print(1)']\n")
    rc, _, err = await client(app, "export", "supervisord", "out", tool=INSTALLED)
    assert rc == 2
    assert "proc 'multi': its command spans several lines" in err
    rc, _, err = await client(app, "export", "launchd", "out", tool=INSTALLED)
    assert rc == 2
    assert "invalid choice: 'launchd'" in err
    (app / "file").write_text("")
    rc, _, err = await client(app, "export", "systemd", "file/sub", tool=INSTALLED)
    assert rc == 2
    assert "export: cannot write to file/sub" in err
    assert os.path.isfile(app / "file")
