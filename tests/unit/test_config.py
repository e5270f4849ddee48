from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lanray_tui.core import config
from lanray_tui.core.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_document_every_key() -> None:
    cfg = config.load()
    assert set(cfg.as_dict()) == set(config.SCHEMA)
    text = config.DEFAULT_FILE.read_text()
    # every setting has a comment line right above it (or above its group of ports)
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() and not line.strip().startswith("#") and ":" in line:
            above = [x.strip() for x in lines[max(0, i - 8) : i]]
            assert any(x.startswith("#") for x in above), f"no comment near: {line}"


def test_user_config_then_explicit_override(isolated_home: Path, tmp_path: Path) -> None:
    write(
        isolated_home / ".config/lanray-tui/config.yaml",
        "cluster_name: dorm\nray:\n  gcs_port: 7000\n",
    )
    explicit = write(tmp_path / "x.yaml", "ray:\n  gcs_port: 7100\n")
    cfg = config.load()
    assert cfg["cluster_name"] == "dorm" and cfg["ray.gcs_port"] == 7000
    cfg = config.load(explicit)
    assert cfg["cluster_name"] == "dorm" and cfg["ray.gcs_port"] == 7100
    assert cfg["ray.dashboard_port"] == 8265


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("ray:\n  gcs_prot: 1\n", "unknown key 'ray.gcs_prot'"),
        ("bogus: 1\n", "unknown key 'bogus'"),
        ("ray:\n  gcs_port: abc\n", "'ray.gcs_port' must be int"),
        ("ray:\n  gcs_port: true\n", "'ray.gcs_port' must be int"),
        ("ray:\n  gcs_port: 70000\n", "'ray.gcs_port' must be a port number"),
        ("jobs:\n  max_running_jobs: 0\n", "'jobs.max_running_jobs' must be between"),
        ("runtime:\n  kind: podman\n", "'runtime.kind' must be one of: native, docker"),
        ("ray: 5\n", "'ray' must be a section"),
        ("ray:\n  node_ip: 300.1.1.1\n", "'ray.node_ip' must be an IPv4"),
        ("lend:\n  cpus: -1\n", "'lend.cpus' must be between"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("ray: [\n", "not valid YAML"),
        ("ray:\n  min_worker_port: 20000\n  max_worker_port: 10000\n", "min_worker_port"),
    ],
)
def test_bad_config_names_file_key_reason(tmp_path: Path, text: str, needle: str) -> None:
    bad = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as err:
        config.load(bad)
    msg = str(err.value)
    assert needle in msg and str(bad) in msg and "\n" not in msg


def test_bad_config_is_one_line_on_the_cli(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", "ray:\n  gcs_port: -3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "lanray_tui", "--config", str(bad), "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "ray.gcs_port" in lines[0] and str(bad) in lines[0]


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        config.load(tmp_path / "nope.yaml")


def test_overrides_are_validated() -> None:
    cfg = config.load()
    assert cfg.with_overrides(lend__cpus=2)["lend.cpus"] == 2
    with pytest.raises(ConfigError, match=r"lend\.cpus"):
        cfg.with_overrides(lend__cpus=-5)


def test_default_file_is_plain_yaml() -> None:
    doc = yaml.safe_load(config.DEFAULT_FILE.read_text())
    assert doc["ray"]["min_worker_port"] <= doc["ray"]["max_worker_port"]


def _loads_yaml() -> bool:
    """Whether a fresh process had to load PyYAML to read the config."""
    code = "import sys; from lanray_tui.core import config; config.load(); print('yaml' in sys.modules)"  # noqa: E501
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return p.stdout.strip() == "True"


def test_the_parsed_settings_are_kept_until_any_file_changes(isolated_home: Path) -> None:
    user = write(isolated_home / ".config/lanray-tui/config.yaml", "cluster_name: dorm\n")
    assert _loads_yaml()  # the first command parses
    assert not _loads_yaml()  # the next one reads what it kept
    assert config.load()["cluster_name"] == "dorm"
    write(user, "cluster_name: flat\n")  # the same size, at once: still seen
    assert config.load()["cluster_name"] == "flat"
    write(user, "cluster_name: [not, a, name]\n")
    with pytest.raises(ConfigError, match="cluster_name"):
        config.load()  # a bad file is never hidden by what was kept
    user.unlink()
    assert config.load()["cluster_name"] == config.load(config.DEFAULT_FILE)["cluster_name"]


@pytest.mark.parametrize("junk", ["", "{", "[]", '{"stamp": 1, "values": {}}'])
def test_a_damaged_kept_file_is_parsed_again(isolated_home: Path, junk: str) -> None:
    write(isolated_home / ".config/lanray-tui/config.yaml", "cluster_name: dorm\n")
    config.load()
    kept = Path(os.environ["XDG_RUNTIME_DIR"]) / "lanray-tui" / config.CACHE_NAME
    assert kept.exists()
    kept.write_text(junk)
    assert config.load()["cluster_name"] == "dorm"
