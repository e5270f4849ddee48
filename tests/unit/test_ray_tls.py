"""Ray's TLS settings: every Ray process and client gets them, or Ray does not run; the
dashboard on the head's loopback; the GCS child's commands (no Ray cluster needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lanray_tui.adapters import ray_jobs, ray_process
from lanray_tui.adapters.ray_process import RaySpec
from lanray_tui.core import config, ray_tls, runtime
from lanray_tui.core.cluster_ca import NodeTls
from lanray_tui.core.credentials import Credentials
from lanray_tui.core.errors import LanrayError

PORTS = {
    k[4:]: v for k, v in config.load().as_dict().items() if k.startswith("ray.") and "_port" in k
}


@pytest.fixture()
def tls(tmp_path: Path) -> NodeTls:
    node = NodeTls(tmp_path / "tls")
    node.ensure_ca("c1", "test")
    node.issue_own("n1", ["10.0.0.5"])
    return node


def test_a_node_without_its_certificate_gets_one_line(tmp_path: Path, tls: NodeTls) -> None:
    for missing in (tls.cert, tls.key, tls.ca_cert):
        other = NodeTls(tmp_path / f"without-{missing.name}")
        other.folder.mkdir()
        for f in (tls.cert, tls.key, tls.ca_cert):
            if f != missing:
                (other.folder / f.name).write_bytes(f.read_bytes())
        with pytest.raises(ray_tls.NoCertificate) as err:
            ray_tls.ray_env(other.folder)
        assert (
            str(err.value) == "this node has no certificate of the cluster: pair again with a code"
        )
    assert ray_tls.ray_env(tls.folder) == tls.ray_env()
    pems = ray_tls.pem_files(tls.folder)
    assert pems["RAY_TLS_SERVER_KEY"] == tls.key.read_bytes() and len(pems) == 3


def test_every_ray_process_gets_the_token_and_tls(tls: NodeTls) -> None:
    env = ray_process.auth_env("t" * 64, tls.ray_env(), base={"RAY_USE_TLS": "0", "PATH": "/x"})
    assert env["RAY_USE_TLS"] == "1" and env["RAY_TLS_CA_CERT"] == str(tls.ca_cert)
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] == "t" * 64
    assert env["PATH"] == "/x"
    # never in clear: no settings, TLS off, or a missing path
    for bad in (
        {},
        {**tls.ray_env(), "RAY_USE_TLS": "0"},
        {**tls.ray_env(), "RAY_TLS_CA_CERT": ""},
    ):
        with pytest.raises(ray_process.RayTlsMissing):
            ray_process.auth_env("t" * 64, bad)


def test_ray_does_not_start_without_a_certificate(tmp_path: Path) -> None:
    spec = RaySpec(head=True, node_ip="10.0.0.5", temp_dir=tmp_path / "ray", ports=PORTS)
    with pytest.raises(ray_tls.NoCertificate):
        runtime.start_ray(
            config.load(), spec, "t" * 64, tmp_path / "tls", tmp_path / "log", "c1", "host"
        )
    assert not (tmp_path / "log").exists() and not (tmp_path / "ray").exists()


def test_the_dashboard_listens_on_the_heads_loopback(tmp_path: Path) -> None:
    head = RaySpec(head=True, node_ip="10.0.0.5", temp_dir=tmp_path, ports=PORTS).argv()
    assert head[head.index("--dashboard-host") + 1] == "127.0.0.1"
    assert head[head.index("--node-ip-address") + 1] == "10.0.0.5"
    creds = Credentials.new("c").replace(head_address="10.0.0.5")
    assert creds.dashboard_url == "http://127.0.0.1:8265"
    assert creds.gcs_address == "10.0.0.5:6379"  # Ray's gRPC, over TLS, for every node


def test_the_gcs_child_says_how_to_call_it() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "lanray_tui.adapters.ray_jobs", "upload"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and "usage:" in p.stderr


def test_uploads_check_their_input_before_any_child(tmp_path: Path, tls: NodeTls) -> None:
    with pytest.raises(LanrayError, match="is not a directory"):
        ray_jobs.upload_working_dir("10.0.0.5:6379", "t", tls.ray_env(), tmp_path / "nope")
    with pytest.raises(ray_jobs.RayJobRejected, match="is not a package URI"):
        ray_jobs.fetch_package("10.0.0.5:6379", "t", tls.ray_env(), "not-a-uri", tmp_path / "x")
    with pytest.raises(ray_process.RayTlsMissing):
        ray_jobs.upload_working_dir("10.0.0.5:6379", "t", {}, tmp_path)


def test_the_tls_digest_names_the_files_ray_runs_with(tmp_path: Path, tls: NodeTls) -> None:
    assert ray_tls.digest(tmp_path / "none") == ""
    before = ray_tls.digest(tls.folder)
    assert len(before) == 64 and before == ray_tls.digest(tls.folder)
    tls.issue_own("n1", ["10.0.0.5", "10.0.0.6"])  # a new address: a new certificate
    assert ray_tls.digest(tls.folder) not in ("", before)


@pytest.mark.parametrize("head", [True, False])
def test_the_raylet_retries_its_store_in_short_steps_with_the_same_budget(
    tmp_path: Path, head: bool
) -> None:
    # Ray's own: 10 tries a second apart (a try that comes before the store listens costs
    # a whole second of the node's start); ours: the same 10 s in steps of at most 100 ms
    spec = RaySpec(head=head, node_ip="10.0.0.5", temp_dir=tmp_path, ports=PORTS, address="h:1")
    env = spec.env()
    step = int(env["RAY_raylet_client_connect_timeout_milliseconds"])
    tries = int(env["RAY_raylet_client_num_connect_attempts"])
    assert step <= 100 and step * tries >= 10_000
