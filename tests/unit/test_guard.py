"""The guard on Ray's plain-HTTP ports: the nft rules it writes, the real ``nft`` applying and
removing them in a private network namespace (root), and the degraded paths with real
failures (no ``nft`` on the PATH, no CAP_NET_ADMIN), as status and the doctor tell them.

Nothing here touches this machine's own firewall: the autouse fixture sets LANRAY_NO_LAN=1
(the guard is then not needed), a test that clears it empties the PATH or runs ``nft`` in a
namespace of its own (``unshare --net``), without CAP_NET_ADMIN where it must fail.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lanray_tui.adapters import nftables
from lanray_tui.core import config, doctor, guard
from lanray_tui.core.doctor import Mark
from lanray_tui.core.guard import GuardState, GuardView, PortGuard
from lanray_tui.core.models import node_from_status
from tests.conftest import ROOT

REPO = Path(__file__).resolve().parents[2]
HTTP_PORTS = (6383, 6384, 8265, 44217, 44227, 52365)  # configs/default.yaml
HOST = "10.0.0.5"


def get(**over: object) -> object:
    return config.load().with_overrides(**over).__getitem__


def test_the_rules_reset_every_http_port_off_loopback_and_admit_the_host_to_the_agent() -> None:
    assert nftables.input_guard("lanray_t", [6384, 52365, 6383], {"10.0.0.5": [52365]}) == [
        "add table inet lanray_t",
        "delete table inet lanray_t",
        "add table inet lanray_t",
        "add chain inet lanray_t input { type filter hook input priority -10; policy accept; }",
        "add rule inet lanray_t input ip saddr 10.0.0.5 tcp dport 52365 accept",
        'add rule inet lanray_t input iifname != "lo" tcp dport { 6383, 6384, 52365 } '
        "reject with tcp reset",
    ]
    # the ports are the configured ones: one place says them
    assert guard.http_ports(get()) == HTTP_PORTS
    moved = get(ray__metrics_export_port=7000, ray__dashboard_agent_listen_port=7001)
    assert guard.http_ports(moved) == (6383, 7000, 7001, 8265, 44217, 44227)
    assert guard.admitted(moved, head=False, head_address=HOST) == {HOST: (7001,)}
    # the host admits nobody; a worker only an address (never a name it would resolve)
    assert guard.admitted(get(), head=True, head_address=HOST) == {}
    assert guard.admitted(get(), head=False, head_address="head.lan") == {}
    head = guard.commands(get(), head=True, head_address=HOST)
    assert not any("saddr" in c for c in head)
    assert head[-1].endswith("{ 6383, 6384, 8265, 44217, 44227, 52365 } reject with tcp reset")


def test_the_fix_is_one_line_that_a_shell_hands_to_nft_as_the_same_commands() -> None:
    cmds = guard.commands(get(), head=False, head_address=HOST)
    line = nftables.command_line(cmds)
    assert "\n" not in line
    assert shlex.split(line) == ["sudo", "nft", "; ".join(cmds)]


def test_without_nft_on_the_path_the_guard_is_off_with_the_reason_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("LANRAY_NO_LAN")
    monkeypatch.setenv("PATH", str(tmp_path))  # a real exec of 'nft' that finds none
    assert nftables.apply(["list ruleset"]) == nftables.NOT_INSTALLED
    assert nftables.remove("lanray_t") == nftables.NOT_INSTALLED
    assert nftables.permission() == nftables.NOT_INSTALLED
    g = PortGuard(get())
    view = g.apply(head=False, node_ip="10.0.0.7", head_address=HOST)
    assert view.state is GuardState.OFF and view.reason == nftables.NOT_INSTALLED
    assert view.fix == nftables.command_line(guard.commands(get(), False, HOST))
    assert g.view is view
    g.remove()  # it set nothing: nothing to take away, and no error
    assert g.view is view
    # the agent's view goes through status to one warning line per node
    row = {**ROW, "runtime": {"kind": "native", "guard": view.to_json()}}
    warning = node_from_status(row).guard_warning
    assert warning.startswith("Ray's HTTP ports 6383, 6384, 8265, 44217, 44227, 52365 are ")
    assert "open to the LAN: nft is not installed" in warning and warning.endswith(view.fix)
    assert "\n" not in warning


def test_the_guard_is_not_needed_off_the_lan_and_never_runs_nft_there(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # were nft run, the reason would say so
    view = PortGuard(get()).apply(head=True, node_ip="10.0.0.5", head_address="10.0.0.5")
    assert view.state is GuardState.NOT_NEEDED and "LANRAY_NO_LAN=1" in view.reason
    monkeypatch.delenv("LANRAY_NO_LAN")
    view = PortGuard(get()).apply(head=True, node_ip="127.0.0.1", head_address="127.0.0.1")
    assert view.state is GuardState.NOT_NEEDED and view.reason == "Ray runs on loopback only"
    assert node_from_status({**ROW, "runtime": {"guard": view.to_json()}}).guard_warning == ""


def test_a_container_on_its_own_docker_network_is_out_of_the_input_rules_reach(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("LANRAY_NO_LAN")
    monkeypatch.setenv("PATH", str(tmp_path))
    own = get(runtime__kind="docker", runtime__docker_network="lan")
    view = PortGuard(own).apply(head=True, node_ip="172.18.0.2", head_address="172.18.0.2")
    assert view.state is GuardState.OFF and "Docker network 'lan'" in view.reason
    assert "runtime.docker_network: host" in view.reason
    # with the host's network the same rules reach Ray in the container
    host_net = get(runtime__kind="docker", runtime__docker_network="host")
    view = PortGuard(host_net).apply(head=True, node_ip="10.0.0.5", head_address="10.0.0.5")
    assert view.reason == nftables.NOT_INSTALLED


# Run in a child: the guard applied by the real nft. The child is in a network namespace of
# its own (unshare --net), so this machine's firewall never sees the table.
IN_NETNS = """
import json, subprocess, sys
from lanray_tui.adapters import nftables, ray_process
from lanray_tui.core import config, guard
get = config.load().__getitem__
g = guard.PortGuard(get)
out = {"permission": nftables.permission()}
view = g.apply(head=False, node_ip="10.0.0.7", head_address="10.0.0.5")
out["state"], out["reason"] = view.state.value, view.reason
out["exists"] = nftables.exists(guard.TABLE)
out["listed"] = subprocess.run(["nft", "list", "table", "inet", guard.TABLE],
                               capture_output=True, text=True).stdout
g.apply(head=False, node_ip="10.0.0.7", head_address="10.0.0.5")  # again: replaced whole
out["again"] = subprocess.run(["nft", "list", "table", "inet", guard.TABLE],
                              capture_output=True, text=True).stdout
sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
g.around(ray_process.NativeRay(sleeper)).stop()  # Ray stops: the table goes with it
out["after_stop"] = nftables.exists(guard.TABLE)
out["state_after"] = g.view.state.value
guard.PortGuard(get).apply(head=True, node_ip="10.0.0.5", head_address="10.0.0.5")
guard.remove_left()  # leave --force: an agent that is gone left it
out["left"] = nftables.exists(guard.TABLE)
print(json.dumps(out))
"""


def in_netns(*prefix: str) -> dict[str, object]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO)}
    argv = [*prefix, sys.executable, "-c", textwrap.dedent(IN_NETNS)]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)  # type: ignore[no-any-return]


needs_nft_root = pytest.mark.skipif(
    not ROOT or shutil.which("nft") is None or shutil.which("unshare") is None,
    reason="needs root, nft and unshare (a network namespace of its own)",
)


@needs_nft_root
def test_the_real_nft_sets_the_table_replaces_it_whole_and_removes_it_with_ray() -> None:
    """Also: ``leave --force`` takes away a table that a gone agent left."""
    got = in_netns("unshare", "--net")
    assert got["permission"] == "" and got["state"] == "on" and got["reason"] == ""
    assert got["exists"] is True
    listed = str(got["listed"])
    assert "hook input priority filter - 10; policy accept;" in listed
    assert "ip saddr 10.0.0.5 tcp dport 52365 accept" in listed
    assert (
        'iifname != "lo" tcp dport { 6383, 6384, 8265, 44217, 44227, 52365 } '
        "reject with tcp reset" in listed
    )
    assert got["again"] == listed  # applied twice: the same rules once
    assert got["after_stop"] is False and got["state_after"] == "pending"
    assert got["left"] is False


@needs_nft_root
def test_without_cap_net_admin_the_real_nft_fails_and_the_guard_says_so() -> None:
    # a namespace of its own first: were the capability not dropped, nothing real changes
    setpriv = ["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-net_admin"]
    got = in_netns("unshare", "--net", *setpriv)
    assert got["permission"] == nftables.NOT_PERMITTED
    assert got["state"] == "off" and got["reason"] == nftables.NOT_PERMITTED
    assert got["exists"] is None  # the ruleset cannot even be read
    assert got["state_after"] == "off"  # stopping Ray leaves the view as it was
    assert got["left"] is None  # and leave --force tries nothing it may not do


def test_the_doctor_says_it_in_one_line_with_the_command() -> None:
    on = GuardView(GuardState.ON, HTTP_PORTS, {HOST: (52365,)})
    r = doctor.http_guard(on.to_json(), from_agent=True)
    assert r.mark is Mark.PASS
    ports = "6383 6384 8265 44217 44227 52365"
    assert r.value == f"{ports}: loopback only; 52365 also from the host 10.0.0.5"
    assert doctor.http_guard(on.to_json(), from_agent=False).value.startswith("no agent runs")
    fix = nftables.command_line(guard.commands(get(), True, ""))
    off = GuardView(GuardState.OFF, HTTP_PORTS, {}, nftables.NOT_PERMITTED, fix)
    r = doctor.http_guard(off.to_json(), from_agent=True)
    assert r.mark is Mark.WARN and r.fix == fix
    assert r.value == (
        "6383 6384 8265 44217 44227 52365 open to the LAN: no permission to change the "
        "firewall (needs root or CAP_NET_ADMIN)"
    )
    lines = doctor.Report("h", [r]).lines()
    assert lines[1] == f"    fix: {fix}"
    skip = GuardView(GuardState.NOT_NEEDED, HTTP_PORTS, reason="Ray runs on loopback only")
    assert doctor.http_guard(skip.to_json(), True).mark is Mark.SKIP
    assert doctor.http_guard({}, True).mark is Mark.SKIP  # an agent that does not say


def test_the_doctor_without_an_agent_tells_what_one_would_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from lanray_tui.core import doctor_run

    monkeypatch.delenv("LANRAY_NO_LAN")
    monkeypatch.setenv("PATH", str(tmp_path))
    cfg = config.load().with_overrides(ray__node_ip="10.0.0.9")
    r = doctor_run._http_guard(cfg)
    assert r.mark is Mark.WARN and r.value.startswith("no agent runs; an agent run by this ")
    assert r.value.endswith(nftables.NOT_INSTALLED) and r.fix.startswith("sudo nft '")


ROW = {
    "node_id": "n",
    "ip": "10.0.0.7",
    "name": "lab7",
    "role": "worker",
    "state": "ALIVE",
    "cpus": 2.0,
    "gpus": 0.0,
    "memory_gb": 1.0,
}
