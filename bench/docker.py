"""Docker runtime benchmark: time to a ready head and to a joined worker, Ray in containers
against Ray run natively, on the same machine.

  native  a 2-node lab (n1 hosts, n2 joins), as in bench/host_join.py.
  docker  two agents with HOMEs of their own in the root namespace; their Ray runs in
          containers on one `--internal` Docker network made for the run (each container
          is a network namespace of its own, as each lab node is).

Both sides time the same commands the same way: `lanray-tui host --headless --detach` (it
returns once the head's state API lists the head ALIVE) and `lanray-tui join ADDRESS --token`
(once the head lists the worker ALIVE). Runs alternate between the runtimes. After each
join, the memory of the Ray processes of each node is read the same way for both runtimes
(the RSS of every process carrying the cluster's token, by network namespace), and for
the containers also as Docker counts it (the cgroup's usage less inactive page cache).

Needs root (the lab, dockerd) and the image of tests/images/build_ray_image.sh (built if
missing, about 90 s; nothing is pulled from a registry).

    python bench/docker.py [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from _common import LANRAY, ROOT, bench_lab, checked, die, median, on_node, token_file

# This file is bench/docker.py: with bench/ first on sys.path, `import docker` (the SDK, in
# the adapter) would find this script instead. _common is imported; bench/ can go.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

from lanray_tui.adapters import docker_engine  # noqa: E402


def sh(argv: list[str], timeout: float = 900) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
        die(f"{' '.join(argv[:3])} failed: {tail[0]}")
    return p.stdout.strip()


class DockerNode:
    """An agent in the root namespace with a HOME of its own and the docker runtime."""

    def __init__(self, base: Path, image: str, network: str) -> None:
        home = base / "home"
        for d in (home, base / "run"):
            d.mkdir(parents=True, mode=0o700)
        self.env = {
            **os.environ,
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local/share"),
            "XDG_STATE_HOME": str(home / ".local/state"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_RUNTIME_DIR": str(base / "run"),
            "LANRAY_NO_LAN": "1",  # the root namespace: never the real LAN
        }
        self.config = base / "config.yaml"
        self.config.write_text(
            json.dumps(
                {
                    "runtime": {"kind": "docker", "image": image, "docker_network": network},
                    "ray": {"node_ip": ""},
                    "lending": {"enabled": False},  # the other node's Ray is no owner
                }
            )
        )

    def lanray(self, *args: str, timeout: float = 300) -> str:
        p = subprocess.run(
            [*LANRAY, "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )
        if p.returncode != 0:
            tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
            die(f"docker node: lanray-tui {args[0]} failed: {tail[0]}")
        return p.stdout


def timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def ray_memory_by_netns(token: str) -> dict[int, int]:
    """RSS of the processes that carry ``token`` in their environment, by network namespace."""
    out: dict[int, int] = {}
    want = f"RAY_AUTH_TOKEN={token}".encode()
    for p in psutil.process_iter():
        try:
            with open(f"/proc/{p.pid}/environ", "rb") as f:
                if want not in f.read().split(b"\0"):
                    continue
            ns = os.stat(f"/proc/{p.pid}/ns/net").st_ino
            out[ns] = out.get(ns, 0) + p.memory_info().rss
        except (OSError, psutil.Error):
            continue
    return out


def netns_of_pid(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        die("this benchmark needs root (the lab and dockerd)")
    sh([str(ROOT / "scripts" / "dockerd.sh")])
    # the image's Ray and Python are this interpreter's (whatever venv runs the benchmark)
    build = [
        "env",
        f"PYTHON={sys.executable}",
        str(ROOT / "tests" / "images" / "build_ray_image.sh"),
    ]
    image = sh(build).splitlines()[-1]
    net = f"lanray-bench-{os.getpid()}"
    bridge = f"lrb{os.getpid() % 100000}"
    sh(
        [
            "docker",
            "network",
            "create",
            "--internal",
            "-o",
            f"com.docker.network.bridge.name={bridge}",
            net,
        ]
    )
    tmp = Path(tempfile.mkdtemp(prefix="lanray-bench-docker-"))
    times: dict[str, list[float]] = {
        k: [] for k in ("docker-head", "native-head", "docker-join", "native-join")
    }
    mem: dict[str, list[float]] = {
        k: [] for k in ("docker-head", "docker-worker", "native-head", "native-worker")
    }
    cgroup: dict[str, list[float]] = {"head": [], "worker": []}
    engine = docker_engine.connect()
    try:
        with bench_lab("bdk", 2) as lab:
            head_ip = lab.node("n1").address

            def native_run() -> None:
                times["native-head"].append(
                    timed(
                        lambda: checked(
                            on_node(lab, "n1", [*LANRAY, "host", "--headless", "--detach"]),
                            "native host",
                        )
                    )
                )
                token = checked(on_node(lab, "n1", [*LANRAY, "token"]), "token").strip()
                join = [
                    *LANRAY,
                    "join",
                    head_ip,
                    "--token-file",
                    token_file(lab, token),
                    "--headless",
                    "--detach",
                ]
                times["native-join"].append(
                    timed(lambda: checked(on_node(lab, "n2", join), "native join"))
                )
                by_ns = ray_memory_by_netns(token)
                for node, key in (("n1", "native-head"), ("n2", "native-worker")):
                    ns = netns_of_pid(lab.node(node).init_pid)
                    mem[key].append(by_ns.get(ns, 0) / 2**20)
                for node in ("n2", "n1"):
                    checked(on_node(lab, node, [*LANRAY, "leave"]), "native leave")

            def docker_run(i: int) -> None:
                host = DockerNode(tmp / f"h{i}", image, net)
                worker = DockerNode(tmp / f"w{i}", image, net)
                try:
                    times["docker-head"].append(
                        timed(lambda: host.lanray("host", "--headless", "--detach"))
                    )
                    st = json.loads(host.lanray("status", "--json"))
                    ip = st["agent"]["node_ip"]
                    token_path = tmp / f"token{i}"
                    token = host.lanray("token").strip()
                    token_path.write_text(token)
                    token_path.chmod(0o600)
                    times["docker-join"].append(
                        timed(
                            lambda: worker.lanray(
                                "join",
                                ip,
                                "--token-file",
                                str(token_path),
                                "--headless",
                                "--detach",
                            )
                        )
                    )
                    by_ns = ray_memory_by_netns(token)
                    for role in ("head", "worker"):
                        (c,) = engine.client.containers.list(
                            filters={"label": f"lanray.role={role}", "network": net}
                        )
                        ns = netns_of_pid(int(c.attrs["State"]["Pid"]))
                        mem[f"docker-{role}"].append(by_ns.get(ns, 0) / 2**20)
                        cgroup[role].append(engine.memory_bytes(c.id) / 2**20)
                finally:
                    worker.lanray("leave")
                    host.lanray("leave")

            for i in range(args.runs):
                if i % 2 == 0:
                    docker_run(i)
                    native_run()
                else:
                    native_run()
                    docker_run(i)
                print(
                    f"run {i + 1}/{args.runs}: "
                    + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
                    file=sys.stderr,
                )
    finally:
        for c in engine.client.containers.list(all=True, filters={"network": net}):
            c.remove(force=True)
        subprocess.run(["docker", "network", "rm", net], capture_output=True, timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: median(v) for k, v in times.items()}
    mib = {k: round(median(v)) for k, v in mem.items()}
    result = {
        "docker_host_ratio": round(med["docker-head"] / med["native-head"], 3),
        "docker_join_ratio": round(med["docker-join"] / med["native-join"], 3),
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "ray_rss_mib": mib,
        "container_cgroup_mib": {k: round(median(v)) for k, v in cgroup.items()},
        "image": image,
        "runs": args.runs,
    }
    print(
        f"head ready: docker {med['docker-head']:.2f} s vs native {med['native-head']:.2f} s"
        f"  -> ratio {result['docker_host_ratio']:.3f}"
    )
    print(
        f"worker joined: docker {med['docker-join']:.2f} s vs native {med['native-join']:.2f} s"
        f"  -> ratio {result['docker_join_ratio']:.3f}"
    )
    print(
        f"Ray RSS (MiB): head docker {mib['docker-head']} / native {mib['native-head']}, "
        f"worker docker {mib['docker-worker']} / native {mib['native-worker']}; "
        f"containers as Docker counts them: {result['container_cgroup_mib']}"
    )
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
