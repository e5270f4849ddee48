"""Shared bits of the benchmarks: a lab for the run, and running code inside its nodes."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lanray_tui.core import lab as labmod  # noqa: E402

LANRAY = [sys.executable, "-m", "lanray_tui"]


def die(msg: str) -> None:
    print(f"{Path(sys.argv[0]).name}: error: {msg}", file=sys.stderr)
    raise SystemExit(1)


def compile_package() -> None:
    """Byte-compile lanray_tui, as pip does when it installs the package. A checkout run with
    PYTHONDONTWRITEBYTECODE set (this machine's environment sets it) would otherwise compile
    every module again on each command: tens of ms a command that no installed copy pays."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "lanray_tui")],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip


@contextmanager
def bench_lab(name: str, nodes: int, cpus_per_node: int = 0) -> Iterator[labmod.Lab]:
    """Lab ``name`` for the run, taken down after; with ``$LANRAY_TEST_LAB`` set, its name
    is prefixed with it (as the test suite's labs are), so two checkouts that run the same
    benchmark side by side do not take each other's lab down."""
    if os.geteuid() != 0:
        die("benchmarks run in the lab, which needs root")
    name = (os.environ.get("LANRAY_TEST_LAB", "") + name)[:8]
    compile_package()
    labmod.down(name)
    lab = labmod.up(name, nodes, cpus_per_node)
    try:
        yield lab
    finally:
        labmod.down(name)


def on_node(
    lab: labmod.Lab,
    node: str,
    argv: list[str],
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "LANRAY_NO_LAN"}
    base.update(env or {})
    cmd = labmod.exec_argv(lab, node, argv, cwd=str(ROOT), env=base)
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def settle(max_s: float = 30.0, busy_percent: float = 15.0) -> float:
    """Wait until this machine's CPUs are nearly idle (a node that just joined is still
    starting Ray's agents), at most ``max_s``; returns the seconds waited."""
    import psutil

    t0 = time.monotonic()
    while time.monotonic() - t0 < max_s:
        if psutil.cpu_percent(interval=1.0) < busy_percent:
            break
    return time.monotonic() - t0


def checked(p: subprocess.CompletedProcess[str], what: str) -> str:
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
        die(f"{what} failed: {tail[0]}")
    return p.stdout


def report(result: dict[str, Any], as_json: bool) -> None:
    """A benchmark's figures: one JSON object on the last line, or a key and value a line."""
    if as_json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:20} {v}")


def last_json(text: str) -> Any:
    return json.loads(text.strip().splitlines()[-1])


def token_file(lab: labmod.Lab, token: str) -> str:
    """The cluster token in a private file every lab node can read: a join takes it with
    --token-file, since a token on a command line is refused."""
    path = Path(lab.node("n1").root).parent / "cluster-token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return str(path)


def host_on_n1(lab: labmod.Lab, cpus: int) -> list[str]:
    """Start lanray-tui's host on n1, headless, lending ``cpus`` CPUs to Ray; returns the
    command that joins another node to it, lending as many."""
    lend = ["--headless", "--detach", "--cpus", str(cpus)]
    checked(on_node(lab, "n1", [*LANRAY, "host", *lend]), "host")
    token = checked(on_node(lab, "n1", [*LANRAY, "token"]), "token").strip()
    return [*LANRAY, "join", lab.node("n1").address, "--token-file", token_file(lab, token), *lend]


def result_of(output: str, what: str) -> dict[str, Any]:
    """A sample job's result: the last line starting with '{' in `submit --follow`'s output."""
    lines = output.strip().splitlines()
    if not lines or not lines[-1].startswith("SUCCEEDED"):
        print("\n".join(lines[-40:]), file=sys.stderr)  # the job's last words: why
        die(f"{what} did not succeed: {lines[-1] if lines else 'no output'}")
    for line in reversed(lines):
        if line.startswith("{"):
            return json.loads(line)  # type: ignore[no-any-return]
    die(f"{what} printed no result")
    raise AssertionError  # unreachable


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]


def stop_node_processes(lab: labmod.Lab, node: str, grace_s: float = 10.0) -> int:
    """End every process in one lab node but its init (bare Ray started there), by PID:
    never `ray stop`, which reaches Ray processes in every namespace of the machine."""
    import psutil

    n = lab.node(node)
    # the node's PID namespace, not its network one: the `unshare` that launched the
    # node's init sits in the node's network namespace too, and ending it ends the node
    want = os.stat(f"/proc/{n.init_pid}/ns/pid")
    procs = []
    for proc in psutil.process_iter():
        if proc.pid in (n.init_pid, os.getpid()):
            continue
        try:
            st = os.stat(f"/proc/{proc.pid}/ns/pid")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
            procs.append(proc)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return len(procs)
