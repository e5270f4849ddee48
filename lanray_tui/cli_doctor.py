"""``lanray-tui doctor [HOST]``: the network doctor's checklist, or one JSON object.

Exit 0 when every check passes (warnings and skips included), 1 when any fails.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from .cli_base import PROG, load_config


def add_parser(sub: Any) -> None:
    """Add ``doctor`` to the CLI's subparsers."""
    p = sub.add_parser(
        "doctor", help="check the network path to the host: ports both ways, MTU, loss, ..."
    )
    p.add_argument(
        "host",
        nargs="?",
        metavar="HOST",
        help="the host's address, or a host or cluster name (default: this node's host)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _doctor(args: argparse.Namespace) -> int:
    from .core import doctor_run

    cfg = load_config(args)
    report = doctor_run.diagnose(cfg, doctor_run.resolve(cfg, args.host))
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        print(f"{PROG} doctor: " + "; ".join(report.notes))
        for line in report.lines():
            print(line)
    return 0 if report.ok else 1


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {"doctor": _doctor}
