"""Issue 18 in the lab: the wheel, installed away from any checkout, hosts and joins a
cluster from '/', and a packaged sample job runs to SUCCEEDED."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import needs_root
from tests.helpers.labkit import LANRAY, node_env
from tests.helpers.wheel import build_wheel, install_wheel

pytestmark = needs_root
NAME = os.environ.get("LANRAY_TEST_LAB", "t")[:6] + "w"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    whl = build_wheel(tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("whl"))
    return install_wheel(whl, tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="module")
def wlab() -> Iterator[Any]:
    from lanray_tui.core import lab as labmod

    labmod.down(NAME)
    made = labmod.up(NAME, 2)
    try:
        yield made
    finally:
        labmod.down(NAME)


def installed(lab: Any, node: str, site: Path, *args: str, stdin: str | None = None,
              timeout: float = 240) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """The installed lanray-tui, run in ``node`` from '/'."""
    from lanray_tui.core import lab as labmod

    env = node_env({"PYTHONPATH": str(site)})
    cmd = labmod.exec_argv(lab, node, [*LANRAY, *args], cwd="/", env=env)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=stdin,
                          stdin=None if stdin is not None else subprocess.DEVNULL)  # fmt: skip


def test_the_installed_wheel_hosts_joins_and_runs_a_packaged_sample(wlab: Any, site: Path) -> None:
    where = installed(wlab, "n1", site, "--version")
    assert where.returncode == 0 and where.stdout.startswith("lanray-tui ")
    p = installed(wlab, "n1", site, "host", "--headless", "--detach")
    assert p.returncode == 0, p.stderr
    try:
        token = installed(wlab, "n1", site, "token").stdout.strip()
        head = wlab.node("n1").address
        p = installed(wlab, "n2", site, "join", head, "--token", "-", "--headless", "--detach",
                      stdin=token + "\n")  # fmt: skip
        assert p.returncode == 0, p.stderr
        p = installed(wlab, "n2", site, "samples", "--json")
        paths = {s["name"]: s["path"] for s in json.loads(p.stdout)["samples"]}
        assert paths["parallel_map"].startswith(str(site))  # the installed copy, not the repo
        p = installed(wlab, "n2", site, "submit", "sample_jobs/parallel_map.py", "--follow")
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr
        assert p.stdout.strip().splitlines()[-1].startswith("SUCCEEDED"), p.stdout[-2000:]
        status = json.loads(installed(wlab, "n1", site, "status", "--json").stdout)
        assert sum(1 for n in status["nodes"] if n["state"] == "ALIVE") == 2
    finally:
        for node in ("n2", "n1"):
            installed(wlab, node, site, "leave", timeout=120)
