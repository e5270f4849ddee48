"""The cluster storage in the lab: a job submitted from n2 writes 50 MB under its
``LANRAY_OUTPUT_DIR`` (on the host's storage), ``results`` on n2 brings back the very same
bytes, and a client without the cluster's certificate gets nothing.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import needs_root
from tests.helpers.labkit import Node, wait_for

pytestmark = needs_root

SIZE = 50 << 20
SEED = 20

# The job: deterministic bytes (n2 makes the same to compare), written through the storage.
JOB = f"""
import os, random
from lanray_tui import storage
data = random.Random({SEED}).randbytes({SIZE})
fs = storage.filesystem()
with fs.open(storage.output_path("big.bin"), "wb") as f:
    f.write(data)
fs.pipe_file(storage.output_path("sub/note.txt"), b"hello")
print("output:", os.environ["LANRAY_OUTPUT_DIR"], flush=True)
"""

# A client of n3, which is in no cluster: it trusts the host's CA and shows no certificate,
# or one of a CA of its own ("other").
NO_CERT = """
import ssl, sys, tempfile, urllib.request
from pathlib import Path
ctx = ssl.create_default_context(cafile=sys.argv[2])
if sys.argv[3] == "other":
    from lanray_tui.core.cluster_ca import NodeTls
    other = NodeTls(Path(tempfile.mkdtemp()))
    other.ensure_ca("another-cluster", "other")
    other.issue_own("intruder", ["127.0.0.1"])
    ctx.load_cert_chain(other.cert, other.key)
try:
    urllib.request.urlopen(sys.argv[1], context=ctx, timeout=10)
except (OSError, ssl.SSLError) as exc:
    print("refused:", type(exc).__name__, exc)
    raise SystemExit(0)
print("answered")
raise SystemExit(1)
"""


def jobs_json(node: Node) -> dict[str, dict[str, Any]]:
    p = node.lanray("jobs", "--json", timeout=30)
    assert p.returncode == 0, p.stderr
    return {j["id"]: j for j in json.loads(p.stdout)["jobs"]}


def test_results_of_a_job_submitted_from_a_worker_come_back_byte_identical(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    n1, n2, n3 = cluster["n1"], cluster["n2"], cluster["n3"]
    p = n2.lanray("submit", "--name", "big", "--", "python", "-c", JOB, timeout=120)
    assert p.returncode == 0, p.stderr
    job = p.stdout.split()[-1]

    def ended() -> dict[str, Any] | None:
        j = jobs_json(n2)[job]
        return j if j["state"] in ("SUCCEEDED", "FAILED", "CANCELLED", "LOST") else None

    final = wait_for(ended, 120, interval=0.5)
    log = n2.lanray("logs", job).stdout
    assert final["state"] == "SUCCEEDED", log
    assert final["output"] == f"webdavs://{n1.address}:47477/jobs/{job}/"
    assert f"output: {final['output']}" in log  # what the job was given
    assert final["output_bytes"] == SIZE + 5  # the host's count, from its own disk

    dest = tmp_path / "results"
    dest.mkdir()
    started = time.monotonic()
    p = n2.lanray("results", job, "--to", str(dest), timeout=120)
    took = time.monotonic() - started
    assert p.returncode == 0, p.stderr
    assert "big.bin" in p.stderr  # progress of the large file
    assert f"{job}: 2 file(s), 52.4 MB -> {dest / job}" in p.stdout
    expected = hashlib.sha256(random.Random(SEED).randbytes(SIZE)).hexdigest()
    assert hashlib.sha256((dest / job / "big.bin").read_bytes()).hexdigest() == expected
    assert (dest / job / "sub" / "note.txt").read_bytes() == b"hello"
    print(f"results: {SIZE / 1e6 / took:.0f} MB/s including the command's start")

    # n3 is in no cluster (earlier tests of the session may have left it credentials: gone)
    n3.leave()
    n3.run(["sh", "-c", 'rm -rf "$XDG_DATA_HOME/lanray-tui/cluster.json" '
                        '"$XDG_DATA_HOME/lanray-tui/tls"'], check=True)  # fmt: skip
    # without a certificate of the cluster, the storage refuses it
    ca = n1.run(["sh", "-c", 'cat "$XDG_DATA_HOME/lanray-tui/tls/ca.pem"'], check=True).stdout
    (tmp_path / "ca.pem").write_text(ca)
    url = f"https://{n1.address}:47477/jobs/{job}/big.bin"
    for cert in ("none", "other"):
        argv = [sys.executable, "-c", NO_CERT, url, str(tmp_path / "ca.pem"), cert]
        p = n3.run(argv, timeout=30)
        assert p.returncode == 0 and "refused" in p.stdout, (cert, p.stdout, p.stderr)
    p = n3.lanray("results", job, "--to", str(tmp_path), timeout=30)
    assert p.returncode != 0 and "no cluster" in p.stderr and "Traceback" not in p.stderr

    # --rm: gone from the storage, and from jobs --json's sizes
    p = n2.lanray("results", job, "--rm", timeout=60)
    assert p.returncode == 0 and "removed" in p.stdout, p.stderr
    assert jobs_json(n2)[job]["output_bytes"] is None
    p = n2.lanray("results", job, "--to", str(tmp_path / "again"), timeout=60)
    assert p.returncode == 1 and "has no results" in p.stderr, p.stderr
