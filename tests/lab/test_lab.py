"""The lab, with real namespaces and real processes in them (needs root)."""

from __future__ import annotations

import ipaddress
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from lanray_tui.core import lab as labmod
from lanray_tui.core.lab import Lab, LabError

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the lab needs root for network namespaces"
)

NAME = "tlab"
TIMEOUT = 10
# -S: the snippets need only the standard library, and start 3x faster without site.
PY = [sys.executable, "-S", "-c"]
ECHO_PORT = 47001
BROADCAST_PORT = 47002

ECHO_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(60)
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(1024)
    s.sendto(data, peer)
"""

UDP_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(float(sys.argv[3]))
s.sendto(b"ping", (sys.argv[1], int(sys.argv[2])))
try:
    data, peer = s.recvfrom(1024)
    print("reply", peer[0])
except TimeoutError:
    print("timeout")
"""

BROADCAST_RECEIVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("", int(sys.argv[1])))
s.settimeout(5)
print("ready", flush=True)
data, peer = s.recvfrom(1024)
print(data.decode(), peer[0], flush=True)
"""

BROADCAST_SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
for _ in range(5):
    s.sendto(b"hello", (sys.argv[1], int(sys.argv[2])))
    time.sleep(0.05)
"""

# Forks a child that forks `sleep` and exits at once, so `sleep` is orphaned; then watches
# the orphan: its new parent must be PID 1, and once it exits it must vanish (be reaped).
ORPHAN = """
import os, sys, time
r, w = os.pipe()
if os.fork() == 0:
    pid = os.fork()
    if pid == 0:
        os.execv(sys.argv[1], ["sleep", "0.2"])
    os.write(w, str(pid).encode())
    os._exit(0)
os.wait()
pid = int(os.read(r, 32))
ppid = [l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("PPid:")][0]
deadline = time.monotonic() + 3
while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
    time.sleep(0.02)
print(ppid, "reaped" if not os.path.exists(f"/proc/{pid}") else "zombie")
"""


def node_run(
    lab: Lab, node: str, argv: list[str], cwd: str | None = None, env: dict[str, str] | None = None
) -> str:
    """Run ``argv`` on ``node`` and return its stdout; fail on a non-zero exit."""
    result = subprocess.run(
        labmod.exec_argv(lab, node, argv, cwd=cwd, env=env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def start(lab: Lab, node: str, code: str, *args: str) -> subprocess.Popen[str]:
    """Start a Python snippet on ``node`` and wait for it to print "ready"."""
    proc = labmod.run(lab, node, [*PY, code, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert select.select([proc.stdout], [], [], TIMEOUT)[0], f"{node}: no 'ready'"
    assert proc.stdout.readline().strip() == "ready"
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(timeout=TIMEOUT)
    if proc.stdout:
        proc.stdout.close()


def udp(lab: Lab, node: str, to: str, timeout: float = 1.0) -> str:
    out = node_run(lab, node, [*PY, UDP_CLIENT, to, str(ECHO_PORT), str(timeout)])
    return out.strip()


def lab_netns(name: str) -> list[str]:
    out = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=TIMEOUT, check=True
    ).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"lanray-{name}-")]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    labmod.down(NAME)  # what a crashed earlier run left behind
    lab = labmod.up(NAME, nodes=3)
    try:
        yield lab
    finally:
        labmod.down(NAME)


@pytest.fixture(scope="module")
def echo(lab: Lab) -> Iterator[None]:
    proc = start(lab, "n2", ECHO_SERVER, str(ECHO_PORT))
    try:
        yield
    finally:
        stop(proc)


def test_addresses_in_one_subnet(lab: Lab) -> None:
    subnet = ipaddress.ip_network(lab.subnet)
    assert str(subnet.broadcast_address) == lab.broadcast
    for node in lab.nodes:
        out = node_run(lab, node.name, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
        print(node.name, out.strip())
        fields = out.split()
        interface = ipaddress.ip_interface(fields[fields.index("inet") + 1])
        assert str(interface.ip) == node.address
        assert interface.network == subnet
        assert fields[fields.index("brd") + 1] == lab.broadcast
        assert "default" not in node_run(lab, node.name, ["ip", "route"])
    assert len({n.address for n in lab.nodes}) == 3


def test_load_and_node_lookup(lab: Lab) -> None:
    assert labmod.load(NAME) == lab
    assert NAME in labmod.list_labs()
    assert lab.node("n2").address == lab.nodes[1].address
    with pytest.raises(LabError, match="no node 'n9' in lab 'tlab' \\(nodes: n1, n2, n3\\)"):
        lab.node("n9")


def test_udp_unicast(lab: Lab, echo: None) -> None:
    n2 = lab.node("n2").address
    assert udp(lab, "n1", n2) == f"reply {n2}"
    assert udp(lab, "n3", n2) == f"reply {n2}"


def test_udp_broadcast_reaches_every_other_node(lab: Lab) -> None:
    receivers = [start(lab, n, BROADCAST_RECEIVER, str(BROADCAST_PORT)) for n in ("n2", "n3")]
    try:
        node_run(lab, "n1", [*PY, BROADCAST_SENDER, lab.broadcast, str(BROADCAST_PORT)])
        for proc in receivers:
            out, _ = proc.communicate(timeout=TIMEOUT)
            assert out.split() == ["hello", lab.node("n1").address]
    finally:
        for proc in receivers:
            stop(proc)


def test_pid_namespace_is_own(lab: Lab) -> None:
    code = (
        "import json, os; print(json.dumps([sorted(p for p in os.listdir('/proc') if p.isdigit()),"
        " open('/proc/1/cmdline').read().split(chr(0))]))"
    )
    pids, init_cmdline = json.loads(node_run(lab, "n1", [*PY, code]))
    assert "1" in pids
    assert len(pids) <= 4, pids  # the init, this python, maybe nsenter's leftovers
    assert init_cmdline[1:3] == ["-m", "lanray_tui.core.lab_init"]
    status = Path(f"/proc/{lab.node('n1').init_pid}/status").read_text()
    nspid = next(line for line in status.splitlines() if line.startswith("NSpid:"))
    assert nspid.split()[-1] == "1"


def test_init_ignores_sigint_and_sighup(lab: Lab) -> None:
    init = psutil.Process(lab.node("n3").init_pid)
    init.send_signal(signal.SIGINT)
    init.send_signal(signal.SIGHUP)
    time.sleep(0.1)
    assert init.status() != psutil.STATUS_ZOMBIE
    assert node_run(lab, "n3", ["true"]) == ""


def test_orphans_are_reaped(lab: Lab) -> None:
    sleep = shutil.which("sleep")
    assert sleep
    assert node_run(lab, "n1", [*PY, ORPHAN, sleep]).split() == ["1", "reaped"]


def test_env_and_cwd(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = lab.node("n3")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LANRAY_LAB_TEST", "kept")
    names = [*node.env(), "LANRAY_LAB_TEST", "ONLY"]
    code = (
        "import json, os, sys; "
        "print(json.dumps([os.getcwd(), {k: os.environ.get(k) for k in sys.argv[1:]}]))"
    )
    cwd, env = json.loads(node_run(lab, "n3", [*PY, code, *names]))
    assert cwd == str(tmp_path)
    assert env == {**node.env(), "LANRAY_LAB_TEST": "kept", "ONLY": None}
    assert node.env()["HOME"].startswith(str(node.root))
    for path in node.env().values():
        assert Path(path).is_dir(), path
    assert Path(node.env()["XDG_RUNTIME_DIR"]).stat().st_mode & 0o777 == 0o700

    given = {"ONLY": "this", "HOME": "/nowhere"}
    cwd, env = json.loads(node_run(lab, "n3", [*PY, code, *names], cwd="/", env=given))
    assert cwd == "/"
    assert env == {**node.env(), "LANRAY_LAB_TEST": None, "ONLY": "this"}


def test_run_signals_reach_the_command(lab: Lab) -> None:
    proc = labmod.run(lab, "n1", ["sleep", "30"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + TIMEOUT
    children: list[psutil.Process] = []
    while not children and time.monotonic() < deadline:
        children = psutil.Process(proc.pid).children()
        time.sleep(0.01)
    assert children, "nsenter started nothing"
    proc.terminate()
    assert proc.wait(timeout=TIMEOUT) == -signal.SIGTERM  # nsenter dies as its command did
    # Gone, not a zombie: nsenter reaped it (an orphan would wait on the host's PID 1).
    assert not psutil.pid_exists(children[0].pid)


def test_link_down_and_up(lab: Lab, echo: None) -> None:
    n2 = lab.node("n2").address
    assert udp(lab, "n1", n2) == f"reply {n2}"
    labmod.link(lab, "n1", up=False)
    try:
        assert udp(lab, "n1", n2, timeout=0.3) == "timeout"
        assert udp(lab, "n3", n2) == f"reply {n2}"  # only n1's cable is out
    finally:
        labmod.link(lab, "n1", up=True)
    deadline = time.monotonic() + 5
    while (reply := udp(lab, "n1", n2, timeout=0.3)) != f"reply {n2}":
        assert time.monotonic() < deadline, reply


def test_up_twice_fails(lab: Lab) -> None:
    with pytest.raises(LabError, match="already up"):
        labmod.up(NAME)


@pytest.mark.parametrize("name", ["", "Lab", "toolongna", "a-b", "../x", "n 1"])
def test_bad_names(name: str) -> None:
    for call in (labmod.up, labmod.load, labmod.down):
        with pytest.raises(LabError, match="bad lab name"):
            call(name)


@pytest.mark.parametrize("nodes", [0, 51])
def test_bad_node_counts(nodes: int) -> None:
    with pytest.raises(LabError, match="1 to 50 nodes"):
        labmod.up("tlabn", nodes=nodes)
    assert not lab_netns("tlabn")


def test_load_missing() -> None:
    with pytest.raises(LabError, match="lab 'tlabm' is not up; run: lanray-tui lab up"):
        labmod.load("tlabm")


def test_down_removes_everything() -> None:
    name = "tlabd"
    labmod.down(name)
    lab = labmod.up(name, nodes=2)
    try:
        # A daemon: setsid + double fork, so only the node's init holds it.
        daemon = (
            "import os\n"
            "if os.fork() == 0:\n"
            " os.setsid()\n"
            " if os.fork() == 0:\n"
            "  null = os.open(os.devnull, os.O_RDWR)\n"
            "  for fd in (0, 1, 2): os.dup2(null, fd)\n"
            "  os.execvp('sleep', ['sleep', '37.5'])\n"
        )
        node_run(lab, "n2", [*PY, daemon])
        inits = [psutil.Process(n.init_pid) for n in lab.nodes]
        assert lab_netns(name)
    finally:
        removed = labmod.down(name)
    assert {f"netns lanray-{name}-{x}" for x in ("br", "n1", "n2")} <= set(removed)
    assert f"dir {labmod.LAB_DIR / name}" in removed
    assert not lab_netns(name)
    assert not (labmod.LAB_DIR / name).exists()
    assert not any(p.is_running() for p in inits)
    assert not [
        p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "37.5"]
    ]
    assert labmod.down(name) == []
    with pytest.raises(LabError, match="not up"):
        labmod.load(name)


def test_down_after_crash() -> None:
    name = "tlabc"
    labmod.down(name)
    lab = labmod.up(name, nodes=2)
    inits = [psutil.Process(n.init_pid) for n in lab.nodes]
    inits[0].send_signal(signal.SIGTERM)  # the init's own way out
    inits[1].send_signal(signal.SIGKILL)
    _, alive = psutil.wait_procs(inits, timeout=TIMEOUT)
    assert not alive
    (labmod.LAB_DIR / name / "lab.json").unlink()
    with pytest.raises(LabError, match="already up \\(or left over\\)"):
        labmod.up(name)
    assert name in labmod.list_labs()
    removed = labmod.down(name)
    assert {f"netns lanray-{name}-{x}" for x in ("br", "n1", "n2")} <= set(removed)
    assert not lab_netns(name)
    assert not (labmod.LAB_DIR / name).exists()
    assert name not in labmod.list_labs()


def test_up_failure_cleans_up(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "tlabf"
    labmod.down(name)
    monkeypatch.setattr(labmod, "_INIT_MODULE", "lanray_tui.core.no_such_module")
    with pytest.raises(LabError, match=r"init did not start: .*no_such_module"):
        labmod.up(name, nodes=2)
    assert not lab_netns(name)
    assert not (labmod.LAB_DIR / name).exists()


def test_nodes_with_cpus_of_their_own() -> None:
    name = "tlabp"
    labmod.down(name)
    usable = sorted(os.sched_getaffinity(0))
    lab = labmod.up(name, nodes=3, cpus_per_node=1)
    try:
        # Each node in turn takes the next CPU; with fewer CPUs than nodes they wrap round.
        want = [(usable[i % len(usable)],) for i in range(3)]
        assert [n.cpus for n in lab.nodes] == want
        assert [n.cpus for n in labmod.load(name).nodes] == want
        for node, cpus in zip(("n1", "n2", "n3"), want, strict=True):
            # What runs on a node, and what that starts, stays on the node's CPUs.
            out = node_run(
                lab,
                node,
                [
                    "sh",
                    "-c",
                    f"{sys.executable} -S -c 'import os; print(sorted(os.sched_getaffinity(0)))'",
                ],
            )
            assert out.strip() == str(list(cpus))
    finally:
        labmod.down(name)
    with pytest.raises(LabError, match=f"0 \\(all\\) to {len(usable)} CPUs"):
        labmod.up(name, nodes=2, cpus_per_node=len(usable) + 1)
    assert not lab_netns(name)
