"""The real lanray-tui in tmux, inside the lab: host on n1, join on n2 with the code.

Reads the screen with `tmux capture-pane`, as a person over SSH would see it.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import needs_root
from tests.helpers.labkit import LANRAY, Node, node_env

pytestmark = [
    needs_root,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux"),
]
SOCKET = "lanray-e2e"


def tmux(*args: str) -> str:
    return subprocess.run(
        ["tmux", "-L", SOCKET, *args], capture_output=True, text=True, timeout=30, check=True
    ).stdout


def screen(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session)


def wait_screen(session: str, *needles: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = screen(session)
        if all(n in text for n in needles):
            return text
        time.sleep(0.3)
    raise AssertionError(f"{session}: {needles} not on screen after {timeout} s:\n{text}")


def press(session: str, key: str, *needles: str, timeout: float = 60) -> str:
    """Press ``key`` once and wait for ``needles`` to show."""
    tmux("send-keys", "-t", session, key)
    return wait_screen(session, *needles, timeout=timeout)


def field_holding(text: str, typed: str) -> str | None:
    """The label of the new-job form's field that shows ``typed`` (a field is one line:
    its label, then its text)."""
    for line in text.splitlines():
        if typed in line:
            before = line[: line.index(typed)]
            for label in ("Script", "Command", "Args", "Name"):
                if label in before:
                    return label
    return None


def queue_command_from_form(session: str, command: str) -> None:
    """Open the new-job form from the jobs pane and, as soon as it shows, Tab past its list
    and script field, type ``command`` once and queue it."""
    press(session, "4", "jobs:")
    press(session, "n", "Another script", "Name", "Queue")
    tmux("send-keys", "-t", session, "Tab", "Tab")
    tmux("send-keys", "-t", session, "-l", command)
    text = wait_screen(session, command, timeout=30)
    assert field_holding(text, command) == "Command", text
    tmux("send-keys", "-t", session, "C-s")


@pytest.fixture(scope="module")
def two(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    from lanray_tui.core import lab as labmod

    labmod.down("tx")
    lab = labmod.up("tx", 2)
    nodes = {n: Node(lab, n) for n in ("n1", "n2")}
    try:
        yield nodes
    finally:
        subprocess.run(["tmux", "-L", SOCKET, "kill-server"], capture_output=True, timeout=30)
        for n in ("n2", "n1"):
            nodes[n].leave()
        labmod.down("tx")


def start_tui(node: Node, session: str, size: tuple[int, int], term: str) -> None:
    from lanray_tui.core import lab as labmod

    cmd = labmod.exec_argv(node.lab, node.name, LANRAY, env=node_env({"TERM": term}))
    width, height = (str(n) for n in size)
    tmux("new-session", "-d", "-s", session, "-x", width, "-y", height, shlex.join(cmd))


def test_host_then_join_with_the_code_in_tmux(two: dict[str, Any]) -> None:
    n1, n2 = two["n1"], two["n2"]
    start_tui(n1, "host", (100, 32), "xterm-256color")
    wait_screen("host", "Host a cluster", "Join a cluster")
    tmux("send-keys", "-t", "host", "h")
    wait_screen("host", "CPUs")
    tmux("send-keys", "-t", "host", "Enter")
    text = wait_screen("host", "Nodes", "Logs", "ALIVE", n1.address, timeout=120)
    assert "Jobs" in text

    start_tui(n2, "join", (80, 24), "linux")  # the smallest screen, a Linux console
    wait_screen("join", "Host a cluster")
    tmux("send-keys", "-t", "join", "j")
    wait_screen("join", n1.address, timeout=30)
    code = n1.lanray("code", check=True).stdout.split()[-1]
    tmux("send-keys", "-t", "join", "Enter")
    time.sleep(1)
    tmux("send-keys", "-t", "join", "-l", code)
    tmux("send-keys", "-t", "join", "Enter")
    text = wait_screen("host", n2.address, timeout=120)
    deadline = time.monotonic() + 60
    while text.count("ALIVE") < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
        text = screen("host")
    assert text.count("ALIVE") >= 2, text
    assert n2.agent_running()


def test_a_job_queued_from_the_joined_tui_runs_on_the_host_queue(two: dict[str, Any]) -> None:
    """After the join above: n2's jobs pane queues a command; n1's pane shows it end."""
    n1, n2 = two["n1"], two["n2"]
    if not n2.agent_running():
        pytest.skip("needs the cluster the previous test made")
    wait_screen("join", "Nodes", timeout=60)
    queue_command_from_form("join", "python -c 'print(6 * 7)'")
    wait_screen("join", "queued j-", timeout=30)
    jobs = json.loads(n1.lanray("jobs", "--json", check=True).stdout)["jobs"]
    assert len(jobs) == 1 and jobs[0]["entrypoint"] == "python -c 'print(6 * 7)'"
    press("host", "4", jobs[0]["id"])
    wait_screen("host", jobs[0]["id"], "SUCCEEDED", timeout=120)
    tmux("send-keys", "-t", "host", "Enter")  # details: its log
    wait_screen("host", "42", "exit code 0", timeout=60)
