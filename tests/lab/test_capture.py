"""Issue 17 in the lab: nothing secret crosses the LAN in clear.

Every frame on the lab's bridge is recorded during one whole session: n1 hosts, n2 joins with
a code, n2 submits a job with a ``working_dir`` and reads its log, n2's cable is pulled and
plugged back (it rejoins by itself), n2 leaves, n1 leaves. The capture is then searched for the
cluster token, the cluster key, every private key of every node and the job's source code, in
every form they could take on the wire (see ``labkit.find_secrets``): none may be there.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LAB, ROOT, needs_root
from tests.helpers.labkit import (
    BridgeCapture,
    Node,
    find_secrets,
    node_secrets,
    read_pcap,
    tcp_streams,
    wait_for,
)

pytestmark = needs_root
NAME = LAB[:6] + "c"
FINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "LOST")


@pytest.fixture(scope="module")
def capture_lab() -> Iterator[Any]:
    if not ROOT:
        pytest.skip("the lab needs root (network and PID namespaces)")
    from lanray_tui.core import lab as labmod

    labmod.down(NAME)
    made = labmod.up(NAME, 2)
    try:
        yield made
    finally:
        for name in ("n2", "n1"):
            node = Node(made, name)
            if node.agent_running():
                node.lanray("leave", "--force", timeout=90)
        labmod.down(NAME)


def row(host: Node, ip: str) -> dict[str, Any]:
    rows = [n for n in host.status()["nodes"] if n["ip"] == ip]
    rows.sort(key=lambda n: n["state"] != "ALIVE")
    return rows[0] if rows else {}


def job_of(node: Node, job_id: str) -> dict[str, Any]:
    p = node.lanray("jobs", "--json", timeout=60)
    assert p.returncode == 0, p.stderr
    return {j["id"]: j for j in json.loads(p.stdout)["jobs"]}.get(job_id, {})


def test_a_whole_session_puts_no_secret_on_the_wire(capture_lab: Any, tmp_path: Path) -> None:
    from lanray_tui.core import lab as labmod

    lab = capture_lab
    n1, n2 = Node(lab, "n1"), Node(lab, "n2")
    marker = f"lanray-capture-{uuid.uuid4().hex}"
    source_line = f'MARKER = "{marker}"'
    job_dir = Path(lab.node("n2").root) / "home" / "job"
    job_dir.mkdir()
    (job_dir / "job.py").write_text(
        f"import hashlib\n{source_line}\n"
        "print('digest', hashlib.sha256(MARKER.encode()).hexdigest()[:16])\n"
    )
    digest = hashlib.sha256(marker.encode()).hexdigest()[:16]
    pcap = tmp_path / "session.pcap"
    secrets: dict[str, bytes] = {}
    with BridgeCapture(lab, pcap) as capture:
        n1.lanray("host", "--headless", "--detach", check=True, timeout=180)
        code = n1.lanray("code", check=True).stdout.split()[-1]
        p = n2.lanray("join", n1.address, "--code", code, "--headless", "--detach", timeout=180)
        assert p.returncode == 0, p.stderr

        p = n2.lanray("submit", str(job_dir / "job.py"), timeout=120)
        assert p.returncode == 0, p.stderr
        job_id = p.stdout.split()[-1]
        job = wait_for(lambda: (j := job_of(n2, job_id)).get("state") in FINAL and j, 120, 1.0)
        logs = n2.lanray("logs", job_id, timeout=60)

        labmod.link(lab, "n2", up=False)
        try:
            wait_for(lambda: row(n1, n2.address).get("link") == "UNREACHABLE", 10)
        finally:
            labmod.link(lab, "n2", up=True)
        wait_for(
            lambda: (r := row(n1, n2.address)).get("state") == "ALIVE" and r.get("link") == "UP",
            40,
            interval=0.5,
        )
        # what each node holds now (leave may remove some of it)
        secrets.update(node_secrets(n1))
        secrets.update(node_secrets(n2))
        n2.lanray("leave", check=True, timeout=90)
        n1.lanray("leave", check=True, timeout=90)
    for node in (n1, n2):  # and anything made since
        for what, value in node_secrets(node).items():
            secrets.setdefault(what, value)
    secrets["job source line"] = source_line.encode()
    secrets["job marker"] = marker.encode()

    # the session really happened, and the capture really holds it
    assert job["state"] == "SUCCEEDED", job
    assert logs.returncode == 0 and f"digest {digest}" in logs.stdout, logs.stdout + logs.stderr
    assert any(k.endswith("token (hex)") for k in secrets) and any("n2:" in k for k in secrets)
    assert capture.drops == 0, f"the capture lost {capture.drops} frames"
    streams = tcp_streams(read_pcap(pcap))
    to_host = {(s.dport) for s in streams if s.dst == n1.address and s.data}
    assert {6379, 47476} <= to_host, f"the capture missed the session: ports {sorted(to_host)}"
    sent = sum(len(s.data) for s in streams)
    assert sent > 100_000, f"only {sent} bytes of TCP payload captured ({capture.frames} frames)"

    found = find_secrets(pcap, secrets)
    ports = sorted({s.dport for s in streams if s.dst == n1.address and s.data})
    print(  # shown with -s, or when an assertion below fails
        f"captured {capture.frames} frames, {sent} bytes of TCP payload in {len(streams)} streams"
        f" (to the host's ports {ports}); searched for {len(secrets)} secrets: {sorted(secrets)}"
    )
    report = f"{len(found)} secrets in clear on the wire (capture: {pcap}):\n" + "\n".join(found)
    assert not found, report
    # ... and the search did cover the private keys: the CA's and each node's
    for key in ("n1:tls/ca.key (PEM)", "n1:tls/node.key (PEM)", "n2:tls/node.key (PEM)"):
        assert key in secrets, f"{key} was not there to search for: {sorted(secrets)}"
