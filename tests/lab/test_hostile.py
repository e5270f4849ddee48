"""Issue 17 in the lab: a stranger on the LAN, with no credentials, against a host with one
joined worker (n1 hosts, n2 joined, n3 is the stranger: tests/drivers/stranger.py).

The host must stay usable throughout (the worker's heartbeats on time, ``status`` answers, a
job runs), nothing the stranger can make reach it may hold a secret, and neither Ray nor the
Jobs API nor the cluster API may serve a client that has no certificate of the cluster.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LAB, ROOT, needs_root
from tests.helpers.labkit import (
    LANRAY,
    BridgeCapture,
    Node,
    agent_log,
    data_dir,
    find_secrets,
    mac_of,
    node_secrets,
    node_states,
    read_pcap,
    tcp_streams,
    wait_for,
)

pytestmark = needs_root
NAME = LAB[:6] + "h"
API_PORT = 47476
PAIRING_PORT = 47475
STORAGE_PORT = 47477
# the head's gRPC ports (lanray-tui's defaults): GCS, node manager, object manager,
# dashboard agent, Ray client server
RAY_GRPC_PORTS = "6379,6380,6381,6382,10001"
STRANGER = [LANRAY[0], "-m", "tests.drivers.stranger"]
MAX_BEAT_AGE_S = 3.0  # one interval is 1 s; UNREACHABLE comes after 3.5 s


@pytest.fixture(scope="module")
def hc() -> Iterator[dict[str, Node]]:
    """n1 hosts, n2 joined by token, n3 a stranger with nothing: one cluster for the module."""
    if not ROOT:
        pytest.skip("the lab needs root (network and PID namespaces)")
    from lanray_tui.core import lab as labmod

    labmod.down(NAME)
    lab = labmod.up(NAME, 3)
    n1, n2, n3 = (Node(lab, n) for n in ("n1", "n2", "n3"))
    try:
        n1.lanray("host", "--headless", "--detach", check=True, timeout=180)
        n2.join_by_token(n1, "--headless", "--detach", check=True, timeout=180)
        wait_for(lambda: node_states(n1).get(n2.address) == "ALIVE", 60)
        yield {"n1": n1, "n2": n2, "n3": n3}
    finally:
        for n in (n2, n1):
            with contextlib.suppress(Exception):  # the lab goes anyway
                n.leave()
        labmod.down(NAME)


def attack(node: Node, *args: str, timeout: float = 60, **kw: Any) -> dict[str, Any]:
    p = node.run([*STRANGER, *args], timeout=timeout, **kw)
    assert p.returncode == 0, f"stranger {args[0]}: {p.stderr[-2000:]}"
    return json.loads(p.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def tracebacks(node: Node) -> int:
    log = agent_log(node)
    return log.read_text(errors="replace").count("Traceback") if log.exists() else 0


class Watch:
    """Asks the host's ``status`` over and over in a thread; keeps what each answer said of
    the worker's heartbeat."""

    def __init__(self, host: Node, worker: Node) -> None:
        self.host, self.worker = host, worker
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            p = self.host.lanray("status", "--json", timeout=30)
            took = time.monotonic() - t0
            sample: dict[str, Any] = {"ok": p.returncode == 0, "took_s": round(took, 1)}
            if p.returncode == 0:
                rows = [r for r in json.loads(p.stdout)["nodes"] if r["ip"] == self.worker.address]
                rows.sort(key=lambda r: r["state"] != "ALIVE")
                if rows:
                    sample.update(link=rows[0]["link"], age=rows[0]["last_heartbeat_s"])
            else:
                sample["error"] = p.stderr.strip()[-200:]
            self.samples.append(sample)
            self._stop.wait(0.5)

    def problems(self) -> list[dict[str, Any]]:
        return [
            s
            for s in self.samples
            if not s["ok"] or s.get("link") != "UP" or (s.get("age") or 0) > MAX_BEAT_AGE_S
        ]


def replies(hex_text: str) -> list[str]:
    """The lines of a reply that are JSON messages ('' for bytes that are not)."""
    out = []
    for line in bytes.fromhex(hex_text).splitlines():
        try:
            out.append(json.dumps(json.loads(line)))
        except ValueError:
            out.append("")
    return out


def served(hex_text: str) -> bool:
    """Whether a reply says the request was served (an ``"ok": true`` message)."""
    for line in bytes.fromhex(hex_text).splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and msg.get("ok") is True:
            return True
    return False


def test_the_host_stays_usable_while_a_stranger_attacks(hc: dict[str, Node]) -> None:
    """Beacons (malformed, oversized, a forged host), 200 held pairing connections, 30 held
    storage connections that never finish their TLS handshake, wrong codes, a replayed SPAKE2
    message and malformed cluster-API requests, all at once: the worker's heartbeats stay on
    time, ``status`` answers, a job runs, and the worker reads and writes the storage."""
    n1, n2, n3 = hc["n1"], hc["n2"], hc["n3"]
    broadcast = n1.lab.broadcast
    cluster_id = n1.status()["agent"]["cluster_id"]
    code = n1.lanray("code", check=True).stdout.split()[-1]
    wrong = "1-tiger-canvas" if code != "1-tiger-canvas" else "2-tiger-canvas"
    traces = tracebacks(n1)
    with Watch(n1, n2) as watch:
        # first, while the stranger's address may still open pairing connections
        guesses = attack(n3, "guess", n1.address, str(PAIRING_PORT), wrong, "5")
        held = n3.popen(
            [*STRANGER, "hold", n1.address, str(PAIRING_PORT), "200", "12"],
            stdout=subprocess.PIPE,
        )
        forger = n3.popen(
            [*STRANGER, "forge", cluster_id, n1.address, "12"], stdout=subprocess.PIPE
        )
        at_storage = n3.popen(
            [*STRANGER, "hold", n1.address, str(STORAGE_PORT), "30", "12"],
            stdout=subprocess.PIPE,
        )
        try:
            assert held.stdout is not None and forger.stdout is not None
            assert at_storage.stdout is not None
            assert held.stdout.readline().strip() == "holding"
            assert forger.stdout.readline().strip() == "ready"
            assert at_storage.stdout.readline().strip() == "holding"
            storage = attack(n2, "member_storage", n1.address, str(STORAGE_PORT), str(data_dir(n2)))
            job = n1.lanray("submit", "--", "python", "-c", "print('usable')", timeout=120)
            assert job.returncode == 0, job.stderr
            job_id = job.stdout.split()[-1]
            beacons = attack(n3, "beacons", n1.address, broadcast, "47474")
            scan = n2.lanray("scan", "--json", "--no-arp", "--timeout", "1.5", timeout=60)
            api = attack(n3, "api", n1.address, str(API_PORT), timeout=120)
            member = attack(n2, "member_api", n1.address, str(API_PORT), str(data_dir(n2)))

            def ended() -> dict[str, Any] | None:
                p = n1.lanray("jobs", "--json", timeout=30)
                jobs = {j["id"]: j for j in json.loads(p.stdout)["jobs"]} if p.stdout else {}
                j = jobs.get(job_id, {})
                return j if j.get("state") in ("SUCCEEDED", "FAILED", "LOST", "CANCELLED") else None

            final = wait_for(ended, 120, interval=1.0)
        finally:
            held_out, _ = held.communicate(timeout=60)
            forger_out, _ = forger.communicate(timeout=60)
            storage_out, _ = at_storage.communicate(timeout=60)
    ages = [s["age"] for s in watch.samples if s.get("age") is not None]
    slowest = max((s["took_s"] for s in watch.samples), default=None)
    print(  # shown when an assertion fails (and with -s)
        f"status asked {len(watch.samples)} times (slowest {slowest} s), heartbeat age at most"
        f" {max(ages, default=None)} s; held {held_out.strip()}; forged {forger_out.strip()};"
        f" member {member}; storage held {storage_out.strip()}, member {storage};"
        f" pairing {guesses}; api "
        + json.dumps({k: bytes.fromhex(v)[:80].decode(errors="replace") for k, v in api.items()})
    )
    assert beacons["sent"] > 0
    assert json.loads(held_out.splitlines()[-1])["connected"] > 0
    forged = json.loads(forger_out.splitlines()[-1])
    assert forged["sent"] > 0 and forged["answered"] > 0, forged  # n2's scan was answered

    # the host stayed usable
    assert watch.samples and not watch.problems(), watch.samples
    # ... its storage too: the member was served at once (cheroot shook hands in its one
    # accepting thread, for up to 10 s a connection), and the stranger's connections that
    # never finished their handshake were all closed, well before the stranger let go
    assert storage["error"] is None and max(storage["took_s"]) < 3.0, storage
    held_storage = json.loads(storage_out.splitlines()[-1])
    assert held_storage["connected"] > 0 and held_storage["still_open"] == 0, held_storage
    assert final["state"] == "SUCCEEDED", final
    assert "usable" in n1.lanray("logs", job_id, check=True).stdout
    assert node_states(n1)[n2.address] == "ALIVE"

    # the forged host is shown as such: it cannot be joined by name
    assert scan.returncode == 0, scan.stderr
    hosts = json.loads(scan.stdout)["hosts"]
    # (a forged beacon may replace the real host's entry or be replaced by it, whichever
    # came last; that it can hide the real host is another matter, see the notes)
    for h in (h for h in hosts if h["cluster_name"] == "evil"):
        assert h["compatible"] is False and n3.address in h["why_not"], h

    # pairing: a replay gets no SPAKE2 answer; wrong codes never pair
    fresh, replayed = guesses["replay_replies"]
    assert fresh.startswith("00000021"), guesses  # the host's SPAKE2 message (33 bytes)
    assert replayed == "" or not replayed.startswith("00000021"), guesses
    assert guesses["wrong_code_answers"] and "PAIRED" not in guesses["wrong_code_answers"]

    # malformed cluster-API requests: never served, at most one error line, no crash
    for what, reply in api.items():
        assert not served(reply), (what, bytes.fromhex(reply)[:300])
        assert len([r for r in replies(reply) if r]) <= 1, (what, replies(reply))
    # ... and from a member: one error line each, and the connection still serves
    for what, reply in member["replies"].items():
        msg = json.loads(reply) if reply.startswith("{") else {}
        assert msg.get("ok") is False and "bad request" in str(msg.get("error")), (what, member)
    assert member["status_after"].replace(" ", "").startswith('{"ok":true'), member
    assert not member["huge_line"] or '"ok":true' not in member["huge_line"].replace(" ", "")
    assert tracebacks(n1) == traces, agent_log(n1).read_text()[-3000:]
    assert n1.agent_running()


def test_a_stranger_taking_the_hosts_address_reads_no_secret(
    hc: dict[str, Node], tmp_path: Path
) -> None:
    """Gratuitous ARP for the host's address while the worker heartbeats: the worker's
    connections to the cluster API reach the stranger, which accepts them as the host would.
    What reaches it must hold no secret; afterwards the worker beats to its host again."""
    n1, n2, n3 = hc["n1"], hc["n2"], hc["n3"]
    pcap = Path(n3.lab.node("n3").root) / "tmp" / "stranger.pcap"
    got = attack(
        n3,
        "arp",
        n1.address,
        mac_of(n1),
        n2.address,
        mac_of(n2),
        "2.5",
        env={"STRANGER_PCAP": str(pcap), "STRANGER_API_PORT": str(API_PORT)},
    )
    print(f"the stranger: {got}")  # shown with -s, or on failure
    assert got["victim_to_host"] > 0, f"no traffic of the worker reached the stranger: {got}"
    assert got["accepted"] > 0, f"the worker sent nothing to the fake cluster API: {got}"

    def beating() -> bool:
        row = [r for r in n1.status()["nodes"] if r["ip"] == n2.address and r["state"] == "ALIVE"]
        return bool(row) and row[0]["link"] == "UP" and row[0]["last_heartbeat_s"] < 2

    wait_for(beating, 30, interval=0.5)  # the worker found its host again
    secrets = {**node_secrets(n1), **node_secrets(n2)}
    found = find_secrets(pcap, secrets)
    assert not found, f"the stranger read ({got}):\n" + "\n".join(found)


def test_ray_and_the_jobs_api_refuse_a_client_without_a_certificate(hc: dict[str, Node]) -> None:
    """With the token but no certificate: Ray's GCS does not answer, no gRPC port of the head
    speaks plain text, and the Jobs API answers nothing on the head's LAN address."""
    n1, n2, n3 = hc["n1"], hc["n2"], hc["n3"]
    token = n1.token()
    problems = []
    ray = attack(n3, "ray_ports", n1.address, token, RAY_GRPC_PORTS)
    if "gcs_cluster_id" in ray:
        problems.append(f"Ray's GCS told a client with only the token its cluster id: {ray}")
    plain = [port for port, ready in ray["plain_grpc_ready"].items() if ready]
    if plain:
        problems.append(f"the head speaks plain gRPC on ports {', '.join(plain)}")
    url = f"http://{n1.address}:8265/api/jobs/"
    for node in (n2, n3):
        answer = attack(node, "http", url, token)
        if "no_answer" not in answer:
            problems.append(f"the Jobs API at {url} answered {node.name}: {answer}")
        print(f"the Jobs API at {url}, to {node.name}: {answer}")
    print(f"Ray, to a client with only the token: {ray}")  # shown with -s, or on failure
    assert not problems, "\n".join(problems)


def test_a_replayed_cluster_api_stream_is_refused(hc: dict[str, Node], tmp_path: Path) -> None:
    """The bytes a worker sent to the cluster API (a forwarded 'jobs' and its heartbeats),
    recorded on the wire and sent again from the stranger, are not served."""
    n1, n2, n3 = hc["n1"], hc["n2"], hc["n3"]
    pcap = tmp_path / "api.pcap"
    with BridgeCapture(n1.lab, pcap):
        assert n2.lanray("jobs", "--json", timeout=60).returncode == 0
        time.sleep(1.5)  # and a heartbeat or two
    recorded = [
        s
        for s in tcp_streams(read_pcap(pcap))
        if s.src == n2.address and s.dst == n1.address and s.dport == API_PORT
        if s.syn and s.data
    ]
    assert recorded, "no connection of the worker to the cluster API was recorded"
    results = []
    for i, stream in enumerate(recorded[:3]):
        path = Path(n3.lab.node("n3").root) / "tmp" / f"replay{i}.bin"
        path.write_bytes(bytes(stream.data))
        results.append(attack(n3, "replay", n1.address, str(API_PORT), str(path)))
    print(f"replayed {[r['sent'] for r in results]} bytes, replies {results}")
    accepted = [r for r in results if served(r["reply"])]
    assert not accepted, "the host served a replayed stream: " + "; ".join(
        bytes.fromhex(r["reply"])[:200].decode(errors="replace") for r in accepted
    )
