"""The ``lanray-tui`` command: the TUI with no arguments, a headless subcommand otherwise.

Every error ends as one line on stderr and a non-zero exit, never a traceback (set
``LANRAY_DEBUG=1`` to see one). Heavy modules are imported inside the commands that use them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__
from .core.errors import LanrayError

if TYPE_CHECKING:
    from .core.protocol import LendingReply, PauseRequest, StopRayRequest

PROG = "lanray-tui"


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _add_lend(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cpus", type=int, metavar="N", help="CPUs to lend (default: config)")
    p.add_argument("--gpus", type=int, metavar="N", help="GPUs to lend (default: config)")
    p.add_argument("--memory-gb", type=float, metavar="GB", help="memory to lend, in GiB")
    p.add_argument(
        "--node-ip", metavar="IP", help="address to give Ray (default: found from the routes)"
    )
    p.add_argument(
        "--runtime", choices=["native", "docker"], help="run Ray natively or in a container"
    )
    p.add_argument("--image", metavar="IMAGE", help="image for --runtime docker")
    p.add_argument(
        "--docker-network", metavar="NET", help="Docker network for --runtime docker (or host)"
    )


def build_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description="Turn the machines on one LAN into one Ray cluster. "
        "With no command, opens the full-screen TUI.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--config", type=Path, metavar="FILE", help="config file to apply last")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    p = sub.add_parser("host", help="host a cluster: start a Ray head on this machine")
    p.add_argument("--headless", action="store_true", help="no TUI: print progress and the address")
    p.add_argument(
        "--detach", action="store_true", help="return once ready; the agent keeps running"
    )
    p.add_argument("--name", metavar="NAME", help="cluster name (default: config)")
    _add_lend(p)

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
    _add_lend(p)

    p = sub.add_parser("status", help="the cluster's nodes and this machine's agent")
    p.add_argument("--json", action="store_true", help="print JSON")

    sub.add_parser("token", help="print the cluster token (host only)")
    p = sub.add_parser("code", help="print a live join code, opening pairing (host only)")
    p.add_argument("--uses", type=int, metavar="N", help="a new code that pairs up to N machines")
    p.add_argument("--minutes", type=float, metavar="M", help="a new code that lives M minutes")
    p.add_argument("--close", action="store_true", help="close pairing: no code is live")
    p = sub.add_parser("scan", help="list the hosts on the LAN")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--timeout", type=float, default=1.0, metavar="S", help="seconds to listen")
    p.add_argument("--no-arp", action="store_true", help="skip the ARP sweep")
    p = sub.add_parser("leave", help="stop this node's Ray and agent (on the host: the cluster)")
    p.add_argument(
        "--force",
        action="store_true",
        help="with no agent running: stop this node's Ray that an agent left behind",
    )
    p = sub.add_parser("pause", help="stop lending this machine: drain its Ray worker")
    p.add_argument("--deadline", type=int, metavar="S", help="seconds running tasks get")
    sub.add_parser("resume", help="lend this machine again (or start what 'stop' stopped)")
    sub.add_parser("restart", help="restart this node's Ray now (docker: a fresh container)")
    p = sub.add_parser(
        "stop", help="stop this node's Ray (its container) but keep the agent; 'resume' starts it"
    )
    p.add_argument("--deadline", type=int, metavar="S", help="seconds running tasks get")

    p = sub.add_parser("lab", help="a virtual LAN of nodes on this machine (root)")
    lab = p.add_subparsers(dest="lab_command", metavar="ACTION", parser_class=Parser, required=True)
    q = lab.add_parser("up", help="create N nodes on one bridge")
    q.add_argument("--nodes", type=int, default=2, metavar="N")
    q.add_argument("--name", default="lab", metavar="NAME")
    q.add_argument(
        "--cpus-per-node",
        type=int,
        default=0,
        metavar="N",
        help="give each node N CPUs of its own, as separate machines (default: all share all)",
    )
    q = lab.add_parser("exec", help="run a command on a node")
    q.add_argument("--name", default="lab", metavar="NAME")
    q.add_argument("node", metavar="NODE")
    q.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    q = lab.add_parser("link", help="plug (up) or pull (down) a node's cable")
    q.add_argument("--name", default="lab", metavar="NAME")
    q.add_argument("node", metavar="NODE")
    q.add_argument("updown", choices=["up", "down"], metavar="up|down")
    q = lab.add_parser("down", help="remove the lab and everything in it")
    q.add_argument("--name", default="lab", metavar="NAME")
    lab.add_parser("list", help="list the labs that are up")

    from . import cli_jobs

    cli_jobs.add_parsers(sub)
    p = sub.add_parser("samples", help="list the sample jobs that ship with lanray-tui")
    p.add_argument("--json", action="store_true", help="print JSON")

    from . import cli_service

    cli_service.add_parser(sub)
    p = sub.add_parser("agent")  # internal: the agent in the foreground (also for systemd)
    p.add_argument("--role", choices=["host", "worker"], required=True)
    p.add_argument("--name", metavar="NAME")
    _add_lend(p)
    return parser


# ----- commands ---------------------------------------------------------------------------


def _config(args: argparse.Namespace) -> Any:
    from .core import config

    return config.load(args.config)


def _lend_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attr, key in (
        ("cpus", "lend__cpus"),
        ("gpus", "lend__gpus"),
        ("memory_gb", "lend__memory_gb"),
    ):
        if getattr(args, attr, None) is not None:
            out[key] = getattr(args, attr)
    if getattr(args, "node_ip", None):
        out["ray__node_ip"] = args.node_ip
    for attr, key in (
        ("runtime", "runtime__kind"),
        ("image", "runtime__image"),
        ("docker_network", "runtime__docker_network"),
    ):
        if getattr(args, attr, None):
            out[key] = getattr(args, attr)
    return out


def _lend_argv(args: argparse.Namespace) -> list[str]:
    """The lend options again, for the agent process (it applies them like the CLI does)."""
    out: list[str] = []
    for attr in (
        "cpus",
        "gpus",
        "memory_gb",
        "node_ip",
        "name",
        "runtime",
        "image",
        "docker_network",
    ):
        value = getattr(args, attr, None)
        if value is not None:
            out += [f"--{attr.replace('_', '-')}", str(value)]
    return out


def _config_with_overrides(args: argparse.Namespace) -> Any:
    cfg = _config(args)
    overrides = _lend_overrides(args)
    if getattr(args, "name", None):
        overrides["cluster_name"] = args.name
    return cfg.with_overrides(**overrides) if overrides else cfg


def _start(args: argparse.Namespace, role: str) -> int:
    from .core import lifecycle, texts
    from .core.protocol import CodeRequest

    cfg = _config_with_overrides(args)
    paths = cfg.paths()
    extra = _lend_argv(args)
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


def _scan(args: argparse.Namespace) -> int:
    from .core import discovery

    result = discovery.scan(_config(args), timeout=args.timeout, use_arp=not args.no_arp)
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
    _table(rows)
    return 0


def _code(args: argparse.Namespace) -> int:
    from .core import lifecycle
    from .core.protocol import CodeRequest

    # Checked here too, so that a bad value is one line before any agent is asked.
    req = CodeRequest.of(close=args.close, open=not args.close, uses=args.uses,
                         minutes=args.minutes)  # fmt: skip
    got = lifecycle.client(_config(args).paths()).request(req)
    if got.pairing_summary:
        print(got.pairing_summary)
    if not got.code:
        print("pairing closed: no join code is live")
        return 0
    left = got.expires_in
    uses = f"; {got.uses_left} uses" if args.uses is not None else ""
    print(f"valid for {left // 60} min {left % 60} s{uses}; join code: {got.code}")
    return 0


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


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


def _status(args: argparse.Namespace) -> int:
    from .core import lifecycle
    from .core.protocol import StatusRequest

    paths = _config(args).paths()
    result = lifecycle.client(paths).request(StatusRequest(), timeout=15.0)
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
    summary = str((result.pairing or {}).get("pairing_summary") or "")
    if summary:
        print(f"pairing: {summary}")
    infos = result.node_infos()
    for n in infos:
        if n.state == "WITHHELD":
            print(f"{n.name} withheld: {n.lending_reason}")
    rows = [("NAME", "IP", "ROLE", "STATE", "LINK", "LENDING", "CPUS", "CPU%", "GPUS", "MEMORY")]
    for n in infos:
        rows.append(
            (
                n.name,
                n.ip,
                n.role,
                n.state,
                n.link,
                n.lending or "n/a",
                f"{n.cpus:g}",
                _pct(n.cpu_pct),
                f"{n.gpus:g}",
                f"{n.memory_gb:.1f} GiB",
            )
        )
    _table(rows)
    return 0


def _pct(value: object) -> str:
    return f"{value:.0f}" if isinstance(value, (int, float)) else "n/a"


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


def _token(args: argparse.Namespace) -> int:
    from .core import lifecycle
    from .core.protocol import TokenRequest

    print(lifecycle.client(_config(args).paths()).request(TokenRequest()).token)
    return 0


def _drain_call(
    args: argparse.Namespace, op: type[PauseRequest] | type[StopRayRequest]
) -> LendingReply:
    """``pause`` or ``stop_ray``: the agent drains first, so the call waits the deadline."""
    from .core import lifecycle

    cfg = _config(args)
    req = op.of(deadline_s=args.deadline)
    timeout = float(args.deadline if args.deadline is not None else cfg["lending.drain_deadline_s"])
    return lifecycle.client(cfg.paths()).request(req, timeout=timeout + 60)


def _pause(args: argparse.Namespace) -> int:
    from .core.protocol import PauseRequest

    got = _drain_call(args, PauseRequest)
    how = "drained" if got.drained else "stopped"
    print(f"paused: this machine's Ray worker {how} and left; 'lanray-tui resume' lends it again")
    return 0


def _resume(args: argparse.Namespace) -> int:
    from .core import lifecycle
    from .core.protocol import ResumeRequest

    lifecycle.client(_config(args).paths()).request(ResumeRequest())
    print("resumed: this machine is lent to the cluster again")
    return 0


def _restart(args: argparse.Namespace) -> int:
    from .core import lifecycle
    from .core.protocol import RestartRayRequest

    lifecycle.client(_config(args).paths()).request(RestartRayRequest(), timeout=60.0)
    print("restarting this node's Ray; 'lanray-tui status' shows it come back")
    return 0


def _stop(args: argparse.Namespace) -> int:
    from .core.protocol import StopRayRequest

    got = _drain_call(args, StopRayRequest)
    how = "drained and stopped" if got.drained else "stopped"
    print(f"this node's Ray is {how}; the agent stays ('lanray-tui resume' starts Ray again)")
    return 0


def _leave(args: argparse.Namespace) -> int:
    from .core import lifecycle, texts

    paths = _config(args).paths()
    if args.force and lifecycle.running_agent(paths) is None:
        ray_pid = lifecycle.stop_orphan_ray(paths)
        print(f"stopped this node's Ray (pid {ray_pid})")
        return 0
    pid = lifecycle.leave(paths)
    print(texts.left(pid))
    from .cli_service import after_leave

    note = after_leave()
    if note:
        print(note)
    return 0


def _service(args: argparse.Namespace) -> int:
    from . import cli_service

    return cli_service.run(args, args.config, _config(args).paths())


def _lab(args: argparse.Namespace) -> int:
    from .core import lab

    if args.lab_command == "up":
        made = lab.up(args.name, args.nodes, args.cpus_per_node)
        print(f"lab '{made.name}' is up on {made.subnet}:")
        for n in made.nodes:
            cpus = f"  CPU {','.join(map(str, n.cpus))}" if n.cpus else ""
            print(f"  {n.name}  {n.address}{cpus}")
        named = f"--name {made.name} " if made.name != "lab" else ""
        print(f"run a command on a node: {PROG} lab exec {named}n1 -- CMD")
        return 0
    if args.lab_command == "exec":
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not argv:
            raise LanrayError("lab exec needs a command after '--'")
        # Inside a lab node the LAN is the lab's own bridge, so the test-suite guard that
        # hides real interfaces does not apply there.
        env = {k: v for k, v in os.environ.items() if k != "LANRAY_NO_LAN"}
        cmd = lab.exec_argv(lab.load(args.name), args.node, argv, env=env)
        sys.stdout.flush()
        os.execv(cmd[0], cmd)
    if args.lab_command == "link":
        lab.link(lab.load(args.name), args.node, args.updown == "up")
        print(f"{args.node}: cable {'plugged in' if args.updown == 'up' else 'pulled'}")
        return 0
    if args.lab_command == "down":
        removed = lab.down(args.name)
        print(
            f"lab '{args.name}' is down ({len(removed)} things removed)"
            if removed
            else f"lab '{args.name}' was not up"
        )
        return 0
    for name in lab.list_labs():
        print(name)
    return 0


def _samples(args: argparse.Namespace) -> int:
    from .core import samples

    found = samples.samples()
    if args.json:
        print(json.dumps({"samples": [s.to_json() for s in found]}, indent=2))
        return 0
    if not found:
        raise LanrayError("this install has no sample jobs")
    width = max(len(s.name) for s in found)
    for s in found:
        print(f"{s.name.ljust(width)}  {s.path}")
        if s.summary:
            print(f"{' ' * width}  {s.summary}")
    print(f"queue one from any directory: {PROG} submit {samples.PREFIX}/NAME.py --follow")
    return 0


def _agent(args: argparse.Namespace) -> int:

    from .core.agent import Agent
    from .core.lifecycle import configure_agent_logging

    cfg = _config_with_overrides(args)
    configure_agent_logging(cfg.paths())
    return Agent(cfg, args.role).run()


def _tui(args: argparse.Namespace) -> int:
    if not sys.stdout.isatty():
        raise LanrayError("the TUI needs a terminal; use the headless commands (see --help)")
    _config(args)  # a bad config stops here with its one line, before the screen opens
    from .app import run_app

    initial = {"host": "host", "join": "join"}.get(args.command or "")
    return run_app(args.config, initial=initial)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command in ("host", "join"):
            if not args.headless and not args.detach and sys.stdin.isatty():
                return _tui(args)
            return _start(args, "host" if args.command == "host" else "worker")
        handlers = {
            "status": _status,
            "token": _token,
            "leave": _leave,
            "pause": _pause,
            "resume": _resume,
            "restart": _restart,
            "stop": _stop,
            "lab": _lab,
            "scan": _scan,
            "code": _code,
            "samples": _samples,
            "agent": _agent,
            "service": _service,
        }
        from . import cli_jobs

        handlers.update(cli_jobs.HANDLERS)
        if args.command is None:
            return _tui(args)
        return handlers[args.command](args)
    except LanrayError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("LANRAY_DEBUG"):
            raise
        print(
            f"{PROG}: internal error: {type(exc).__name__}: {exc} (LANRAY_DEBUG=1 shows more)",
            file=sys.stderr,
        )
        return 70
