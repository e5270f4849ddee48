"""The cluster storage: its addresses and cap (pure), and its server on loopback with the
cluster's certificates: a node of the cluster reads and writes, anyone else is refused."""

from __future__ import annotations

import os
import pickle
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lanray_tui.core.cluster_ca import NodeTls
from lanray_tui.core.storage_layout import (
    Folder,
    StorageError,
    job_folders,
    job_uri,
    over_cap,
    parse,
)

# ----- pure parts -----------------------------------------------------------------------------


def test_addresses_of_the_area_and_of_a_job_folder() -> None:
    assert job_uri("webdavs://10.0.0.1:47477/", "j-1a2b") == "webdavs://10.0.0.1:47477/jobs/j-1a2b/"
    loc = parse("webdavs://10.0.0.1:47477/jobs/j-1a2b/")
    assert (loc.host, loc.port, loc.path) == ("10.0.0.1", 47477, "jobs/j-1a2b")
    assert loc.https == "https://10.0.0.1:47477/" and loc.base == "webdavs://10.0.0.1:47477/"
    assert parse("webdavs://h:1").path == ""


@pytest.mark.parametrize(
    "bad", ["http://h:1/", "webdavs://h/", "webdavs://h:0/", "webdavs://h:1/a/../b", ""]
)
def test_what_is_not_a_storage_address(bad: str) -> None:
    with pytest.raises(StorageError):
        parse(bad)


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "..", "-x", "a b", "x" * 65])
def test_a_job_id_that_cannot_name_a_folder_is_refused(bad: str) -> None:
    with pytest.raises(StorageError):
        job_uri("webdavs://h:1/", bad)


def test_the_cap_removes_the_oldest_first_and_never_a_running_job() -> None:
    folders = [Folder("new", 30.0, 40), Folder("old", 10.0, 50), Folder("mid", 20.0, 30)]
    assert over_cap(folders, 120) == []
    assert over_cap(folders, 100) == ["old"]
    assert over_cap(folders, 40) == ["old", "mid"]
    assert over_cap(folders, 40, keep=frozenset({"old"})) == ["mid", "new"]
    assert over_cap([], 0) == []


def test_job_folders_have_their_sizes_and_newest_times(tmp_path: Path) -> None:
    for name, size, mtime in (("a", 10, 100.0), ("b", 5, 50.0)):
        d = tmp_path / "jobs" / name / "sub"
        d.mkdir(parents=True)
        (d / "f").write_bytes(b"x" * size)
        os.utime(d / "f", (mtime, mtime))
        os.utime(d, (1.0, 1.0))
        os.utime(d.parent, (1.0, 1.0))
    (tmp_path / "jobs" / "stray-file").write_bytes(b"ignored")
    assert job_folders(tmp_path) == [Folder("b", 50.0, 5), Folder("a", 100.0, 10)]
    assert job_folders(tmp_path / "none") == []


def test_jobs_get_the_storage_and_their_own_folder(tmp_path: Path) -> None:
    from lanray_tui.core.job_service_runner import JobRunner
    from lanray_tui.core.jobs_records import JobSpec

    runner = JobRunner(
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        max_running=1,
        python_dir=tmp_path,
        ready=lambda: True,
        closed=lambda: False,
    )
    spec = JobSpec(command=["true"], env={"A": "1"})
    assert "LANRAY_STORAGE" not in runner.runtime_env(spec, "j-1")["env_vars"]
    runner.storage = "webdavs://10.0.0.1:47477/"
    env = runner.runtime_env(spec, "j-1")["env_vars"]
    assert env["LANRAY_STORAGE"] == "webdavs://10.0.0.1:47477/"
    assert env["LANRAY_OUTPUT_DIR"] == "webdavs://10.0.0.1:47477/jobs/j-1/"
    assert env["A"] == "1"


# ----- the server on loopback -----------------------------------------------------------------


def _member(folder: Path, ca: NodeTls, name: str) -> NodeTls:
    tls = NodeTls(folder)
    tls.store(ca.sign(tls.request(name, ["127.0.0.1"])), ca.ca_cert.read_bytes())
    return tls


@pytest.fixture()
def area(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from lanray_tui.core.storage_server import StorageArea

    host = NodeTls(tmp_path / "host")
    host.ensure_ca("cluster-a", "a")
    host.issue_own("host", ["127.0.0.1"])
    node = _member(tmp_path / "node", host, "n2")
    monkeypatch.setenv("RAY_TLS_SERVER_CERT", str(node.cert))
    monkeypatch.setenv("RAY_TLS_SERVER_KEY", str(node.key))
    monkeypatch.setenv("RAY_TLS_CA_CERT", str(node.ca_cert))
    served = StorageArea(tmp_path / "storage", host, "127.0.0.1", 0, max_gb=1.0)
    served.start()
    try:
        yield served
    finally:
        served.stop()


def test_a_node_of_the_cluster_writes_reads_and_lists(area: Any, tmp_path: Path) -> None:
    from lanray_tui.storage_fs import ClusterFS

    fs = ClusterFS(area.uri)
    data = os.urandom(3 << 20)
    with fs.open("jobs/j-1/deep/model.bin", "wb") as f:  # parent folders made on the way
        f.write(data)
    assert (area.root / "jobs/j-1/deep/model.bin").read_bytes() == data
    fs.get_file("jobs/j-1/deep/model.bin", str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == data
    assert fs.sizes() == {"jobs": {"j-1": len(data)}}
    with pytest.raises(FileNotFoundError):
        fs.get_file("jobs/j-1/none", str(tmp_path / "none"))
    fs.get_file("jobs/j-1/deep", str(tmp_path / "a-folder"))  # a folder: made here
    assert (tmp_path / "a-folder").is_dir()
    # sent to a Ray worker, it is made again there from the address alone
    again = pickle.loads(pickle.dumps(fs))
    assert again.ls("jobs/j-1/deep", detail=False) == ["jobs/j-1/deep/model.bin"]
    assert fs.cat_file(f"{area.uri}jobs/j-1/deep/model.bin") == data


def test_results_come_home_with_their_folders(
    area: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lanray_tui import cli_results
    from lanray_tui.cli_results import fetch
    from lanray_tui.storage_fs import ClusterFS

    monkeypatch.setattr(cli_results, "PROGRESS_FROM", 4)  # a.csv is "large", report.txt is not

    fs = ClusterFS(area.uri)
    fs.pipe_file("jobs/j-2/report.txt", b"ok\n")
    fs.pipe_file("jobs/j-2/plots/a.csv", b"1,2\n")
    assert fetch(fs, "j-2", tmp_path / "got" / "j-2") == (2, 7)
    assert (tmp_path / "got/j-2/plots/a.csv").read_bytes() == b"1,2\n"
    assert capsys.readouterr().err.startswith("  plots/a.csv: 0.0/0.0 MB")  # only the 4 bytes
    with pytest.raises(StorageError, match="no results"):
        fetch(fs, "j-none", tmp_path / "x")


def _requests(fs: Any) -> list[str]:
    """What ``fs`` asks the storage from now on: 'METHOD path' (with a PROPFIND's depth)."""
    seen: list[str] = []

    def hook(request: httpx.Request) -> None:
        depth = f" depth={request.headers['Depth']}" if "Depth" in request.headers else ""
        seen.append(f"{request.method} {request.url.path.rstrip('/')}{depth}")

    fs.client.http.event_hooks = {"request": [hook], "response": []}
    return seen


def test_files_written_into_a_known_folder_cost_one_request_each(area: Any) -> None:
    """A checkpoint of many files: one PUT each once the folder is known (webdav4 asked for
    the folder's properties with Depth 1 before each file: the whole listing, every time)."""
    from lanray_tui.storage_fs import ClusterFS

    fs = ClusterFS(area.uri)
    seen = _requests(fs)
    with fs.open("jobs/j-5/ckpt/a.json", "wb") as f:  # neither folder exists yet
        f.write(b"a")
    assert seen[-1] == "PUT /jobs/j-5/ckpt/a.json"
    assert "PROPFIND /jobs/j-5 depth=1" not in seen
    seen.clear()
    for name in ("b.json", "c.json"):
        with fs.open(f"jobs/j-5/ckpt/{name}", "wb") as f:
            f.write(name.encode())
    fs.pipe_file("jobs/j-5/ckpt/d.json", b"d")
    assert seen == [f"PUT /jobs/j-5/ckpt/{n}.json" for n in "bcd"]
    assert (area.root / "jobs/j-5/ckpt/c.json").read_bytes() == b"c.json"
    # a folder's own properties, not its listing
    seen.clear()
    assert fs.info("jobs/j-5/ckpt")["type"] == "directory"
    assert fs.isfile("jobs/j-5/ckpt/a.json") and not fs.isdir("jobs/j-5/ckpt/a.json")
    assert all(r.endswith("depth=0") for r in seen), seen
    with pytest.raises(FileNotFoundError):
        fs.info("jobs/j-5/none")
    fs.makedirs("jobs/j-5/ckpt", exist_ok=True)
    with pytest.raises(FileExistsError):
        fs.makedirs("jobs/j-5/ckpt")
    with pytest.raises(NotADirectoryError):
        fs.makedirs("jobs/j-5/ckpt/a.json/x")


def test_a_folder_removed_behind_the_clients_back_is_made_again(area: Any, tmp_path: Path) -> None:
    import shutil

    from lanray_tui.storage_fs import ClusterFS

    fs = ClusterFS(area.uri)
    fs.pipe_file("jobs/j-6/out/a.bin", b"first")
    shutil.rmtree(area.root / "jobs/j-6")  # the host's cap, or another node's --rm
    data = os.urandom(1 << 20)
    (tmp_path / "b.bin").write_bytes(data)
    fs.put_file(str(tmp_path / "b.bin"), "jobs/j-6/out/b.bin")  # 409, folders, sent again
    assert (area.root / "jobs/j-6/out/b.bin").read_bytes() == data
    shutil.rmtree(area.root / "jobs/j-6")
    with fs.open("jobs/j-6/out/c.bin", "wb") as f:
        f.write(data)
    assert (area.root / "jobs/j-6/out/c.bin").read_bytes() == data
    fs.rm("jobs/j-6", recursive=True)  # its own removal: folders known no longer
    seen = _requests(fs)
    fs.pipe_file("jobs/j-6/out/d.bin", b"d")
    assert seen[0].startswith("MKCOL") and seen[-1] == "PUT /jobs/j-6/out/d.bin"


def test_the_cap_removes_the_oldest_job_folders(area: Any) -> None:
    area.cap_bytes = 10
    for name, age in (("j-old", 100), ("j-new", 0)):
        (area.root / "jobs" / name).mkdir(parents=True)
        (area.root / "jobs" / name / "f").write_bytes(b"x" * 8)
        t = time.time() - age
        os.utime(area.root / "jobs" / name / "f", (t, t))
    assert area.enforce_cap() == ["j-old"]
    assert sorted(p.name for p in (area.root / "jobs").iterdir()) == ["j-new"]


def _get(area: Any, ctx: ssl.SSLContext) -> httpx.Response:
    with httpx.Client(verify=ctx, timeout=10) as client:
        return client.request(
            "PROPFIND", f"https://127.0.0.1:{area.port}/jobs/", headers={"Depth": "1"}
        )


def test_a_client_without_a_certificate_of_the_cluster_is_refused(
    area: Any, tmp_path: Path
) -> None:
    host_ca = str(area.tls.ca_cert)
    no_cert = ssl.create_default_context(cafile=host_ca)
    with pytest.raises((httpx.HTTPError, ssl.SSLError, OSError)):
        _get(area, no_cert)
    other = NodeTls(tmp_path / "other")
    other.ensure_ca("cluster-b", "b")
    other.issue_own("intruder", ["127.0.0.1"])
    foreign = ssl.create_default_context(cafile=host_ca)
    foreign.load_cert_chain(other.cert, other.key)
    with pytest.raises((httpx.HTTPError, ssl.SSLError, OSError)):
        _get(area, foreign)
    member = ssl.create_default_context(cafile=host_ca)
    member.load_cert_chain(os.environ["RAY_TLS_SERVER_CERT"], os.environ["RAY_TLS_SERVER_KEY"])
    assert _get(area, member).status_code == 207


# ----- what jobs use ------------------------------------------------------------------------


def test_a_job_finds_its_folder_from_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from lanray_tui import storage

    monkeypatch.delenv("LANRAY_STORAGE", raising=False)
    monkeypatch.delenv("LANRAY_OUTPUT_DIR", raising=False)
    assert not storage.available()
    with pytest.raises(StorageError, match="only in jobs"):
        storage.filesystem()
    with pytest.raises(StorageError, match="only in cluster jobs"):
        storage.output_path()
    monkeypatch.setenv("LANRAY_STORAGE", "webdavs://10.0.0.1:47477/")
    monkeypatch.setenv("LANRAY_OUTPUT_DIR", "webdavs://10.0.0.1:47477/jobs/j-1/")
    assert storage.available()
    assert storage.output_path() == "jobs/j-1"
    assert storage.output_path("/plots/a.png") == "jobs/j-1/plots/a.png"


def test_run_config_keeps_the_run_in_the_jobs_folder(
    area: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pyarrow", reason="Ray Train's dependencies are not installed")
    pytest.importorskip("pandas", reason="Ray Train's dependencies are not installed")
    from lanray_tui import storage

    monkeypatch.setenv("LANRAY_STORAGE", area.uri)
    monkeypatch.setenv("LANRAY_OUTPUT_DIR", area.uri + "jobs/j-3/")
    train = storage.run_config("digits")
    assert (train.name, train.storage_path) == ("digits", "jobs/j-3")
    train.storage_filesystem.create_dir("jobs/j-3/digits/x")  # through pyarrow, to the host
    assert (area.root / "jobs/j-3/digits/x").is_dir()
    tune = storage.run_config("sweep", tune=True)
    assert type(tune).__module__.startswith("ray.tune") and tune.storage_path == "jobs/j-3"


async def test_a_host_whose_storage_cannot_start_goes_on_and_says_why(tmp_path: Path) -> None:
    import socket
    from types import SimpleNamespace

    from lanray_tui.core.storage_server import start_for_host

    tls = NodeTls(tmp_path / "tls")
    tls.ensure_ca("cluster-a", "a")
    tls.issue_own("host", ["127.0.0.1"])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        host = SimpleNamespace(
            cfg={"storage.port": taken.getsockname()[1], "storage.max_gb": 1.0},
            data_dir=tmp_path,
            node=SimpleNamespace(node_ip="127.0.0.1", detail=""),
            jobs=None,
        )
        assert await start_for_host(host) is None  # type: ignore[arg-type]
    assert host.node.detail.startswith("storage not available: ")
    assert "in use" in host.node.detail


def test_the_tuis_save_key_brings_results_home(area: Any, tmp_path: Path) -> None:
    """What 's' in the job details does: from this node's credentials and config."""
    import shutil
    from types import SimpleNamespace

    from lanray_tui.core import config, credentials
    from lanray_tui.screens.job_details import save_results
    from lanray_tui.storage_fs import ClusterFS

    ClusterFS(area.uri).pipe_file("jobs/j-4/model.txt", b"weights")
    cfg = config.load().with_overrides(**{"storage.port": area.port})
    session = SimpleNamespace(cfg=cfg)
    text, ok = save_results(session, "j-4")  # type: ignore[arg-type]
    assert not ok and "in no cluster" in text
    paths = cfg.paths()
    creds = credentials.Credentials.new("a").replace(head_address="127.0.0.1")
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    credentials.save(paths.credentials, creds)
    node = Path(os.environ["RAY_TLS_SERVER_CERT"]).parent
    shutil.copytree(node, paths.tls_dir)
    text, ok = save_results(session, "j-4")  # type: ignore[arg-type]
    assert ok, text
    assert (Path.home() / "lanray_results/j-4/model.txt").read_bytes() == b"weights"
    assert text.startswith("j-4: 1 file(s), 0.0 MB saved in ")
    text, ok = save_results(session, "j-none")  # type: ignore[arg-type]
    assert not ok and text == "job j-none has no results in the cluster storage"


def test_results_says_in_one_line_when_the_storage_does_not_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    from lanray_tui import cli
    from lanray_tui.core import config, credentials

    host = NodeTls(tmp_path / "host")
    host.ensure_ca("cluster-a", "a")
    paths = config.load().paths()
    _member(paths.tls_dir, host, "n2")
    credentials.save(
        paths.credentials, credentials.Credentials.new("a").replace(head_address="127.0.0.1")
    )
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "c.yaml"
    conf.write_text(f"storage:\n  port: {port}\n")
    assert cli.main(["--config", str(conf), "results", "j-1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"lanray-tui: error: the cluster storage at webdavs://127.0.0.1:{port}/")
    assert "did not answer" in err and len(err.strip().splitlines()) == 1


def test_the_servers_threads_never_keep_a_process_alive(area: Any) -> None:
    import threading

    ours = [t for t in threading.enumerate() if t.name.startswith("lanray-storage")]
    assert len(ours) > 1 and all(t.daemon for t in ours)


# ----- the client's TLS in memory and the server's writer ------------------------------------


def test_large_files_cross_whole_both_ways_in_one_connection(area: Any, tmp_path: Path) -> None:
    """Sizes off every boundary (TLS records, the 1 MiB reads and blocks) come back byte for
    byte; the connection is kept between requests."""
    from lanray_tui.storage_fs import ClusterFS
    from lanray_tui.storage_net import BulkTlsStream

    fs = ClusterFS(area.uri)
    for size in (0, 1, 16383, 16385, (1 << 20) + 7, (5 << 20) - 3):
        data = os.urandom(size)
        (tmp_path / "src").write_bytes(data)
        fs.put_file(str(tmp_path / "src"), f"jobs/j-7/{size}.bin")
        assert (area.root / f"jobs/j-7/{size}.bin").read_bytes() == data
        fs.get_file(f"jobs/j-7/{size}.bin", str(tmp_path / "back"))
        assert (tmp_path / "back").read_bytes() == data
    pool = fs.client.http._transport._pool
    assert len(pool.connections) == 1
    stream = pool.connections[0]._connection._network_stream
    assert isinstance(stream, BulkTlsStream)
    assert stream.ssl_obj.version() == "TLSv1.3"


def test_a_connection_the_server_closed_is_made_again(area: Any) -> None:
    """The storage closed an idle kept connection between two requests."""
    from lanray_tui.storage_fs import ClusterFS

    area.server._server.timeout = 0.3  # cheroot closes connections idle this long
    fs = ClusterFS(area.uri)
    fs.pipe_file("jobs/j-8/a", b"a")
    pool = fs.client.http._transport._pool
    first = pool.connections[0]._connection._network_stream
    deadline = time.monotonic() + 10
    while not first.get_extra_info("is_readable") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert first.get_extra_info("is_readable")  # closed by the server: EOF to read
    assert fs.cat_file("jobs/j-8/a") == b"a"
    assert pool.connections[0]._connection._network_stream is not first


def test_a_server_of_another_cluster_is_refused_by_the_client(area: Any, tmp_path: Path) -> None:
    from lanray_tui.core.storage_server import StorageArea
    from lanray_tui.storage_fs import ClusterFS, errors

    other = NodeTls(tmp_path / "other")
    other.ensure_ca("cluster-b", "b")
    other.issue_own("impostor", ["127.0.0.1"])
    impostor = StorageArea(tmp_path / "stolen", other, "127.0.0.1", 0, max_gb=1.0)
    impostor.start()
    try:
        with pytest.raises(errors(), match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            ClusterFS(impostor.uri).pipe_file("jobs/j-9/secret", b"for the cluster only")
    finally:
        impostor.stop()
    assert not (tmp_path / "stolen/jobs/j-9").exists()


def test_a_peer_that_never_speaks_tls_times_out_and_garbage_is_an_error(area: Any) -> None:
    import socket
    import threading

    from lanray_tui.storage_fs import ClusterFS, errors

    with socket.socket() as silent:  # accepts (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        uri = f"webdavs://127.0.0.1:{silent.getsockname()[1]}/"
        t0 = time.monotonic()
        with pytest.raises(httpx.ConnectTimeout):
            ClusterFS(uri, timeout=0.5).pipe_file("x", b"x")
        assert time.monotonic() - t0 < 5

    with socket.socket() as liar:  # answers the handshake with an HTTP page
        liar.bind(("127.0.0.1", 0))
        liar.listen()

        def answer() -> None:
            conn, _ = liar.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")

        threading.Thread(target=answer, daemon=True).start()
        uri = f"webdavs://127.0.0.1:{liar.getsockname()[1]}/"
        with pytest.raises(errors()):
            ClusterFS(uri, timeout=5).pipe_file("x", b"x")


def test_the_server_writes_a_body_without_copying_it_per_record() -> None:
    """cheroot's own writer made a new bytes of the rest of the block for every TLS record it
    sent; ours hands each block to ``sendall`` once (and still counts what it wrote)."""
    from lanray_tui.adapters.webdav_tls import GatedAdapter

    sent: list[int] = []

    class Sock:
        def sendall(self, data: Any) -> None:
            sent.append(len(data))

    writer = GatedAdapter.makefile(None, Sock(), "wb")  # type: ignore[arg-type]
    writer.write(b"x" * (1 << 20))
    writer.write(b"")
    writer.write(b"tail")
    writer.flush()
    assert sent == [1 << 20, 0, 4] and writer.bytes_written == (1 << 20) + 4
    with pytest.raises(TypeError):
        writer.write("text")


# ----- strangers at the storage's door -------------------------------------------------------


def test_the_gate_caps_unfinished_handshakes_per_address_and_in_all() -> None:
    from lanray_tui.adapters.webdav_tls import Gate

    gate = Gate(per_peer=2, total=3)
    a1, a2 = gate.enter("10.0.0.9"), gate.enter("10.0.0.9")
    assert a1 is not None and a2 is not None and gate.enter("10.0.0.9") is None
    b1 = gate.enter("10.0.0.2")
    assert b1 is not None and gate.enter("10.0.0.3") is None  # 3 in all
    gate.leave(a1)
    gate.leave(a1)  # twice: no change
    assert gate.unfinished() == 2 and gate.unfinished("10.0.0.9") == 1
    assert gate.enter("10.0.0.9") is not None


def _silent(port: int, source: str, count: int) -> list[Any]:
    import socket

    held = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
        s.sendall(b"\x16\x03")  # the start of a TLS record, and then nothing
        held.append(s)
    return held


def _closed_by_server(s: Any, within: float) -> bool:
    s.settimeout(within)
    try:
        return bool(s.recv(1) == b"")
    except TimeoutError:
        return False
    except OSError:  # reset
        return True


def test_a_stranger_who_connects_and_says_nothing_holds_up_nobody(
    area: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cheroot shook hands in its one accepting thread for up to 10 s: one silent TCP
    connection from a stranger stopped the storage for every member, and a member's request
    then failed. Now: members are served at once; the stranger's connections over the cap
    are closed at once, the others at the handshake's deadline; nothing stays counted."""
    from lanray_tui.adapters import webdav_tls
    from lanray_tui.storage_fs import ClusterFS

    monkeypatch.setattr(webdav_tls, "HANDSHAKE_S", 2.0)
    gate = area.server._server.ssl_adapter.gate
    kept = ClusterFS(area.uri)
    kept.pipe_file("jobs/j-10/a", b"a")
    stranger = _silent(area.port, "127.0.0.2", webdav_tls.PER_PEER + 3)
    try:
        for _ in range(3):  # a member's new connections and its kept one, all at once
            t0 = time.monotonic()
            assert ClusterFS(area.uri).cat_file("jobs/j-10/a") == b"a"
            assert kept.cat_file("jobs/j-10/a") == b"a"
            assert time.monotonic() - t0 < 1.5
        over = stranger[webdav_tls.PER_PEER :]
        assert all(_closed_by_server(s, 1.0) for s in over)  # refused at the door
        t0 = time.monotonic()
        assert all(_closed_by_server(s, 5.0) for s in stranger[: webdav_tls.PER_PEER])
        assert time.monotonic() - t0 < 4.0
    finally:
        for s in stranger:
            s.close()
    deadline = time.monotonic() + 5
    while gate.unfinished() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gate.unfinished() == 0


def test_a_handshake_trickled_a_byte_at_a_time_is_cut_at_its_deadline(
    area: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import socket

    from lanray_tui.adapters import webdav_tls

    monkeypatch.setattr(webdav_tls, "HANDSHAKE_S", 1.5)
    # a real client's first bytes (its ClientHello), one every 0.2 s
    hello = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ssl.create_default_context().wrap_bio(*hello, server_hostname="x")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    data = hello[1].read()
    with socket.create_connection(("127.0.0.1", area.port), timeout=5) as s:
        t0 = time.monotonic()
        cut = None
        for byte in data:
            try:
                s.sendall(bytes([byte]))
            except OSError:
                cut = time.monotonic() - t0
                break
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    cut = time.monotonic() - t0
                    break
            except BlockingIOError:
                pass
            except OSError:
                cut = time.monotonic() - t0
                break
            s.setblocking(True)
            time.sleep(0.2)
    assert cut is not None and 1.0 < cut < 3.5, cut
    assert area.server._server.ssl_adapter.gate.unfinished() == 0


def test_refused_and_finished_handshakes_leave_nothing_counted(area: Any, tmp_path: Path) -> None:
    from lanray_tui.storage_fs import ClusterFS

    other = NodeTls(tmp_path / "other")
    other.ensure_ca("cluster-b", "b")
    other.issue_own("intruder", ["127.0.0.1"])
    foreign = ssl.create_default_context(cafile=str(area.tls.ca_cert))
    foreign.load_cert_chain(other.cert, other.key)
    for _ in range(10):
        with pytest.raises((httpx.HTTPError, ssl.SSLError, OSError)):
            _get(area, foreign)
        ClusterFS(area.uri).pipe_file("jobs/j-11/a", b"a")
    gate = area.server._server.ssl_adapter.gate
    deadline = time.monotonic() + 5
    while gate.unfinished() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gate.unfinished() == 0
