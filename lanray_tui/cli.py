"""The ``lanray-tui`` command: the TUI with no arguments, a headless subcommand otherwise.

Every error ends as one line on stderr and a non-zero exit, never a traceback (set
``LANRAY_DEBUG=1`` to see one). Heavy modules are imported inside the commands that use them.

The subcommands live in modules by concern, each adding its own parsers and handlers:
:mod:`.cli_cluster` (host, join, status, token, code, scan), :mod:`.cli_node` (leave, pause,
resume, restart, stop, agent), :mod:`.cli_lab` (lab, samples), :mod:`.cli_jobs` (submit,
jobs, logs, cancel, retry) and :mod:`.cli_service` (service); :mod:`.cli_base` holds what
they share.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import (
    __version__,
    cli_cluster,
    cli_doctor,
    cli_jobs,
    cli_lab,
    cli_node,
    cli_results,
    cli_service,
)
from .cli_base import PROG, Parser, load_config
from .core.errors import LanrayError

# Each command module adds its own subcommands; this is the order ``--help`` lists them in.
_ADD_PARSERS: tuple[Callable[[Any], None], ...] = (
    cli_cluster.add_parsers,  # host, join, status, token, code, scan
    cli_node.add_parsers,  # leave, pause, resume, restart, stop
    cli_lab.add_parsers,  # lab
    cli_jobs.add_parsers,  # submit, jobs, logs, cancel, retry
    cli_results.add_parsers,  # results
    cli_lab.add_samples_parser,  # samples
    cli_service.add_parser,  # service
    cli_doctor.add_parser,  # doctor
    cli_node.add_agent_parser,  # agent (internal: not listed)
)
_MODULES = (cli_cluster, cli_node, cli_lab, cli_jobs, cli_results, cli_service, cli_doctor)

HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    name: handler for module in _MODULES for name, handler in module.HANDLERS.items()
}


def build_parser(argv: Sequence[str] | None = None) -> Parser:
    """The whole parser; or, when ``argv`` starts with a command, one with just the
    subcommands of that command's module: the same parse for that command line, without
    building some 40 parsers that ``lanray-tui status`` (run by scripts and watch loops)
    never uses. Anything else (no command, an option first, a typo) gets the whole one."""
    parser = Parser(
        prog=PROG,
        description="Turn the machines on one LAN into one Ray cluster. "
        "With no command, opens the full-screen TUI.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--config", type=Path, metavar="FILE", help="config file to apply last")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for add_parsers in _adders(argv):
        add_parsers(sub)
    return parser


def _adders(argv: Sequence[str] | None) -> tuple[Callable[[Any], None], ...]:
    command = argv[0] if argv else None
    for module in _MODULES:
        if command in module.HANDLERS:
            return tuple(a for a in _ADD_PARSERS if a.__module__ == module.__name__)
    return _ADD_PARSERS


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = sys.argv[1:] if argv is None else list(argv)
        return _run(build_parser(args).parse_args(args))  # --help and --version exit in here
    finally:
        if _stdout_reader_left():
            # Python docs, "Note on SIGPIPE": what is still buffered goes to /dev/null, so
            # that the flush at exit does not fail a second time.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _run(args: argparse.Namespace) -> int:
    """Run the command; each error becomes one line on stderr and a non-zero exit code."""
    try:
        code = _dispatch(args)
        sys.stdout.flush()  # a reader that has left shows here, not in a warning at exit
        return code
    except BrokenPipeError as exc:
        # `lanray-tui jobs | head -1`: the reader took what it wanted and left, which is not
        # a failure of the command (and a pipeline under `set -o pipefail` goes on).
        return 0 if _stdout_reader_left() else _internal_error(exc)
    except LanrayError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        return _internal_error(exc)


def _dispatch(args: argparse.Namespace) -> int:
    """No command, or ``host``/``join`` typed at a terminal: the TUI; else the command."""
    interactive = args.command in ("host", "join") and not (args.headless or args.detach)
    if args.command is None or (interactive and sys.stdin.isatty()):
        return _tui(args)
    return HANDLERS[args.command](args)


def _internal_error(exc: Exception) -> int:
    if os.environ.get("LANRAY_DEBUG"):
        raise exc
    print(
        f"{PROG}: internal error: {type(exc).__name__}: {exc} (LANRAY_DEBUG=1 shows more)",
        file=sys.stderr,
    )
    return 70


def _stdout_reader_left() -> bool:
    """Whether stdout is a pipe whose reader has gone (``| head`` read what it wanted).

    Told apart from a broken pipe elsewhere (the agent's socket), which is a real error."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no stdout, or no file descriptor (a test)
        return False


def _tui(args: argparse.Namespace) -> int:
    if not sys.stdout.isatty():
        raise LanrayError("the TUI needs a terminal; use the headless commands (see --help)")
    load_config(args)  # a bad config stops here with its one line, before the screen opens
    from .app import run_app

    initial = {"host": "host", "join": "join"}.get(args.command or "")
    return run_app(args.config, initial=initial)
