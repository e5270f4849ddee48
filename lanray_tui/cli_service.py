"""``lanray-tui service``: install, remove and show the agent's systemd unit."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cli_base import load_config
from .core.errors import LanrayError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("service", help="start this node's agent at boot (systemd)")
    p.add_argument("action", choices=["install", "remove", "status"])
    role = p.add_mutually_exclusive_group()
    role.add_argument("--host", action="store_true", help="install: this machine hosts")
    role.add_argument("--join", action="store_true", help="install: rejoin the stored cluster")
    p.add_argument("--print", action="store_true", help="install: print the unit, change nothing")
    p.add_argument("--json", action="store_true", help="status: as JSON")


def command(args: argparse.Namespace) -> int:
    """``lanray-tui service ACTION``, with the config that ``--config`` names."""
    return run(args, args.config, load_config(args).paths())


def run(args: argparse.Namespace, config_file: Path | None, paths: Any) -> int:
    from .core import service

    if args.action == "install":
        return _install(args, config_file, paths)
    p = service.plan("worker", config_file)
    if args.action == "remove":
        return _remove(p)
    return _status(p, args.json)


def _install(args: argparse.Namespace, config_file: Path | None, paths: Any) -> int:
    from .adapters import systemd
    from .core import credentials, lifecycle, service

    if not (args.host or args.join):
        raise LanrayError("say what the service does: 'service install --host' or '--join'")
    if args.join:
        stored = credentials.load(paths.credentials)
        if stored is None or not stored.head_address:
            raise LanrayError(
                "no cluster to rejoin: join once ('lanray-tui join --code ...'), then install"
            )
    p = service.plan("host" if args.host else "worker", config_file)
    if args.print:
        print(p.text(), end="")
        return 0
    if not systemd.running():
        raise LanrayError(service.NO_SYSTEMD)
    p.path.parent.mkdir(parents=True, exist_ok=True)
    p.path.write_text(p.text())
    systemd.checked([*p.systemctl, "daemon-reload"])
    if not p.system:
        systemd.enable_linger()
    running = lifecycle.running_agent(paths)
    if running is not None:
        systemd.checked([*p.systemctl, "enable", service.UNIT_NAME])
        print(f"installed {p.path}; the agent running now (pid {running.pid}) stays, "
              "and the service starts it at the next boot")  # fmt: skip
        return 0
    systemd.checked([*p.systemctl, "enable", "--now", service.UNIT_NAME])
    print(f"installed and started {p.path} ({'system' if p.system else 'user'} unit)")
    return 0


def _remove(p: Any) -> int:
    from .adapters import systemd
    from .core import service

    if not p.path.exists():
        raise LanrayError(f"no lanray-tui service is installed ({p.path})")
    if systemd.running():
        systemd.run([*p.systemctl, "disable", "--now", service.UNIT_NAME])
    p.path.unlink()
    if systemd.running():
        systemd.run([*p.systemctl, "daemon-reload"])
    print(f"removed {p.path}")
    return 0


def _status(p: Any, as_json: bool) -> int:
    from .adapters import systemd
    from .core import service

    state: dict[str, Any] = {"unit": str(p.path), "installed": p.path.exists()}
    if not systemd.running():
        state.update(enabled="n/a", active="n/a", note=service.NO_SYSTEMD)
    else:
        for key, verb in (("enabled", "is-enabled"), ("active", "is-active")):
            out = systemd.run([*p.systemctl, verb, service.UNIT_NAME]).stdout.strip()
            state[key] = out or "unknown"
    if as_json:
        print(json.dumps(state))
    elif not state["installed"]:
        print(f"no lanray-tui service is installed ({p.path})")
    else:
        print(f"{p.path}: {state['enabled']}, {state['active']}")
        if "note" in state:
            print(state["note"])
    return 0 if state["installed"] else 1


def after_leave() -> str:
    """``leave`` on a node whose agent is a service: keep it from coming back at boot."""
    from .adapters import systemd
    from .core import service

    p = service.plan("worker")
    if not p.path.exists() or not systemd.running():
        return ""
    systemd.run([*p.systemctl, "disable", service.UNIT_NAME])
    return "the service is disabled ('lanray-tui service install' enables it again)"


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {"service": command}
