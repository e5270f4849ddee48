"""The systemd unit: what it runs, where it goes, and that systemd accepts it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lanray_tui.core import service


def test_root_gets_a_system_unit_with_the_installing_environment(tmp_path: Path) -> None:
    env = {"HOME": "/root", "XDG_RUNTIME_DIR": "/run/user/0", "PATH": "/bin"}
    p = service.plan("host", tmp_path / "c.yaml", uid=0, environ=env, python="/opt/v/bin/python")
    assert p.path == Path("/etc/systemd/system/lanray-tui.service") and p.system
    text = p.text()
    assert f"ExecStart=/opt/v/bin/python -m lanray_tui --config {tmp_path}/c.yaml agent " \
           "--role host\n" in text  # fmt: skip
    assert 'Environment="HOME=/root"' in text and "PATH" not in text
    assert "Restart=on-failure" in text and "WantedBy=multi-user.target" in text
    assert p.systemctl == ["systemctl"]


def test_a_user_gets_a_user_unit(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    p = service.plan("worker", uid=1000, environ=env, python="/usr/bin/python3")
    assert p.path == tmp_path / "cfg/systemd/user/lanray-tui.service" and not p.system
    assert "--role worker" in p.text() and "WantedBy=default.target" in p.text()
    assert p.systemctl == ["systemctl", "--user"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
@pytest.mark.parametrize("role", ["host", "worker"])
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path, role: str) -> None:
    unit = tmp_path / "lanray-tui.service"
    unit.write_text(service.plan(role, uid=0, environ={"HOME": str(tmp_path)}).text())
    p = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "lanray-tui.service" not in p.stderr, p.stderr  # no warning about our unit


def lanray(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lanray_tui", *args], capture_output=True, text=True, timeout=60
    )


def test_service_commands_say_what_is_wrong_in_one_line() -> None:
    p = lanray("service", "install")
    assert p.returncode == 1 and "--host" in p.stderr and len(p.stderr.splitlines()) == 1
    p = lanray("service", "install", "--join")
    assert p.returncode == 1 and "no cluster to rejoin" in p.stderr
    p = lanray("service", "status")
    assert p.returncode == 1 and "no lanray-tui service is installed" in p.stdout
    p = lanray("service", "remove")
    assert p.returncode == 1 and len(p.stderr.splitlines()) == 1
    p = lanray("service", "install", "--host", "--print")
    assert p.returncode == 0 and p.stdout.startswith("[Unit]")
    if not Path("/run/systemd/system").is_dir():
        p = lanray("service", "install", "--host")
        assert p.returncode == 1 and "systemd is not running" in p.stderr
        assert len(p.stderr.splitlines()) == 1
