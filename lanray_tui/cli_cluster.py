"""The cluster commands of ``lanray-tui``: host, join, status, token, code, dashboard, scan.

Host or join a cluster, look at it, hand out its token or a join code, and find hosts on
the LAN. ``host`` and ``join`` open the TUI when run in a terminal; what is here is their
headless face (``--headless``, ``--detach`` or no terminal).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cli_base import (
    PROG,
    add_expires_option,
    add_lend_options,
    add_until_options,
    config_with_overrides,
    lend_argv,
    load_config,
    print_table,
)
from .core.errors import LanrayError


def add_parsers(sub: Any) -> None:
    """Add the cluster subcommands to the CLI's subparsers (``sub`` from add_subparsers)."""
    p = sub.add_parser("host", help="host a cluster: start a Ray head on this machine")
    p.add_argument("--headless", action="store_true", help="no TUI: print progress and the address")
    p.add_argument(
        "--detach", action="store_true", help="return once ready; the agent keeps running"
    )
    p.add_argument("--name", metavar="NAME", help="cluster name (default: config)")
    add_lend_options(p)
    add_expires_option(p)
    _add_join_parser(sub)

    p = sub.add_parser("status", help="the cluster's nodes and this machine's agent")
    p.add_argument("--json", action="store_true", help="print JSON")

    sub.add_parser("token", help="print the cluster token (host only)")
    p = sub.add_parser("code", help="print a live join code, opening pairing (host only)")
    p.add_argument("--uses", type=int, metavar="N", help="a new code that pairs up to N machines")
    p.add_argument("--minutes", type=float, metavar="M", help="a new code that lives M minutes")
    p.add_argument("--close", action="store_true", help="close pairing: no code is live")
    p = sub.add_parser(
        "dashboard", help="Ray's web dashboard here: a local forward over TLS to the host"
    )
    p.add_argument("--port", type=int, metavar="N", help="local port (default: Ray's, or any)")
    p = sub.add_parser("scan", help="list the hosts on the LAN")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--timeout", type=float, default=1.0, metavar="S", help="seconds to listen")
    p.add_argument("--no-arp", action="store_true", help="skip the ARP sweep")


def _add_join_parser(sub: Any) -> None:
    p = sub.add_parser("join", help="join a cluster: start a Ray worker on this machine")
    p.add_argument(
        "address",
        nargs="?",
        metavar="ADDRESS|NAME",
        help="the host's address (10.0.0.5[:6379]) or name; default: the one host on the LAN",
    )
    p.add_argument("--code", metavar="CODE", help="the join code shown on the host")
    p.add_argument(
        "--token",
        metavar="-",
        help="read the cluster token from stdin (for scripts; or LANRAY_TOKEN, --token-file)",
    )
    p.add_argument("--token-file", metavar="FILE", help="read the cluster token from FILE")
    p.add_argument("--headless", action="store_true", help="no TUI: print progress")
    p.add_argument(
        "--detach", action="store_true", help="return once joined; the agent keeps running"
    )
    add_lend_options(p)
    add_until_options(p)


# ----- host and join ----------------------------------------------------------------------


def start(args: argparse.Namespace, role: str) -> int:
    """``host`` (role ``host``) or ``join`` (role ``worker``) with no TUI: start this node's
    agent, print how it went, then watch it unless ``--detach``."""
    from .core import lifecycle, texts
    from .core.protocol import CodeRequest

    cfg = config_with_overrides(args)
    paths = cfg.paths()
    extra = lend_argv(args)
    say = (lambda s: print(f"  {s}", flush=True)) if not args.detach else None
    if role == "host":
        lifecycle.refuse_if_running(paths)
        pid = lifecycle.spawn_agent(paths, "host", args.config, extra, cfg)
        info = lifecycle.wait_ready(paths, pid, float(cfg["ray.start_timeout_s"]) + 15, say)
        for line in texts.cluster_up(info):
            print(line, flush=True)
        try:
            code = lifecycle.client(paths).request(CodeRequest()).code
            print(texts.join_code(code))
        except LanrayError as exc:
            print(f"join code: not available ({exc})")
    elif args.code:
        info = lifecycle.join_with_code(cfg, args.address, args.code, say, args.config, extra)
    elif token := _token_given(args):
        if not args.address:
            raise LanrayError("join --token needs the host's ADDRESS")
        info = lifecycle.join_with_token(cfg, args.address, token, say, args.config, extra)
    else:
        info = lifecycle.join_again(cfg, args.address, say, args.config, extra)
    if role == "worker":
        print(f"joined {info.head_address} as {info.node_ip}", flush=True)
    if args.detach:
        print(f"agent pid {info.pid} keeps running; stop it with '{PROG} leave'", flush=True)
        return 0
    return _watch(paths, info.pid)


def _token_given(args: argparse.Namespace) -> str:
    """The cluster token for ``join``: from a file, stdin or LANRAY_TOKEN, never from the
    command line, where every local user can read it (ps, /proc/PID/cmdline)."""
    token_file = getattr(args, "token_file", None)
    given = getattr(args, "token", None)
    if given not in (None, "-"):
        raise LanrayError(
            "a token on the command line is readable by every user of this machine: pass it "
            "with --token-file FILE, LANRAY_TOKEN=... or --token - (stdin)"
        )
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise LanrayError(f"cannot read the token file {token_file}: {exc.strerror}") from None
    elif given == "-":
        token = sys.stdin.readline().strip()
    else:
        token = os.environ.pop("LANRAY_TOKEN", "").strip()
    if (given or token_file) and not token:
        raise LanrayError("the token given is empty")
    return token


def _watch(paths: Any, pid: int) -> int:
    """Foreground view of the agent: prints state changes until Ctrl-C or the agent ends."""
    import time

    from .adapters import system
    from .core import lifecycle

    print(
        f"agent pid {pid} runs on; Ctrl-C stops watching, '{PROG} leave' stops the node", flush=True
    )
    last = "ready"
    try:
        while system.pid_alive(pid):
            info = lifecycle.running_agent(paths)
            if info is not None and info.state != last:
                print(f"  {info.state}{': ' + info.detail if info.detail else ''}", flush=True)
                last = info.state
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("stopped watching; the node keeps running", flush=True)
        return 0
    print("the agent has stopped", flush=True)
    return 0


# ----- looking at the cluster -------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    from .core.control import ControlClient  # not lifecycle: status stays quick to start
    from .core.protocol_status import StatusRequest  # not the whole protocol: the same

    paths = load_config(args).paths()
    result = ControlClient(paths.socket).request(StatusRequest(), timeout=15.0)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    agent = result.agent
    print(
        f"cluster '{agent.cluster_name}'  head {agent.head_address}  "
        f"this node: {agent.role} {agent.node_ip} "
        f"(agent pid {agent.pid}, {agent.state})"
    )
    free = result.free
    if free is not None:
        print(
            f"free: {free.get('free_cpus', 0):g} CPUs, {free.get('free_gpus', 0):g} GPUs, "
            f"{free.get('free_memory_gb', 0):.1f} GiB"
        )
    if result.note:
        print(result.note)
    if result.ends_at:
        from .core.lend_time import ends_line

        print(ends_line(result.ends_at))
    summary = str((result.pairing or {}).get("pairing_summary") or "")
    if summary:
        print(f"pairing: {summary}")
    infos = result.node_infos()
    for n in infos:
        if n.state == "WITHHELD":
            print(f"{n.name} withheld: {n.lending_reason}")
        elif "draining" in n.lending_reason:  # "n3 owner back, draining (41 s left)"
            print(f"{n.name} {n.lending_reason}")
        if n.guard_warning:
            print(f"{n.name}: {n.guard_warning}")
    rows = [("NAME", "IP", "ROLE", "STATE", "LINK", "LENDING", "CPUS", "CPU%", "GPUS", "MEMORY")]
    for n in infos:
        rows.append(
            (
                n.name,
                n.ip,
                n.role,
                n.state,
                n.link,
                f"{n.lending} {n.lending_until}" if n.lending_until else n.lending or "n/a",
                f"{n.cpus:g}",
                _pct(n.cpu_pct),
                f"{n.gpus:g}",
                f"{n.memory_gb:.1f} GiB",
            )
        )
    print_table(rows)
    return 0


def _pct(value: object) -> str:
    return f"{value:.0f}" if isinstance(value, (int, float)) else "n/a"


def _token(args: argparse.Namespace) -> int:
    from .core import lifecycle
    from .core.protocol import TokenRequest

    print(lifecycle.client(load_config(args).paths()).request(TokenRequest()).token)
    return 0


def _code(args: argparse.Namespace) -> int:
    from .core import lifecycle
    from .core.protocol import CodeRequest

    # Checked here too, so that a bad value is one line before any agent is asked.
    req = CodeRequest.of(close=args.close, open=not args.close, uses=args.uses,
                         minutes=args.minutes)  # fmt: skip
    got = lifecycle.client(load_config(args).paths()).request(req)
    if got.pairing_summary:
        print(got.pairing_summary)
    if not got.code:
        print("pairing closed: no join code is live")
        return 0
    left = got.expires_in
    uses = f"; {got.uses_left} uses" if args.uses is not None else ""
    print(f"valid for {left // 60} min {left % 60} s{uses}; join code: {got.code}")
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    """On the host: where its dashboard is. On a member: a forward to it until Ctrl-C."""
    import asyncio
    import contextlib
    import ssl

    from .core import lifecycle, tunnel
    from .core.cluster_ca import NodeTls
    from .core.errors import NotRunningError

    cfg = load_config(args)
    paths = cfg.paths()
    info = lifecycle.running_agent(paths)
    if info is None:
        raise NotRunningError("no agent runs on this node: host or join a cluster first")
    port = info.dashboard_url.rsplit(":", 1)[-1]
    if info.role == "host":
        print(f"Ray's dashboard: http://127.0.0.1:{port} (sign in with 'lanray-tui token')")
        return 0
    if args.port is not None and not 0 <= args.port < 65536:
        raise LanrayError(f"--port {args.port} is not a port number")
    try:
        tls = NodeTls(paths.tls_dir).client_context()
    except (OSError, ssl.SSLError):
        raise LanrayError(
            "this node has no certificate of the cluster: pair again with a code"
        ) from None
    head = info.head_address.rsplit(":", 1)[0]

    def ready(local: int) -> None:
        print(
            f"Ray's dashboard of '{info.cluster_name}': http://127.0.0.1:{local} "
            "(forwarded over TLS to the host; sign in with the cluster token; Ctrl-C stops)",
            flush=True,
        )

    async def run() -> None:
        want = args.port if args.port is not None else int(port)
        try:
            await tunnel.forward_dashboard(head, cfg["cluster.api_port"], tls, want, ready)
        except OSError:
            if args.port is not None:
                raise LanrayError(f"port {args.port} is taken on this machine") from None
            await tunnel.forward_dashboard(head, cfg["cluster.api_port"], tls, 0, ready)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


def _scan(args: argparse.Namespace) -> int:
    from .core import discovery

    result = discovery.scan(load_config(args), timeout=args.timeout, use_arp=not args.no_arp)
    if args.json:
        print(
            json.dumps(
                {
                    "hosts": [h.to_json() for h in result.hosts],
                    "notes": result.notes,
                    "dropped_packets": result.dropped,
                },
                indent=2,
            )
        )
        return 0
    for note in result.notes:
        print(f"note: {note}")
    if not result.hosts:
        print("no hosts found")
        return 0
    rows = [("CLUSTER", "HOST", "ADDRESS", "RAY", "PYTHON", "NODES", "IFACE", "CHECK", "JOIN?")]
    for h in result.hosts:
        rows.append(
            (
                h.cluster_name,
                h.host_name,
                h.address,
                h.ray_version,
                h.python_version,
                str(h.node_count),
                h.interface,
                h.verified,
                "yes" if h.compatible else "no: " + h.why_not,
            )
        )
    print_table(rows)
    return 0


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "host": lambda args: start(args, "host"),
    "join": lambda args: start(args, "worker"),
    "status": _status,
    "token": _token,
    "code": _code,
    "dashboard": _dashboard,
    "scan": _scan,
}
