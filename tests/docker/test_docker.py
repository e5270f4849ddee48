"""The docker runtime, against a real dockerd and a Ray image built here (no registry).

Two agents with separate HOMEs run in the root namespace (plain subprocesses, not the lab:
a lab node would reach the same dockerd anyway) and put Ray in containers on one
``--internal`` Docker network made for the session, which has no route out. The failure
paths are real too: dockerd stopped, an image that cannot be pulled, a container that exits
at start, a user without access to the socket, no Docker at all. Only the GPU is faked, at
the NVML adapter.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lanray_tui.adapters import docker_engine
from lanray_tui.adapters.ray_process import RaySpec
from lanray_tui.core import config, runtime
from lanray_tui.core.cluster_ca import NodeTls
from lanray_tui.core.control import ControlClient
from lanray_tui.core.errors import LanrayError
from lanray_tui.core.protocol import LogsRequest
from tests.conftest import ROOT
from tests.helpers.labkit import wait_for

REPO = Path(__file__).resolve().parents[2]
LANRAY = [sys.executable, "-m", "lanray_tui"]
HINT = "use runtime.kind: native"
PORTS = {
    k[4:]: v
    for k, v in config.read_file(config.DEFAULT_FILE).items()
    if k.startswith("ray.") and k.endswith("_port")
}


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    p = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {p.stderr.strip()}")
    return p.stdout.strip()


def spec(**kw: Any) -> RaySpec:
    base: dict[str, Any] = {
        "head": True,
        "node_ip": "10.0.0.5",
        "temp_dir": Path("/home/me/.cache/ray"),
        "ports": PORTS,
    }
    base.update(kw)
    return RaySpec(**base)


# ----- without Docker: the pieces -----------------------------------------------------------


def test_container_command_reuses_the_spec_with_the_containers_ray_and_paths() -> None:
    launcher = runtime.container_command(spec(), host_network=True)
    assert launcher[:2] == ["python3", "-c"]  # it writes Ray's TLS files first
    argv = launcher[3:]
    assert argv[:4] == ["ray", "start", "--block", "--disable-usage-stats"]
    assert argv[argv.index("--temp-dir") + 1] == "/tmp/ray"
    assert argv[argv.index("--node-ip-address") + 1] == "10.0.0.5"
    assert argv[argv.index("--dashboard-host") + 1] == "127.0.0.1"
    own = runtime.container_command(spec(), host_network=False)
    assert own[:2] == ["python3", "-c"]
    ray = own[3:]
    assert ray[0] == "ray" and runtime.NODE_IP_SLOT in ray
    assert ray[ray.index("--node-ip-address") + 1] == runtime.NODE_IP_SLOT
    assert "10.0.0.5" not in ray


PEMS = {"RAY_TLS_SERVER_CERT": b"cert", "RAY_TLS_SERVER_KEY": b"key", "RAY_TLS_CA_CERT": b"ca"}


def test_adoption_digest_changes_with_what_the_container_would_run() -> None:
    cmd = runtime.container_command(spec(), host_network=True)
    d = runtime.config_digest("img:1", "host", cmd, (), "t" * 64, PEMS)
    assert d == runtime.config_digest("img:1", "host", cmd, (), "t" * 64, dict(PEMS))
    assert d != runtime.config_digest("img:2", "host", cmd, (), "t" * 64, PEMS)
    assert d != runtime.config_digest("img:1", "net", cmd, (), "t" * 64, PEMS)
    assert d != runtime.config_digest("img:1", "host", cmd, ("GPU-a",), "t" * 64, PEMS)
    assert d != runtime.config_digest("img:1", "host", cmd, (), "u" * 64, PEMS)
    for var in PEMS:  # a new certificate, key or CA: a new container
        other = {**PEMS, var: b"renewed"}
        assert d != runtime.config_digest("img:1", "host", cmd, (), "t" * 64, other)


def test_the_launcher_writes_rays_tls_files_and_hides_the_pems(tmp_path: Path) -> None:
    env = runtime.container_tls_env(PEMS)
    assert env["RAY_USE_TLS"] == "1"
    assert env["RAY_TLS_SERVER_KEY"] == f"{runtime.CONTAINER_TLS_DIR}/node.key"
    # the same launcher, with the files under tmp_path and Python instead of ray
    local = {
        k: str(tmp_path / "tls" / Path(v).name) for k, v in env.items() if k.startswith("RAY_TLS")
    }
    pems = {k: v for k, v in env.items() if k.startswith(runtime.PEM_PREFIX)}
    show = "import json, os; print(json.dumps(sorted(os.environ)))"
    launcher = runtime.container_command(spec(), host_network=True)[:3]
    p = subprocess.run(
        [sys.executable, *launcher[1:], sys.executable, "-c", show],
        env={**os.environ, **local, **pems},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 0, p.stderr
    seen = json.loads(p.stdout)
    assert not [k for k in seen if k.startswith(runtime.PEM_PREFIX)]  # not in Ray's env
    for var, content in PEMS.items():
        path = Path(local[var])
        assert path.read_bytes() == content and path.stat().st_mode & 0o777 == 0o600


@pytest.fixture()
def tls_dir(tmp_path: Path) -> Path:
    """A node's certificate of a cluster CA, as pairing leaves it."""
    tls = NodeTls(tmp_path / "tls")
    tls.ensure_ca("c1", "test")
    tls.issue_own("node", ["10.0.0.5"])
    return tls.folder


def test_only_a_container_on_its_own_network_chooses_its_address() -> None:
    cfg = config.load()
    assert not runtime.chooses_node_ip(cfg)
    assert not runtime.chooses_node_ip(cfg.with_overrides(runtime__kind="docker"))
    own = cfg.with_overrides(runtime__kind="docker", runtime__docker_network="lan")
    assert runtime.chooses_node_ip(own)


def test_default_image_is_the_ray_projects_for_this_ray_and_python() -> None:
    py = f"py{sys.version_info[0]}{sys.version_info[1]}"
    assert runtime.default_image(False, "2.60.0") == f"rayproject/ray:2.60.0-{py}"
    assert runtime.default_image(True, "2.60.0") == f"rayproject/ray:2.60.0-{py}-gpu"


def test_pull_failures_say_why_in_one_line() -> None:
    net = docker_engine.pull_error(
        "rayproject/ray:x",
        'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io: '
        "no such host",
    )
    assert "no registry reachable" in str(net) and str(net).endswith(HINT)
    tag = docker_engine.pull_error(
        "rayproject/ray:nope", "manifest for rayproject/ray:nope not found: manifest unknown"
    )
    assert "no such image or tag" in str(tag) and "\n" not in str(tag)
    line = docker_engine.pull_progress(
        "img", {"a": ("Pull complete", 5_000_000, 5_000_000), "b": ("Downloading", 1e6, 4e6)}
    )
    assert line == "pulling img: 1 of 2 layers done, 6.0 of 9.0 MB"


# ----- GPUs: what NVML reports becomes the device request (NVML faked) ---------------------


@pytest.fixture()
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    from lanray_tui.adapters import nvml

    monkeypatch.setattr(nvml, "gpu_count_and_reason", lambda: (2, ""))
    monkeypatch.setattr(nvml, "device_request_ids", lambda: ["GPU-aaa", "GPU-bbb"])


@pytest.mark.usefixtures("two_gpus")
def test_device_request_names_the_gpus_nvml_sees() -> None:
    seen, why, ids = runtime._nvml_gpus()
    plan = runtime.gpu_plan(seen, why, ids, has_toolkit=True, wanted=None)
    assert plan.ids == ("GPU-aaa", "GPU-bbb") and not plan.warning
    c = docker_engine.ContainerSpec("n", "img", ["ray"], {}, {}, gpu_ids=plan.ids)
    kw = docker_engine.create_kwargs(c)
    (req,) = kw["device_requests"]
    assert req["DeviceIDs"] == ["GPU-aaa", "GPU-bbb"]
    assert req["Capabilities"] == [["gpu"]]
    # lend.gpus: 1 passes one GPU; lend.gpus: 0 none
    assert runtime.gpu_plan(seen, why, ids, True, 1).ids == ("GPU-aaa",)
    assert runtime.gpu_plan(seen, why, ids, True, 0).ids == ()


@pytest.mark.usefixtures("two_gpus")
def test_gpus_without_the_nvidia_toolkit_are_said_clearly() -> None:
    seen, why, ids = runtime._nvml_gpus()
    plan = runtime.gpu_plan(seen, why, ids, has_toolkit=False, wanted=None)
    assert plan.ids == () and "NVIDIA Container Toolkit" in plan.warning
    assert "2 NVIDIA GPUs found" in plan.warning and not plan.error
    asked = runtime.gpu_plan(seen, why, ids, has_toolkit=False, wanted=2)
    assert "NVIDIA Container Toolkit" in asked.error and asked.error.endswith(HINT)


def test_no_gpu_means_no_device_request() -> None:
    plan = runtime.gpu_plan(0, "NVML: no NVIDIA driver", [], has_toolkit=False, wanted=None)
    assert plan == runtime.GpuPlan()
    kw = docker_engine.create_kwargs(docker_engine.ContainerSpec("n", "img", ["ray"], {}, {}))
    assert "device_requests" not in kw and kw["network_mode"] == "host"


# ----- Docker missing: no daemon socket, no SDK (no root needed) ----------------------------


def test_docker_not_installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent")
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker, no dockerd
    with pytest.raises(LanrayError) as err:
        docker_engine.connect()
    assert str(err.value) == (
        "Docker is not installed (no docker command, no daemon socket at /nonexistent); "
        "install it (apt-get install docker.io), or use runtime.kind: native"
    )


def test_docker_sdk_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "docker", None)  # import docker -> ImportError
    with pytest.raises(LanrayError, match=r"docker Python package is not installed.*native$"):
        docker_engine.connect()


# ----- a real dockerd -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def ray_image() -> Iterator[str]:
    """dockerd running (started by scripts/dockerd.sh if none was, and stopped again at the
    session's end) and the Ray image built."""
    if not ROOT:
        pytest.skip("the docker runtime tests need root (dockerd, building the image)")
    script = str(REPO / "scripts" / "dockerd.sh")
    was_up = subprocess.run([script, "status"], capture_output=True, timeout=60).returncode == 0
    p = subprocess.run([script], capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        why = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
        pytest.skip(f"dockerd cannot be started: {why[0]}")
    p = subprocess.run(
        [str(REPO / "tests" / "images" / "build_ray_image.sh")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    try:
        if p.returncode != 0:
            why = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
            pytest.skip(f"the Ray image cannot be built here: {why[0]}")
        yield p.stdout.strip().splitlines()[-1]
    finally:
        if not was_up:  # the daemon this session started goes with it
            subprocess.run([script, "stop"], capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def docker_net(ray_image: str) -> Iterator[str]:
    """An ``--internal`` network (no route out), with Docker's own bridge (br-*): the route
    from a joining agent to the head goes through it, which is fine because each container
    takes its own address on the network."""
    name = f"lanray-test-{os.getpid()}"
    # small enough that a node certificate can name every address a container may get there
    subnet = f"10.250.{20 + os.getpid() % 200}.0/29"
    docker("network", "create", "--internal", "--subnet", subnet, name)
    try:
        yield name
    finally:
        for cid in docker("ps", "-aq", "--filter", f"network={name}", check=False).split():
            docker("rm", "-f", cid, check=False)
        docker("network", "rm", name, check=False)


class Agent:
    """lanray-tui with a HOME of its own, in the root namespace."""

    def __init__(self, base: Path, image: str, network: str) -> None:
        home = base / "home"
        (base / "run").mkdir(parents=True, mode=0o700)
        home.mkdir()
        self.home = home
        self.env = {
            **os.environ,
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local/share"),
            "XDG_STATE_HOME": str(home / ".local/state"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_RUNTIME_DIR": str(base / "run"),
            "LANRAY_NO_LAN": "1",
        }
        self.env.pop("RAY_AUTH_TOKEN", None)
        doc: dict[str, Any] = {
            "runtime": {"kind": "docker", "image": image, "docker_network": network},
            "ray": {"node_ip": ""},
        }
        if "lending.enabled" in config.SCHEMA:
            # both agents share one machine: each would see the other's Ray as its owner
            doc["lending"] = {"enabled": False}
        self.config = base / "config.yaml"
        self.config.write_text(json.dumps(doc))
        self.label = f"{os.uname().nodename}:{os.path.realpath(home)}"
        self.tls = NodeTls(home / ".local/share/lanray-tui/tls")

    def lanray(
        self, *args: str, timeout: float = 120, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(
            [*LANRAY, "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"lanray-tui {args} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    def status(self) -> dict[str, Any]:
        return json.loads(self.lanray("status", "--json", check=True, timeout=30).stdout)  # type: ignore[no-any-return]

    def containers(self, running_only: bool = False) -> list[str]:
        flags = ["ps", "-q", "--no-trunc"] + ([] if running_only else ["-a"])
        return docker(*flags, "--filter", f"label=lanray.home={self.label}").split()

    @property
    def socket(self) -> Path:
        return Path(self.env["XDG_RUNTIME_DIR"]) / "lanray-tui" / "agent.sock"

    def answers(self) -> bool:
        try:
            return ControlClient(self.socket).alive()
        except OSError:  # killed while answering
            return False

    def leave(self) -> None:
        if self.answers():
            self.lanray("leave", timeout=90)


@pytest.fixture(scope="module")
def agents(
    ray_image: str, docker_net: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Agent]]:
    """A host whose Ray head runs in a container on ``docker_net`` (its certificate names
    every address Docker may give it there), and a second agent whose join on that network
    is refused as not available yet (the tests below use it in order: the last one leaves)."""
    base = tmp_path_factory.mktemp("docker-agents")
    a, b = Agent(base / "a", ray_image, docker_net), Agent(base / "b", ray_image, docker_net)
    try:
        a.lanray("host", "--headless", "--detach", check=True, timeout=200)
        head_ip = a.status()["agent"]["node_ip"]
        token_path = base / "cluster-token"
        token_path.write_text(a.lanray("token", check=True).stdout.strip())
        token_path.chmod(0o600)
        refused = b.lanray(
            "join", head_ip, "--token-file", str(token_path), "--headless", "--detach",
            timeout=200,
        )  # fmt: skip
        yield {"host": a, "worker": b, "refused": refused}  # type: ignore[dict-item]
    finally:
        for agent in (b, a):
            agent.leave()
            for cid in agent.containers():
                docker("rm", "-f", cid, check=False)


# the environment of the container's GCS server: what Ray itself was given
GCS_ENVIRON = """
import os
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        if b"gcs_server" in open(f"/proc/{pid}/cmdline", "rb").read():
            print(open(f"/proc/{pid}/environ", "rb").read().replace(b"\\0", b"\\n").decode())
            break
    except OSError:
        pass
"""


def alive_ips(status: dict[str, Any]) -> dict[str, str]:
    return {n["ip"]: n["role"] for n in status["nodes"] if n["state"] == "ALIVE"}


def test_a_head_in_a_container_on_its_own_network(
    agents: dict[str, Agent], docker_net: str
) -> None:
    host, worker = agents["host"], agents["worker"]
    # joining there is not available yet: one line, nothing started
    refused: subprocess.CompletedProcess[str] = agents["refused"]  # type: ignore[assignment]
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert "is not available yet" in refused.stderr and worker.containers() == []
    (head_cid,) = host.containers()
    head_ip = docker(
        "inspect",
        "-f",
        f'{{{{(index .NetworkSettings.Networks "{docker_net}").IPAddress}}}}',
        head_cid,
    )
    info = host.status()["agent"]
    assert info["node_ip"] == head_ip and info["head_address"] == f"{head_ip}:6379"
    token = host.lanray("token", check=True).stdout.strip()
    nodes = wait_for(lambda: alive_ips(host.status()), 60)
    assert nodes == {head_ip: "head"}
    # Ray's gRPC dials the container's address: the head's certificate names it
    assert NodeTls(host.tls.folder).covers([head_ip])
    labels = json.loads(docker("inspect", "-f", "{{json .Config.Labels}}", head_cid))
    assert labels["lanray.role"] == "head" and labels["lanray.home"] == host.label
    assert labels["lanray.cluster"] == info["cluster_id"]
    env = docker("inspect", "-f", "{{json .Config.Env}}", head_cid)
    assert "RAY_AUTH_MODE=token" in env and "RAY_AUTH_TOKEN=" in env
    assert "RAY_USE_TLS=1" in env and f"RAY_TLS_CA_CERT={runtime.CONTAINER_TLS_DIR}/" in env
    ray_env = docker("exec", head_cid, "python3", "-c", GCS_ENVIRON)
    assert "RAY_USE_TLS=1" in ray_env and runtime.PEM_PREFIX not in ray_env
    args = json.loads(docker("inspect", "-f", "{{json .Args}}", head_cid))
    assert token not in " ".join(args)  # by environment only
    shm = int(docker("inspect", "-f", "{{.HostConfig.ShmSize}}", head_cid))
    assert shm >= 1 << 30
    # an --internal network: outside names fail fast instead of stalling Ray's dashboard
    dns = json.loads(docker("inspect", "-f", "{{json .HostConfig.DnsOptions}}", head_cid))
    assert dns == list(runtime.INTERNAL_DNS_OPTIONS)


def test_ray_log_streams_the_containers_new_lines(agents: dict[str, Agent]) -> None:
    host = agents["host"]
    (cid,) = host.containers(running_only=True)
    got: list[str] = []
    stream = ControlClient(host.socket).stream(LogsRequest(source="ray", lines=0, follow=True))

    def read() -> None:
        for item in stream:
            got.append(item.line)
            if "marker-" in item.line:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.5)  # the stream is open and past its backlog
    marker = f"marker-{time.time_ns()}"
    docker("exec", cid, "sh", "-c", f"echo {marker} > /proc/1/fd/1")  # the container's stdout
    reader.join(15)
    assert any(marker in line for line in got), got


def test_restarted_agent_adopts_its_running_container(agents: dict[str, Agent]) -> None:
    host = agents["host"]
    (before,) = host.containers(running_only=True)
    pid = host.status()["agent"]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not host.answers(), 10)
    assert host.containers(running_only=True) == [before]  # Ray outlives its agent
    t0 = time.monotonic()
    host.lanray("host", "--headless", "--detach", check=True, timeout=200)
    assert time.monotonic() - t0 < 30  # adopted, not a fresh Ray head
    assert host.containers() == [before]
    st = host.status()
    assert st["agent"]["state"] == "ready" and st["agent"]["pid"] != pid
    wait_for(lambda: len(alive_ips(host.status())) == 1, 30)
    ray_log = host.home / ".local/state/lanray-tui/ray-start.log"
    assert "adopting the running container" in ray_log.read_text()


def test_leave_removes_the_containers(agents: dict[str, Agent]) -> None:
    host, worker = agents["host"], agents["worker"]
    assert worker.containers() == []
    assert len(host.containers()) == 1
    host.lanray("leave", check=True, timeout=90)
    assert host.containers() == []


# ----- pulling, from a registry on loopback ------------------------------------------------


class Registry:
    """A read-only registry (HTTP API v2) on 127.0.0.1 serving one image: enough for
    ``docker pull``, and nothing leaves the machine."""

    def __init__(self, saved: Path, name: str, tag: str) -> None:
        import gzip
        import hashlib
        import http.server
        import tarfile

        def digest(b: bytes) -> str:
            return "sha256:" + hashlib.sha256(b).hexdigest()

        with tarfile.open(saved) as t:
            (entry,) = json.loads(t.extractfile("manifest.json").read())  # type: ignore[union-attr]
            cfg = t.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
            layers = [gzip.compress(t.extractfile(p).read(), 1) for p in entry["Layers"]]  # type: ignore[union-attr]
        self.blobs = {digest(b): b for b in [cfg, *layers]}
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "size": len(cfg),
                    "digest": digest(cfg),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "size": len(b),
                        "digest": digest(b),
                    }
                    for b in layers
                ],
            }
        ).encode()
        manifests = {f"/v2/{name}/manifests/{ref}": manifest for ref in (tag, digest(manifest))}
        blobs = self.blobs

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                path = self.path.split("?")[0]
                ctype, data = "application/json", b"{}"
                if path in manifests:
                    ctype, data = "application/vnd.docker.distribution.manifest.v2+json", manifest
                elif path.startswith(f"/v2/{name}/blobs/") and path.rsplit("/", 1)[1] in blobs:
                    ctype, data = "application/octet-stream", blobs[path.rsplit("/", 1)[1]]
                elif path != "/v2/":
                    err = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}
                    data = json.dumps(err).encode()
                    self.send_response(404)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data if body else b"")
                    return
                self.send_response(200)
                self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Docker-Content-Digest", digest(data))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_pull_shows_layers_and_bytes_and_names_a_missing_tag(
    ray_image: str, tmp_path: Path
) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "data.bin").write_bytes(os.urandom(3_000_000))
    subprocess.run(
        ["tar", "-C", str(tmp_path / "root"), "-cf", str(tmp_path / "fs.tar"), "."], check=True
    )
    local = f"lanray-pull-src:{os.getpid()}"
    docker("import", str(tmp_path / "fs.tar"), local)
    try:
        docker("save", local, "-o", str(tmp_path / "saved.tar"))
    finally:
        docker("rmi", "-f", local, check=False)
    registry = Registry(tmp_path / "saved.tar", "lanray/tiny", "1")
    image = f"{registry.address}/lanray/tiny:1"
    try:
        engine = docker_engine.connect()
        assert not engine.has_image(image)
        said: list[str] = []
        engine.pull(image, said.append)
        assert engine.has_image(image)
        assert said[0] == f"pulling {image}" and said[-1] == f"pulled {image}"
        assert f"pulling {image}: 1 of 1 layers done, 3.0 of 3.0 MB" in said, said
        with pytest.raises(LanrayError) as err:
            engine.pull(f"{registry.address}/lanray/tiny:2", said.append)
        assert "no such image or tag in the registry" in str(err.value)
        assert str(err.value).endswith(HINT)
    finally:
        registry.close()
        docker("rmi", "-f", image, check=False)


# ----- failure paths, for real --------------------------------------------------------------


def _cfg(image: str, network: str) -> config.Config:
    return config.load().with_overrides(
        runtime__kind="docker", runtime__image=image, runtime__docker_network=network
    )


def test_missing_image_and_no_registry_reachable(
    docker_net: str, tmp_path: Path, tls_dir: Path
) -> None:
    # a registry on loopback where nothing listens: the pull never leaves the machine
    image = "127.0.0.1:9/lanray/missing:1"
    log = tmp_path / "ray.log"
    with pytest.raises(LanrayError) as err:
        runtime.start_ray(_cfg(image, docker_net), spec(), "t" * 64, tls_dir, log, "c1", "host")
    msg = str(err.value)
    assert msg.startswith(f"cannot pull {image}: no registry reachable (")
    assert msg.endswith(HINT) and "\n" not in msg
    assert f"lanray: pulling {image}" in log.read_text()


def test_container_that_exits_at_start_says_why(
    ray_image: str, docker_net: str, tmp_path: Path
) -> None:
    broken = "lanray-ray-broken:test"
    script = '#!/bin/sh\\necho "lanray-test: this ray is broken" >&2\\nexit 3\\n'
    maker = docker(
        "create",
        "--network",
        "none",
        ray_image,
        "sh",
        "-c",
        f"printf '{script}' > /opt/ray/bin/ray && chmod +x /opt/ray/bin/ray",
    )
    try:
        docker("start", "-a", maker)
        docker("commit", maker, broken)
    finally:
        docker("rm", "-f", maker, check=False)
    try:
        a = Agent(tmp_path / "a", broken, docker_net)
        a.tls.ensure_ca("broken", "test")
        a.tls.issue_own("a", ["127.0.0.1"])
        p = a.lanray("host", "--headless", "--detach", timeout=120)
        assert p.returncode != 0
        err = p.stderr.strip().splitlines()[-1]
        assert "the Ray container exited at start with code 3" in err, err
        assert "lanray-test: this ray is broken" in err and err.endswith(HINT)
        assert a.containers() == []  # nothing left behind
    finally:
        docker("rmi", "-f", broken, check=False)


def test_permission_denied_on_the_socket() -> None:
    if not ROOT:
        pytest.skip("needs root to switch to another user")
    code = (
        "from lanray_tui.adapters import docker_engine\n"
        "try:\n    docker_engine.connect()\nexcept Exception as exc:\n    print(exc)\n"
    )
    p = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "DOCKER_HOST": "unix:///var/run/docker.sock"},
    )
    assert p.stdout.strip() == (
        "permission denied on the Docker socket /var/run/docker.sock; add this user to the "
        "'docker' group (sudo usermod -aG docker $USER; log in again), or use runtime.kind: native"
    ), p.stderr


def test_daemon_down(ray_image: str, docker_net: str, tmp_path: Path, tls_dir: Path) -> None:
    """Last: stops the daemon that scripts/dockerd.sh started, then starts it again."""
    dockerd = str(REPO / "scripts" / "dockerd.sh")
    pidfile = Path("/var/run/lanray-dockerd.pid")
    if not pidfile.exists():
        pytest.skip("dockerd was not started by scripts/dockerd.sh: not stopping someone's")
    subprocess.run([dockerd, "stop"], check=True, capture_output=True, timeout=60)
    try:
        with pytest.raises(LanrayError) as err:
            runtime.start_ray(
                _cfg(ray_image, docker_net),
                spec(),
                "t" * 64,
                tls_dir,
                tmp_path / "l",
                "c",
                "host",
            )
        assert str(err.value) == (
            "the Docker daemon is not running (no socket at /var/run/docker.sock); start it "
            "(sudo systemctl start docker), or use runtime.kind: native"
        )
    finally:
        subprocess.run([dockerd], check=True, capture_output=True, timeout=120)
    docker_engine.connect().client.ping()
