"""Trying ``lanray-tui`` on one machine: ``lab`` (a virtual LAN of nodes, root) and
``samples`` (the jobs that ship with it, to run on a cluster)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from .cli_base import PROG, Parser
from .core.errors import LanrayError


def add_parsers(sub: Any) -> None:
    """Add ``lab`` and its actions to the CLI's subparsers (``sub`` from add_subparsers)."""
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


def add_samples_parser(sub: Any) -> None:
    """Add ``samples`` (after the job commands, where ``--help`` lists it)."""
    p = sub.add_parser("samples", help="list the sample jobs that ship with lanray-tui")
    p.add_argument("--json", action="store_true", help="print JSON")


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


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "lab": _lab,
    "samples": _samples,
}
