"""What the ``lanray-tui`` subcommands share: the parser that fails in one line, the config
with the command line's overrides, the lend options and the plain-text table.

A leaf of the CLI: the command modules import it, it imports none of them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, NoReturn

PROG = "lanray-tui"


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def load_config(args: argparse.Namespace) -> Any:
    """The config, with ``--config FILE`` applied last."""
    from .core import config

    return config.load(args.config)


def add_lend_options(p: argparse.ArgumentParser) -> None:
    """What this machine lends and how it runs Ray: ``host``, ``join`` and ``agent``."""
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


def add_until_options(p: argparse.ArgumentParser) -> None:
    """How long a joined machine is lent: ``join`` and ``agent``."""
    p.add_argument("--until", metavar="TIME", help="stop lending and leave at TIME (18:00)")
    p.add_argument(
        "--for", dest="for_", metavar="DURATION", help="stop lending and leave after 3h, 90m..."
    )


def add_expires_option(p: argparse.ArgumentParser) -> None:
    """When the host ends the whole cluster: ``host`` and ``agent``."""
    p.add_argument(
        "--expires", metavar="WHEN", help="end the cluster at a time (18:00) or after 6h, 90m"
    )


def cluster_expires(args: argparse.Namespace) -> float | None:
    """The Unix time ``--expires`` gives (worked out once per command)."""
    if not hasattr(args, "cluster_expires_at"):
        from .core import lend_time

        given = getattr(args, "expires", None)
        args.cluster_expires_at = lend_time.parse_when(given) if given else None
    ends: float | None = args.cluster_expires_at
    return ends


def lend_until(args: argparse.Namespace) -> float | None:
    """The Unix time ``--until`` or ``--for`` give (worked out once per command)."""
    if not hasattr(args, "lend_until_at"):
        from .core import lend_time

        given = getattr(args, "until", None), getattr(args, "for_", None)
        args.lend_until_at = lend_time.until_from(*given) if any(given) else None
    until: float | None = args.lend_until_at
    return until


def lend_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The lend options given, as config overrides (``lend__cpus=4``)."""
    out: dict[str, Any] = {}
    until = lend_until(args)
    if until is not None:
        out["lending__until"] = until
    ends = cluster_expires(args)
    if ends is not None:
        out["cluster__expires"] = ends
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


def lend_argv(args: argparse.Namespace) -> list[str]:
    """The lend options again, for the agent process (it applies them like the CLI does)."""
    out: list[str] = []
    until = lend_until(args)
    if until is not None:
        out += ["--until", f"@{until}"]
    ends = cluster_expires(args)
    if ends is not None:
        out += ["--expires", f"@{ends}"]
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


def config_with_overrides(args: argparse.Namespace) -> Any:
    """The config with the lend options and ``--name`` applied."""
    cfg = load_config(args)
    overrides = lend_overrides(args)
    if getattr(args, "name", None):
        overrides["cluster_name"] = args.name
    return cfg.with_overrides(**overrides) if overrides else cfg


def print_table(rows: Sequence[tuple[str, ...]]) -> None:
    """Columns padded to their widest cell, the first row as the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
