"""A lab node's owner coming back, and what the lab test and the benchmark measure of it.

A lab node has no keyboard to press. Its agent reads keyboard interrupts from the file that
``LANRAY_TEST_INTERRUPTS`` names, in the format of ``/proc/interrupts``, instead of the
machine's own: :func:`press_key` bumps the count, which the agent's input reader takes for
the owner's keystroke (the seam is the path, the reader is the real one).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from lanray_tui.adapters.system import INTERRUPTS_ENV

PROBE = Path(__file__).resolve().parents[1] / "drivers" / "placed_on.py"

#: n3's lending: the policy on, its input the only condition that matters (lab nodes share
#: one machine's CPUs, which would look like the owner at work), no lending again soon.
LENDING = """lending:
  enabled: true
  idle_minutes: {idle_minutes}
  max_owner_load: 1000
  resume_after_s: {resume_after_s}
  drain_deadline_s: {deadline}
"""

_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def owner_files(
    folder: Path, deadline_s: int, idle_minutes: float = 10, resume_after_s: float = 3600
) -> tuple[Path, Path, dict[str, str]]:
    """A config that lends while the owner is away and the owner's keyboard, in ``folder``;
    returns them and the environment for the node's agent. By default, once the owner is
    back the node is not lent again for the rest of a test."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o755)
    config = folder / "owner.yaml"
    config.write_text(
        LENDING.format(
            deadline=deadline_s, idle_minutes=idle_minutes, resume_after_s=resume_after_s
        )
    )
    keys = folder / "interrupts"
    _write_keys(keys, 1)
    return config, keys, {INTERRUPTS_ENV: str(keys)}


def _write_keys(path: Path, count: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"           CPU0\n  1:   {count}   IO-APIC   1-edge      i8042\n")
    tmp.chmod(0o644)
    tmp.replace(path)


def join_as_owned(host: Any, node: Any, folder: Path, deadline_s: int, **lending: float) -> Path:
    """``node`` leaves and joins ``host`` again lending 1 CPU with the lending policy on
    (:func:`owner_files`, ``lending`` its idle_minutes and resume_after_s); waits until the
    host lists it ALIVE. Returns its keyboard (for :func:`press_key`)."""
    from tests.helpers.labkit import agent_log, wait_for

    node.leave()
    config, keys, env = owner_files(folder, deadline_s, **lending)
    p = node.lanray(
        *("--config", str(config), "join", host.address, "--token", "-"),
        *("--headless", "--detach", "--cpus", "1"),
        input=host.token() + "\n",
        env=env,
        timeout=180,
    )
    assert p.returncode == 0, (p.stderr, agent_log(node).read_text()[-2000:])
    wait_for(lambda: alive_row(host, node.address), timeout=90, interval=1.0)
    return keys


def alive_row(host: Any, ip: str) -> dict[str, Any] | None:
    """The host's ALIVE row for the node at ``ip``, if any."""
    rows = [n for n in host.status()["nodes"] if n["ip"] == ip and n["state"] == "ALIVE"]
    return rows[0] if rows else None


def press_key(path: Path) -> float:
    """The owner presses a key: one more keyboard interrupt. Returns the wall time."""
    count = int(path.read_text().splitlines()[1].split()[1])
    at = time.time()
    _write_keys(path, count + 1)
    return at


def ray_titles(lab: Any, node: str) -> list[str]:
    """The Ray workers that run in ``node`` (titles ``ray::...``), read from its PID
    namespace's processes (a few milliseconds: one link and one small read each)."""
    want = os.readlink(f"/proc/{lab.node(node).init_pid}/ns/pid")
    titles = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{name}/ns/pid") != want:
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                title = f.read().split(b"\0", 1)[0].decode(errors="replace").strip()
        except OSError:
            continue
        if title.startswith("ray::"):
            titles.append(title)
    return titles


def wait_free(lab: Any, node: str, timeout: float) -> float | None:
    """Wait until no Ray worker runs in ``node``; the wall time then, or None."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not ray_titles(lab, node):
            return time.time()
        time.sleep(0.2)
    return None


def log_time(log: Path, needle: str, after: float) -> float | None:
    """The wall time of the first line of the agent's log that holds ``needle``, written
    at or after ``after`` (its timestamps are local time, to the millisecond)."""
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            m = _LOG_TIME.match(line)
            if not m or needle not in line:
                continue
            stamp = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
            at = stamp.timestamp() + int(m.group(2)) / 1000
            if at >= after - 0.001:
                return at
    return None


def placed_on(ip: str, run: Any) -> list[dict[str, Any]]:
    """The tasks and actors Ray placed on the node at ``ip``, with when each started, as
    the head's state API lists them (``run`` runs argv on the host's lab node)."""
    p = run([sys.executable, str(PROBE), ip])
    if p.returncode != 0:
        raise AssertionError(f"the task list of {ip}: {(p.stderr or p.stdout)[-500:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def started_after(tasks: list[dict[str, Any]], at: float) -> list[dict[str, Any]]:
    """The new work among ``tasks`` (tasks and actor creations, not the calls to actors
    that were there already) that started after ``at``."""
    kinds = ("NORMAL_TASK", "ACTOR_CREATION_TASK")
    return [t for t in tasks if t["type"] in kinds and t["start_s"] and t["start_s"] > at]
