"""Shared fixtures. Tests never read the user's own config or state: HOME and the XDG
dirs point into a temporary directory for every test (the one seam, patched here)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = os.geteuid() == 0
# The session's lab: its own name lets two checkouts run their suites side by side.
LAB = os.environ.get("LANRAY_TEST_LAB", "t")
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (network and PID namespaces)")


TIERS = {
    "unit": "pure and loopback tests: no root, under a minute",
    "tui": "the Textual app against a fake agent (e2e: the real one in a lab, in tmux)",
    "lab": "real Ray clusters in network namespaces (needs root)",
    "docker": "the docker runtime against a real dockerd (needs root)",
    "samples": "the sample jobs' training code in real processes (needs torch)",
    "storm": "a 9-node lab joining at once (needs root; a few minutes)",
    "elastic": "a training run that shrinks and grows back with a lent machine (needs root)",
}


def pytest_configure(config: pytest.Config) -> None:
    for tier, what in TIERS.items():
        config.addinivalue_line("markers", f"{tier}: {what}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test is marked with its tier (its folder), so '-m unit' or '-m "not lab"' pick
    tiers; a tier that needs root skips with the reason when not root."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        tier = next((t for t in TIERS if t in parts[-3:-1]), None)
        if tier is None:
            continue
        item.add_marker(getattr(pytest.mark, tier))
        if tier in ("lab", "docker", "storm", "elastic") and not ROOT:
            item.add_marker(pytest.mark.skip(reason=f"the {tier} tier needs root"))


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var, sub in (
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_STATE_HOME", ".local/state"),
        ("XDG_CACHE_HOME", ".cache"),
    ):
        monkeypatch.setenv(var, str(home / sub))
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    # Safety: outside the lab namespaces nothing may broadcast, ARP-sweep or bind on the
    # machine's real interfaces. The lab helpers drop this variable inside lab nodes.
    monkeypatch.setenv("LANRAY_NO_LAN", "1")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield home


@pytest.fixture(scope="session")
def lab() -> Iterator[object]:
    """A 3-node lab for the whole session (root only): n1 hosts, n2 and n3 join or scan."""
    if not ROOT:
        pytest.skip("the lab needs root (network and PID namespaces)")
    from lanray_tui.core import lab as labmod

    labmod.down(LAB)  # leftovers of a crashed run
    made = labmod.up(LAB, 3)
    try:
        yield made
    finally:
        labmod.down(LAB)


@pytest.fixture(scope="session")
def nodes(lab: object) -> Iterator[dict[str, object]]:
    """n1 hosting and n2 joined by token, shared by every lab test that needs a cluster."""
    from tests.helpers.labkit import Node

    n1, n2, n3 = (Node(lab, n) for n in ("n1", "n2", "n3"))  # type: ignore[arg-type]
    n1.lanray("host", "--headless", "--detach", check=True, timeout=180)
    try:
        yield {"n1": n1, "n2": n2, "n3": n3}
    finally:
        for n in (n3, n2, n1):
            n.leave()


@pytest.fixture()
def cluster(nodes: dict[str, object]) -> dict[str, object]:
    """Ensures n1 hosts and n2 is joined (tests may have made n2 leave)."""
    n1, n2 = nodes["n1"], nodes["n2"]
    if not n2.agent_running():  # type: ignore[attr-defined]
        n2.join_by_token(  # type: ignore[attr-defined]
            n1, "--headless", "--detach", check=True, timeout=180
        )
    return nodes
