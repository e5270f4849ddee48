"""Starting, waiting for and stopping this node's agent: shared by the CLI and the TUI."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import TYPE_CHECKING

from ..adapters import system
from . import credentials, guard, netinfo, texts
from .config import Config
from .control import AgentError, ControlClient
from .credentials import Credentials
from .errors import LanrayError, NotRunningError
from .logfiles import tail
from .models import AgentInfo
from .paths import Paths, ensure_private_dir
from .protocol import LeaveRequest, ProtocolError

if TYPE_CHECKING:
    from .cluster_ca import NodeTls
    from .discovery import FoundHost

Progress = Callable[[str], None]
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def client(paths: Paths) -> ControlClient:
    return ControlClient(paths.socket)


def running_agent(paths: Paths) -> AgentInfo | None:
    """This node's agent, if one answers."""
    try:
        return client(paths).info(timeout=3.0)
    except NotRunningError:
        return None


def refuse_if_running(paths: Paths) -> None:
    """A second ``host`` or ``join`` on a node says what already runs instead of starting."""
    info = running_agent(paths)
    if info is not None:
        what = "hosts" if info.role == "host" else "is joined to"
        raise LanrayError(
            f"this node already {what} cluster '{info.cluster_name}' (agent pid {info.pid}, "
            f"head {info.head_address}); see 'lanray-tui status' or stop it with 'lanray-tui leave'"
        )


def store_join_credentials(paths: Paths, creds: Credentials) -> None:
    ensure_private_dir(paths.data_dir)
    credentials.save(paths.credentials, creds)


def spawn_agent(
    paths: Paths,
    role: str,
    config_file: Path | None,
    extra: Sequence[str] = (),
    cfg: Config | None = None,
) -> int:
    """Start the agent detached from this terminal; returns its PID. ``extra`` holds
    command-line settings (``--cpus 2`` ...) that the agent applies over the config.

    Given the loaded ``cfg`` (with ``extra`` applied) in a single-threaded process such as
    the CLI, the agent is forked: it starts Ray without a new interpreter and fresh imports,
    which is most of what lanray-tui adds to a bare ``ray start``. A threaded caller (the
    TUI) gets a new process instead, since forking a threaded process is unsafe.
    """
    ensure_private_dir(paths.state_dir)
    if cfg is not None and threading.active_count() == 1:
        return _fork_agent(paths, role, cfg)
    argv = [sys.executable, "-m", "lanray_tui"]
    if config_file is not None:
        argv += ["--config", str(config_file.resolve())]
    argv += ["agent", "--role", role, *extra]
    with open(paths.agent_log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # no SIGHUP when the terminal or SSH session goes
            close_fds=True,
        )
    return proc.pid


def _fork_agent(paths: Paths, role: str, cfg: Config) -> int:
    from .agent import Agent

    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.setsid()  # no SIGHUP when the terminal or SSH session goes
        null = os.open(os.devnull, os.O_RDONLY)
        log = os.open(paths.agent_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        configure_agent_logging(paths)
        code = Agent(cfg, role).run()
    except LanrayError as exc:
        print(f"agent error: {exc}", flush=True)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        os._exit(code)


AGENT_LOG_MAX_BYTES = 5 << 20
AGENT_LOG_BACKUPS = 2


def configure_agent_logging(paths: Paths) -> None:
    """The agent's log: a size-capped, rotated agent.log when its output goes there (a
    detached agent), else stdout (in the foreground, or under systemd: journald)."""
    handler: logging.Handler
    if _stdout_is(paths.agent_log):
        handler = RotatingFileHandler(
            paths.agent_log, maxBytes=AGENT_LOG_MAX_BYTES, backupCount=AGENT_LOG_BACKUPS
        )
    else:
        handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def _stdout_is(path: Path) -> bool:
    try:
        out, log = os.fstat(sys.stdout.fileno()), os.stat(path)
    except (OSError, ValueError):
        return False
    return (out.st_dev, out.st_ino) == (log.st_dev, log.st_ino)


def wait_ready(
    paths: Paths, pid: int, timeout: float, progress: Progress | None = None
) -> AgentInfo:
    """Wait until the agent reports Ray ready; raise with the agent's reason if it fails.

    ``timeout`` is for the start itself: while the node waits its turn at the host's start
    gate (a lab switched on at once), the wait goes on, and says how many go first."""
    ctl = client(paths)
    deadline = time.monotonic() + timeout
    last, last_detail = "", ""
    info: AgentInfo | None = None
    while time.monotonic() < deadline:
        try:
            info = ctl.info(timeout=3.0)
        except (NotRunningError, AgentError, ProtocolError):
            info = None
        if info is not None:
            if info.state != last and progress is not None:
                progress(info.state)
            # while starting, the runtime's steps (pulling an image: layers and bytes), and
            # why a start is retried ("Ray start failed: GCS busy; retrying in 7 s ...")
            starting = info.state in ("starting", "restarting") and info.detail != last_detail
            if starting and info.detail and progress is not None:
                progress(info.detail)
            last, last_detail = info.state, info.detail
            if info.detail.startswith(texts.WAITING_TURN):
                deadline = max(deadline, time.monotonic() + timeout)
            if info.state == "ready":
                return info
            if info.state == "failed":
                raise LanrayError(f"the agent could not start Ray: {info.detail}")
        if not system.pid_alive(pid):
            why = tail(paths.agent_log, 1) or "no output"
            raise LanrayError(f"the agent exited: {why}")
        time.sleep(0.05)
    waiting = info is not None and info.detail.startswith(texts.WAITING_TURN)
    if info is not None and ("retrying" in info.detail or waiting):
        raise LanrayError(
            f"Ray has not started yet ({info.detail}); the agent (pid {info.pid}) keeps "
            "at it: see 'lanray-tui status', or stop it with 'lanray-tui leave'"
        )
    raise LanrayError(f"the agent was not ready after {timeout:.0f} s (see {paths.agent_log})")


def leave(paths: Paths, timeout: float = 60.0) -> int:
    """Ask the agent to stop Ray and exit; wait until it has. Returns its PID."""
    info = running_agent(paths)
    if info is None:
        raise NotRunningError("no lanray-tui agent runs on this node: nothing to leave")
    client(paths).request(LeaveRequest())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not system.pid_alive(info.pid) and not paths.socket.exists():
            return info.pid
        time.sleep(0.05)
    raise LanrayError(f"the agent (pid {info.pid}) did not stop within {timeout:.0f} s")


def stop_orphan_ray(paths: Paths) -> int:
    """Stop this node's ``ray start`` that no agent runs (``leave --force``); its PID."""
    from . import ray_record

    pid = ray_record.running_ray(paths.ray_record, paths.ray_temp_dir)
    if pid is None:
        raise NotRunningError(
            "no lanray-tui agent and no Ray of it run on this node: nothing to leave"
        )
    system.terminate_tree(pid, 15.0)
    if system.pid_alive(pid):
        raise LanrayError(f"Ray (pid {pid}) did not stop; try again as its owner")
    ray_record.forget(paths.ray_record)
    guard.remove_left()  # the agent that set the guard on Ray's HTTP ports is gone: so is Ray
    return pid


# ----- joining: by token, by code, or again with stored credentials -------------------------


def _start_worker(
    cfg: Config,
    creds: Credentials,
    progress: Progress | None,
    config_file: Path | None,
    extra: Sequence[str],
) -> AgentInfo:
    paths = cfg.paths()
    store_join_credentials(paths, creds)
    if progress is not None:
        progress("starting Ray")
    pid = spawn_agent(paths, "worker", config_file, extra, cfg)
    info = wait_ready(paths, pid, float(cfg["ray.start_timeout_s"]) + 15)
    if progress is not None:
        progress("registered")
    return info


def refuse_own_docker_network(cfg: Config) -> None:
    """Joining with Ray in a container on a Docker network of its own is not available: the
    pairing and the cluster API (mutual TLS) are the agents' own, outside that network."""
    from . import runtime

    if runtime.chooses_node_ip(cfg):
        raise LanrayError(
            f"joining with the docker runtime on the Docker network "
            f"'{cfg['runtime.docker_network']}' is not available yet (the agents pair and talk "
            "over the LAN, outside that network): use runtime.docker_network: host"
        )


def _signing_request(cfg: Config, head: str, node_name: str) -> tuple[NodeTls, bytes]:
    """This node's TLS folder and a signing request for its key (made here, mode 0600, and
    never sent), naming the address it has towards ``head``."""
    from . import runtime
    from .cluster_ca import NodeTls

    ip = cfg["ray.node_ip"] or netinfo.ip_for_head(head)
    tls = NodeTls(cfg.paths().tls_dir)
    return tls, tls.request(node_name, [ip, *runtime.cert_addresses(cfg)])


def _paired_credentials(got: dict[str, object], tls: NodeTls) -> Credentials:
    """Keep the certificate and CA the host sent (after checking they fit this node's key),
    and return the credentials that came with them."""
    from .cluster_ca import CertError

    try:
        tls.store(str(got["cert"]).encode(), str(got["ca"]).encode())
        return Credentials(
            cluster_id=str(got["cluster_id"]),
            cluster_name=str(got["cluster_name"]),
            token=str(got["token"]),
            cluster_key=str(got["cluster_key"]),
            head_address=str(got["head_address"]),
            gcs_port=int(str(got["gcs_port"])),
            dashboard_port=int(str(got["dashboard_port"])),
        )
    except CertError as exc:
        raise LanrayError(f"the host's certificate cannot be used: {exc}") from None
    except (KeyError, ValueError):
        raise LanrayError(
            "the host's answer is incomplete: is it another lanray-tui version?"
        ) from None


def _pair_by_token(
    cfg: Config, head: str, token: str, cluster_id: str | None, progress: Progress | None
) -> Credentials:
    """The token exchange with the host at ``head``: the token is the SPAKE2 password, never
    sent; the node gets the cluster's credentials and a certificate for its key."""
    from . import discovery
    from .pairing import pair_with_token

    if progress is not None:
        progress(f"pairing with {head} (token)")
    node_name = discovery.own_hostname()
    tls, csr = _signing_request(cfg, head, node_name)
    got = pair_with_token(
        head, cfg["pairing.port"], token, node_name=node_name, csr=csr, cluster_id=cluster_id
    )
    return _paired_credentials(got, tls)


def join_with_token(
    cfg: Config,
    address: str,
    token: str,
    progress: Progress | None = None,
    config_file: Path | None = None,
    extra: Sequence[str] = (),
) -> AgentInfo:
    """Join the head at ``address`` (``IP[:GCS_PORT]``) with the cluster token (for scripts).

    The token is not sent: it is the password of a pairing exchange with the host (its
    pairing port, ``pairing.port``), which gives this node the cluster's credentials and a
    certificate. The host's own answer says its Ray ports."""
    refuse_if_running(cfg.paths())
    refuse_own_docker_network(cfg)
    host, _, port = address.partition(":")
    if port and not port.isdigit():
        raise LanrayError(f"bad address '{address}': the port is not a number")
    creds = _pair_by_token(cfg, netinfo.resolve_ipv4(host), token, None, progress)
    return _start_worker(cfg, creds, progress, config_file, extra)


def find_host(cfg: Config, target: str | None, timeout: float = 1.5) -> FoundHost | None:
    """The host that ``target`` names (address, host name or cluster name), found by a scan.

    With no target, the one compatible host on the LAN. None if ``target`` is an address that
    did not answer (the caller may still try it directly).
    """
    from . import discovery

    found = discovery.scan(cfg, timeout=timeout).hosts
    if target:
        hits = [h for h in found if target in (h.address, h.host_name, h.cluster_name)]
        # the host's own beacon first: one someone else sent in its name is only a spoof
        hits.sort(key=lambda h: (h.source not in ("", h.address), not h.compatible))
        if hits:
            return hits[0]
        if _is_ipv4(target):
            return None
        raise LanrayError(f"no host named '{target}' answered on the LAN (try 'lanray-tui scan')")
    usable = [h for h in found if h.compatible and h.verified != "forged"]
    if not usable:
        raise LanrayError("no compatible host answered on the LAN (see 'lanray-tui scan')")
    if len(usable) > 1:
        names = ", ".join(f"{h.cluster_name} at {h.address}" for h in usable)
        raise LanrayError(f"several hosts answered ({names}): name one")
    return usable[0]


def join_with_code(
    cfg: Config,
    target: str | None,
    code: str,
    progress: Progress | None = None,
    config_file: Path | None = None,
    extra: Sequence[str] = (),
) -> AgentInfo:
    """Pair with the host using its join code (SPAKE2), then start a worker."""
    from . import discovery
    from .joincode import is_valid
    from .pairing import pair

    if not is_valid(code):
        raise LanrayError(f"{code.strip()!r} is not a join code (they look like 7-tiger-canvas)")
    refuse_if_running(cfg.paths())
    refuse_own_docker_network(cfg)
    if progress is not None:
        progress("finding the host")
    host = find_host(cfg, target)
    if host is not None and host.verified == "forged":
        raise LanrayError(
            f"the beacon of '{host.cluster_name}' at {host.address} is forged: not joining"
        )
    if host is not None and not host.compatible:
        raise LanrayError(f"cannot join '{host.cluster_name}': {host.why_not}")
    address = host.address if host is not None else netinfo.resolve_ipv4(target or "")
    port = host.pairing_port if host is not None else cfg["pairing.port"]
    if progress is not None:
        progress(f"pairing with {address}")
    node_name = discovery.own_hostname()
    tls, csr = _signing_request(cfg, address, node_name)
    got = pair(
        address,
        port,
        code,
        node_name=node_name,
        csr=csr,
        cluster_id=host.cluster_id if host is not None else None,
    )
    return _start_worker(cfg, _paired_credentials(got, tls), progress, config_file, extra)


def join_again(
    cfg: Config,
    target: str | None,
    progress: Progress | None = None,
    config_file: Path | None = None,
    extra: Sequence[str] = (),
) -> AgentInfo:
    """Rejoin the cluster whose credentials this node kept from an earlier pairing.

    Credentials from before certificates (no TLS files yet) get them first, by the token
    exchange with the stored token."""
    from .cluster_ca import NodeTls

    paths = cfg.paths()
    refuse_if_running(paths)
    refuse_own_docker_network(cfg)
    creds = credentials.load(paths.credentials)
    if creds is None or not creds.head_address:
        raise LanrayError("join needs --code CODE (shown on the host) or a token (--token -)")
    if target and target not in (creds.head_address, creds.cluster_name):
        raise LanrayError(
            f"this node only has credentials for '{creds.cluster_name or creds.head_address}' "
            f"at {creds.head_address}: "
            "pass --code CODE to pair with another host"
        )
    if not NodeTls(paths.tls_dir).ready():
        try:
            creds = _pair_by_token(
                cfg, creds.head_address, creds.token, creds.cluster_id or None, progress
            )
        except LanrayError as exc:
            raise LanrayError(
                f"this node has no certificate for '{creds.cluster_name or creds.head_address}' "
                f"and getting one with its stored token failed ({exc}): "
                "pair again with 'lanray-tui join --code CODE'"
            ) from None
    return _start_worker(cfg, creds, progress, config_file, extra)


def _is_ipv4(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)
