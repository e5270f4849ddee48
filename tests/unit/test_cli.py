from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lanray_tui import __version__


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lanray_tui", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_version_and_help() -> None:
    p = run("--version")
    assert p.returncode == 0 and __version__ in p.stdout
    p = run("--help")
    assert p.returncode == 0
    for cmd in ("host", "join", "status", "token", "leave", "lab"):
        assert cmd in p.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("frobnicate",),
        ("status", "--jsn"),
        ("join", "--cpus"),
        ("host", "--cpus", "many"),
        ("lab", "link", "n1", "sideways"),
    ],
)
def test_bad_arguments_are_one_line(args: tuple[str, ...]) -> None:
    p = run(*args)
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("cmd", ["status", "token", "leave"])
def test_no_agent_is_one_line(cmd: str) -> None:
    p = run(cmd)
    assert p.returncode == 1
    assert (
        p.stderr.strip().splitlines() == [p.stderr.strip()]
        and "no lanray-tui agent runs on this node" in p.stderr
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("join", "--code", "7-tiger-canvas", "--for", "3 days"), "--for '3 days': give a dur"),
        (("join", "--code", "7-tiger-canvas", "--until", "6pm"), "--until '6pm': give a time"),
        (("join", "--code", "7-tiger-canvas", "--until", "18:00", "--for", "1h"), "not both"),
        (("lend",), "lend needs --until TIME, --for DURATION or --forever"),
        (("lend", "--for", "2h"), "no lanray-tui agent runs on this node"),
        (("dashboard",), "no agent runs on this node"),
    ],
)
def test_lending_times_and_dashboard_bad_input_is_one_line(
    args: tuple[str, ...], line: str
) -> None:
    p = run(*args)
    assert p.returncode == 1, p.stderr
    assert p.stderr.strip().splitlines() == [p.stderr.strip()] and line in p.stderr


def test_join_without_code_or_token_says_so() -> None:
    for args in (("join", "--headless"), ("join", "127.0.0.1", "--headless")):
        p = run(*args)
        assert p.returncode == 1 and "--code CODE" in p.stderr and "Traceback" not in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1


def test_join_with_a_malformed_code_is_one_line() -> None:
    p = run("join", "127.0.0.1", "--code", "not a code", "--headless")
    assert p.returncode == 1 and "is not a join code" in p.stderr, p.stderr


def test_bad_lend_value_from_cli() -> None:
    p = run("host", "--headless", "--cpus", "-2")
    assert p.returncode == 2 and "lend.cpus" in p.stderr


def test_runtime_options_become_config_overrides_for_the_cli_and_the_agent() -> None:
    from lanray_tui import cli, cli_base

    args = cli.build_parser().parse_args(
        ["join", "10.0.0.5", "--runtime", "docker", "--image", "img:1", "--docker-network", "n"]
    )
    over = cli_base.lend_overrides(args)
    assert over["runtime__kind"] == "docker" and over["runtime__image"] == "img:1"
    assert over["runtime__docker_network"] == "n"
    argv = cli_base.lend_argv(args)
    assert argv[argv.index("--runtime") + 1] == "docker"
    agent = cli.build_parser().parse_args(["agent", "--role", "worker", *argv])
    assert cli_base.lend_overrides(agent) == over  # the agent runs with what the CLI was given


def test_unknown_runtime_is_one_line() -> None:
    p = run("host", "--headless", "--runtime", "podman")
    assert p.returncode == 2 and "invalid choice" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("args", [("samples", "--json"), ("--help",)])
def test_a_reader_that_left_ends_the_command_quietly(args: tuple[str, ...]) -> None:
    """``lanray-tui samples --json | head -1``: no error line, no traceback, exit 0."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has left before the first line is written
    try:
        p = subprocess.run(
            [sys.executable, "-m", "lanray_tui", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert (p.returncode, p.stderr) == (0, "")


def test_a_broken_pipe_that_is_not_stdout_is_an_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lanray_tui import cli

    def agent_went_away(args: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.delenv("LANRAY_DEBUG", raising=False)
    monkeypatch.setitem(cli.HANDLERS, "token", agent_went_away)
    assert cli.main(["token"]) == 70
    assert "internal error: BrokenPipeError" in capsys.readouterr().err


def test_a_command_gets_the_same_parser_built_alone_as_in_the_whole() -> None:
    """`lanray-tui CMD ...` builds only CMD's module's subcommands: each must parse and
    read its help exactly as the whole parser does; anything else gets the whole parser."""
    import argparse

    from lanray_tui import cli

    def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return dict(action.choices)

    whole = subparsers(cli.build_parser())
    assert set(whole) == set(cli.HANDLERS)
    for name, full in whole.items():
        alone = subparsers(cli.build_parser([name]))
        assert len(alone) < len(whole)
        assert alone[name].format_help() == full.format_help(), name
    assert set(subparsers(cli.build_parser(["--config", "x", "status"]))) == set(whole)
    assert set(subparsers(cli.build_parser(["stauts"]))) == set(whole)
    args = cli.build_parser(["status", "--json"]).parse_args(["status", "--json"])
    assert args.command == "status" and args.json
