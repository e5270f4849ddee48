"""This node's commands in ``lanray-tui``: leave, pause, resume, restart, stop, lend, agent.

Each of the first five asks this node's agent to change what the node lends or runs;
``leave`` ends the agent (on the host: the cluster). ``agent`` is internal: it is the agent
itself, run in the foreground (by ``host``/``join`` in the background, or by systemd).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .cli_base import (
    add_expires_option,
    add_lend_options,
    add_until_options,
    config_with_overrides,
    load_config,
)
from .core.errors import NotRunningError

if TYPE_CHECKING:
    from .core.paths import Paths
    from .core.protocol import LendingReply, PauseRequest, StopRayRequest


def add_parsers(sub: Any) -> None:
    """Add this node's subcommands to the CLI's subparsers (``sub`` from add_subparsers)."""
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
    p = sub.add_parser("lend", help="how long this joined machine is lent (then it leaves)")
    add_until_options(p)
    p.add_argument("--forever", action="store_true", help="lend with no end time")


def add_agent_parser(sub: Any) -> None:
    """Add the internal ``agent`` command (no help line: ``--help`` does not list it)."""
    p = sub.add_parser("agent")
    p.add_argument("--role", choices=["host", "worker"], required=True)
    p.add_argument("--name", metavar="NAME")
    add_lend_options(p)
    add_until_options(p)
    add_expires_option(p)


def _leave(args: argparse.Namespace) -> int:
    from .cli_service import after_leave
    from .core import lifecycle, texts

    paths = load_config(args).paths()
    if args.force:
        # no agent, or one that failed (it lingers a few seconds so that the command that
        # started it can read why) and may be gone by the time it is asked to leave
        info = lifecycle.running_agent(paths)
        if info is None or info.state == "failed":
            return _stop_orphan_ray(paths)
        try:
            pid = lifecycle.leave(paths)
        except NotRunningError:  # it ended between the two questions
            return _stop_orphan_ray(paths)
    else:
        pid = lifecycle.leave(paths)
    print(texts.left(pid))
    note = after_leave()
    if note:
        print(note)
    return 0


def _stop_orphan_ray(paths: Paths) -> int:
    from .core import lifecycle

    ray_pid = lifecycle.stop_orphan_ray(paths)
    print(f"stopped this node's Ray (pid {ray_pid})")
    return 0


def _drain_call(
    args: argparse.Namespace, op: type[PauseRequest] | type[StopRayRequest]
) -> LendingReply:
    """``pause`` or ``stop_ray``: the agent drains first, so the call waits the deadline."""
    from .core import lifecycle

    cfg = load_config(args)
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

    lifecycle.client(load_config(args).paths()).request(ResumeRequest())
    print("resumed: this machine is lent to the cluster again")
    return 0


def _restart(args: argparse.Namespace) -> int:
    from .core import lifecycle
    from .core.protocol import RestartRayRequest

    lifecycle.client(load_config(args).paths()).request(RestartRayRequest(), timeout=60.0)
    print("restarting this node's Ray; 'lanray-tui status' shows it come back")
    return 0


def _stop(args: argparse.Namespace) -> int:
    from .core.protocol import StopRayRequest

    got = _drain_call(args, StopRayRequest)
    how = "drained and stopped" if got.drained else "stopped"
    print(f"this node's Ray is {how}; the agent stays ('lanray-tui resume' starts Ray again)")
    return 0


def _lend(args: argparse.Namespace) -> int:
    from .cli_base import lend_until
    from .core import lifecycle
    from .core.errors import LanrayError
    from .core.protocol import LendRequest

    until = lend_until(args)
    if (until is None) == (not args.forever):
        raise LanrayError("lend needs --until TIME, --for DURATION or --forever")
    got = lifecycle.client(load_config(args).paths()).request(LendRequest(until=until or 0.0))
    print(f"lent {got.until}, then this node leaves" if got.until else "lent with no end time")
    return 0


def _agent(args: argparse.Namespace) -> int:
    from .core.agent import Agent
    from .core.lifecycle import configure_agent_logging

    cfg = config_with_overrides(args)
    configure_agent_logging(cfg.paths())
    return Agent(cfg, args.role).run()


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "leave": _leave,
    "pause": _pause,
    "resume": _resume,
    "restart": _restart,
    "stop": _stop,
    "lend": _lend,
    "agent": _agent,
}
