"""A detached agent's log is size-capped and rotated; in the foreground it goes to stdout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lanray_tui.core.paths import Paths

CHILD = """
import logging, sys
from lanray_tui.core.lifecycle import configure_agent_logging
from lanray_tui.core.paths import Paths
configure_agent_logging(Paths.from_env())
log = logging.getLogger("lanray.agent")
for i in range(int(sys.argv[1])):
    log.info("line %d %s", i, "x" * 200)
"""


def test_a_detached_agents_log_rotates_at_its_cap(isolated_home: Path) -> None:
    paths = Paths.from_env()
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    with open(paths.agent_log, "ab") as out:  # what spawn_agent and the fork do
        subprocess.run([sys.executable, "-c", CHILD, "22000"], stdout=out, check=True)
    size = paths.agent_log.stat().st_size
    rotated = paths.agent_log.with_name("agent.log.1")
    assert size <= 5 << 20 and rotated.is_file() and rotated.stat().st_size <= 5 << 20
    assert not paths.agent_log.with_name("agent.log.3").exists()  # two backups at most


def test_in_the_foreground_the_log_goes_to_stdout(isolated_home: Path) -> None:
    p = subprocess.run([sys.executable, "-c", CHILD, "3"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.count("lanray.agent: line") == 3
    assert not Paths.from_env().agent_log.exists()
