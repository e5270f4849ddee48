"""A virtual LAN on one machine, for multi-node tests and benchmarks.

Each node of a lab is a network namespace (``lanray-NAME-nI``, one ``eth0`` with
``10.213.K.I/24`` and no default route), a PID namespace whose PID 1 is a reaper
(:mod:`lanray_tui.core.lab_init`), and its own HOME, XDG and temp dirs under
``/tmp/lanray-lab/NAME/nI``. All nodes hang off one bridge in ``lanray-NAME-br``, so they
reach each other by unicast and by broadcast to the subnet's broadcast address, and
nothing else. It needs root. ``lab.json`` in the lab's dir records what :func:`load`
returns; :func:`down` finds leftovers by name, so it also cleans up after a crash.

With ``cpus_per_node``, each node also runs on CPUs of its own (CPU affinity), as a
separate machine would: what its Ray does in the background then competes with its own
work only, not with the other nodes'.

This module builds and takes down labs and keeps their metadata; running commands in a
node is :mod:`lanray_tui.core.lab_exec`; the records, a node's dirs and the ``ip`` and
process plumbing are :mod:`lanray_tui.core.lab_model`. All public names are here.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil

from lanray_tui.core.lab_exec import NodeProcess, exec_argv, link, run
from lanray_tui.core.lab_model import (
    _NAME,
    _NETNS,
    Lab,
    LabError,
    LabNode,
    _check_name,
    _ip_batch,
    _kill,
    _lab_netns,
    _make_node_dirs,
    _netns_list,
    _one_line,
    _tool,
    _wait_gone,
    tools_needed,
)

__all__ = [
    "LAB_DIR",
    "MAX_NODES",
    "Lab",
    "LabError",
    "LabNode",
    "NodeProcess",
    "down",
    "exec_argv",
    "link",
    "list_labs",
    "load",
    "run",
    "up",
]

LAB_DIR = Path("/tmp/lanray-lab")
MAX_NODES = 50

_INIT_MODULE = "lanray_tui.core.lab_init"
# The init runs ``-m lanray_tui.core.lab_init`` with this on PYTHONPATH, so it finds the
# same package as the caller from any cwd, installed or not.
_PACKAGE_PARENT = Path(__file__).resolve().parents[2]
_INIT_TIMEOUT = 5.0
_KILL_TIMEOUT = 5.0
_NEED_ROOT = "the lab needs root (network and PID namespaces); run it as root"

# The `ip netns exec ... unshare` processes this process started: down() reaps them so
# they do not linger as zombies (or trigger ResourceWarnings) in a long-lived caller.
_launchers: dict[int, subprocess.Popen[bytes]] = {}


def up(name: str = "lab", nodes: int = 2, cpus_per_node: int = 0) -> Lab:
    """Bring up lab ``name`` with ``nodes`` nodes (n1..nN) and return it.

    ``cpus_per_node`` > 0 gives each node that many CPUs of its own, taken in turn from the
    CPUs this process may use (nodes share CPUs only when there are too few). On any
    failure it takes down what it made and raises :class:`LabError`.
    """
    _check_name(name)
    if not 1 <= nodes <= MAX_NODES:
        raise LabError(f"a lab has 1 to {MAX_NODES} nodes, not {nodes}")
    usable = sorted(os.sched_getaffinity(0))
    if not 0 <= cpus_per_node <= len(usable):
        raise LabError(
            f"a lab node has 0 (all) to {len(usable)} CPUs on this machine, not {cpus_per_node}"
        )
    if os.geteuid() != 0:
        raise LabError(_NEED_ROOT)
    tools = {tool: _tool(tool) for tool in tools_needed()}
    if _lab_netns(name) or (LAB_DIR / name).exists():
        raise LabError(f"lab {name!r} is already up (or left over); run: lanray-tui lab down")
    try:
        cpus = [
            tuple(
                sorted(
                    {usable[(i * cpus_per_node + j) % len(usable)] for j in range(cpus_per_node)}
                )
            )
            for i in range(nodes)
        ]
        return _build(name, nodes, cpus, tools["ip"], tools["unshare"])
    except BaseException as exc:
        with contextlib.suppress(Exception):
            down(name)
        if isinstance(exc, LabError) or not isinstance(exc, Exception):
            raise
        raise LabError(f"lab {name!r} did not come up: {_one_line(str(exc))}") from exc


def load(name: str = "lab") -> Lab:
    """The lab ``name`` as :func:`up` left it; :class:`LabError` if it is not up or broken."""
    _check_name(name)
    path = LAB_DIR / name / "lab.json"
    try:
        data = json.loads(path.read_text())
        lab = Lab(
            name=data["name"],
            subnet=data["subnet"],
            broadcast=data["broadcast"],
            bridge_netns=data["bridge_netns"],
            nodes=tuple(
                LabNode(
                    n["name"],
                    n["address"],
                    n["netns"],
                    int(n["init_pid"]),
                    Path(n["root"]),
                    tuple(int(c) for c in n.get("cpus", ())),
                )
                for n in data["nodes"]
            ),
        )
    except FileNotFoundError:
        raise LabError(f"lab {name!r} is not up; run: lanray-tui lab up") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        why = _one_line(str(exc))
        raise LabError(
            f"lab {name!r} has unreadable {path} ({why}); run: lanray-tui lab down"
        ) from exc
    for node in lab.nodes:
        if not _is_init(node.init_pid, node.netns):
            raise LabError(
                f"lab {name!r} is broken: node {node.name} lost its init; run: lanray-tui lab down"
            )
    return lab


def down(name: str = "lab") -> list[str]:
    """Take lab ``name`` down, whatever state it is in, and say what was removed.

    Kills every process in the lab's namespaces, deletes the namespaces and removes the
    lab's dir. It finds them by name, so it also works after a crash; a second call
    returns an empty list.
    """
    _check_name(name)
    namespaces = sorted(_lab_netns(name), key=lambda ns: (len(ns), ns))
    lab_dir = LAB_DIR / name
    if not namespaces and not lab_dir.exists():
        return []
    if os.geteuid() != 0:
        raise LabError(_NEED_ROOT)
    removed: list[str] = []
    inits, others = _lab_processes(name, namespaces)
    # SIGKILL to a node's init takes its whole PID namespace along; its parent, `unshare`,
    # then reaps it and exits. Killing `unshare` first would leave the init a zombie for
    # the host's PID 1, and not every PID 1 (in containers) reaps.
    _kill(inits)
    _wait_gone(inits, _KILL_TIMEOUT)
    _wait_gone(others, 0.5)  # most go with the inits
    _kill(others)
    _wait_gone(others, _KILL_TIMEOUT)
    for pid, launcher in list(_launchers.items()):
        if launcher.poll() is not None:
            del _launchers[pid]
    if inits or others:
        removed.append(f"{len(inits) + len(others)} processes")
    if namespaces:
        # -force: delete the rest even if one fails; what is left is reported below.
        _ip_batch(_tool("ip"), None, [f"netns del {ns}" for ns in namespaces], force=True)
        left = set(_lab_netns(name))
        removed += [f"netns {ns}" for ns in namespaces if ns not in left]
        if left:
            raise LabError(
                f"could not delete namespaces of lab {name!r}: {', '.join(sorted(left))}"
            )
    if lab_dir.exists():
        shutil.rmtree(lab_dir)
        removed.append(f"dir {lab_dir}")
    return removed


def list_labs() -> list[str]:
    """Names of the labs that are up, or that left namespaces or a dir behind."""
    names = {m.group(1) for ns in _netns_list() if (m := _NETNS.fullmatch(ns))}
    if LAB_DIR.is_dir():
        names.update(p.name for p in LAB_DIR.iterdir() if _NAME.fullmatch(p.name) and p.is_dir())
    return sorted(names)


def _build(name: str, nodes: int, cpus: list[tuple[int, ...]], ip: str, unshare: str) -> Lab:
    _ensure_lab_dir()
    lab_dir = LAB_DIR / name
    lab_dir.mkdir()
    k = _free_subnet()
    bridge_ns = f"lanray-{name}-br"
    names = [f"n{i}" for i in range(1, nodes + 1)]
    netns = {n: f"lanray-{name}-{n}" for n in names}
    address = {n: f"10.213.{k}.{i}" for i, n in enumerate(names, 1)}
    broadcast = f"10.213.{k}.255"

    _ip_batch(ip, None, [f"netns add {ns}" for ns in [bridge_ns, *netns.values()]])
    bridge = ["link set lo up", "link add br0 type bridge stp_state 0", "link set br0 up"]
    for n in names:
        bridge.append(f"link add {n} type veth peer name eth0 netns {netns[n]}")
        bridge.append(f"link set {n} master br0 up")
    _ip_batch(ip, bridge_ns, bridge)
    for n in names:
        eth0 = f"addr add {address[n]}/24 broadcast {broadcast} dev eth0"
        _ip_batch(ip, netns[n], ["link set lo up", eth0, "link set eth0 up"])

    roots = {n: lab_dir / n for n in names}
    for n in names:
        _make_node_dirs(roots[n])
    # Start every init first, then wait for them: the Python start-ups overlap.
    launchers = {n: _start_init(ip, unshare, netns[n], roots[n]) for n in names}
    cpus_of = dict(zip(names, cpus, strict=True))
    deadline = time.monotonic() + _INIT_TIMEOUT
    lab = Lab(
        name=name,
        subnet=f"10.213.{k}.0/24",
        broadcast=broadcast,
        bridge_netns=bridge_ns,
        nodes=tuple(
            LabNode(
                n,
                address[n],
                netns[n],
                _find_init(launchers[n], n, roots[n], deadline),
                roots[n],
                cpus_of[n],
            )
            for n in names
        ),
    )
    _write_metadata(lab, lab_dir / "lab.json")
    return lab


def _start_init(ip: str, unshare: str, netns: str, root: Path) -> subprocess.Popen[bytes]:
    init = [sys.executable, "-m", _INIT_MODULE, netns]
    # --uts: each node has its own host name (its node name), as separate machines would.
    argv = [ip, "netns", "exec", netns, unshare, "--pid", "--fork", "--mount-proc", "--uts"]
    argv += ["--kill-child", "--", *init]
    env = {"PATH": os.environ.get("PATH", os.defpath), "PYTHONPATH": str(_PACKAGE_PARENT)}
    # stdout is a pipe on which the init says it is ready (then it lets go of it); stderr
    # goes to a file, since a pipe there would stay open for as long as the node lives.
    with open(root / "init.log", "wb") as log:
        launcher = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd="/",
            env=env,
            start_new_session=True,
        )
    _launchers[launcher.pid] = launcher
    return launcher


def _find_init(launcher: subprocess.Popen[bytes], node: str, root: Path, deadline: float) -> int:
    """Wait for the init that ``launcher`` starts to say it is ready; return its host PID."""
    assert launcher.stdout is not None
    with launcher.stdout:
        ready = select.select([launcher.stdout], [], [], max(0.0, deadline - time.monotonic()))
        said = os.read(launcher.stdout.fileno(), 64) if ready[0] else None
    if said is None:
        raise LabError(f"node {node}: its init did not start within {_INIT_TIMEOUT:.0f} s")
    if said != b"ready\n":
        # EOF: the init died at start; its last words are in the log.
        launcher.wait(_INIT_TIMEOUT)
        log = (root / "init.log").read_text(errors="replace").strip()
        why = _one_line(log.splitlines()[-1]) if log else f"exit code {launcher.returncode}"
        raise LabError(f"node {node}: its init did not start: {why}")
    # `ip netns exec` became `unshare`, whose one child is the init.
    for child in psutil.Process(launcher.pid).children():
        if _init_netns(child.pid) is not None:
            return child.pid
    raise LabError(f"node {node}: its init said it was ready, then vanished")


def _is_init(pid: int, netns: str) -> bool:
    return _init_netns(pid) == netns


def _init_netns(pid: int) -> str | None:
    """The namespace that lab init ``pid`` was started for; None if ``pid`` is no lab init."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    return args[3] if args[1:3] == ["-m", _INIT_MODULE] and len(args) > 3 else None


def _write_metadata(lab: Lab, path: Path) -> None:
    data = {
        "name": lab.name,
        "subnet": lab.subnet,
        "broadcast": lab.broadcast,
        "bridge_netns": lab.bridge_netns,
        "nodes": [
            {
                "name": n.name,
                "address": n.address,
                "netns": n.netns,
                "init_pid": n.init_pid,
                "root": str(n.root),
                "cpus": list(n.cpus),
            }
            for n in lab.nodes
        ],
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _free_subnet() -> int:
    used = set()
    for meta in LAB_DIR.glob("*/lab.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, IndexError):
            used.add(int(json.loads(meta.read_text())["subnet"].split(".")[2]))
    for k in range(1, 251):
        if k not in used:
            return k
    raise LabError("no free subnet for another lab: 250 labs are up")


def _ensure_lab_dir() -> None:
    # /tmp is world-writable: refuse a LAB_DIR that someone else made (or a symlink), since
    # root writes into it and down() deletes in it.
    LAB_DIR.mkdir(mode=0o755, exist_ok=True)
    st = LAB_DIR.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        raise LabError(f"{LAB_DIR} is not a directory that only root can write; remove it")


def _lab_processes(
    name: str, namespaces: list[str]
) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """The lab's node inits, and every other process in the lab's network namespaces.

    Inits are found by their command line (which names their namespace), so they are found
    even if their namespace was deleted by hand, and a reused PID is never taken for one.
    """
    wanted = set()
    for ns in namespaces:
        with contextlib.suppress(OSError):
            st = os.stat(f"/run/netns/{ns}")
            wanted.add((st.st_dev, st.st_ino))
    inits, others = [], []
    for pid in psutil.pids():
        if pid == os.getpid():
            continue
        with contextlib.suppress(OSError, psutil.Error):
            init_of = _NETNS.fullmatch(_init_netns(pid) or "")
            if init_of and init_of.group(1) == name:
                inits.append(psutil.Process(pid))
                continue
            st = os.stat(f"/proc/{pid}/ns/net")
            if (st.st_dev, st.st_ino) in wanted:
                others.append(psutil.Process(pid))
    return inits, others
