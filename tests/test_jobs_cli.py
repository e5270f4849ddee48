"""The job commands' parsing and their one-line errors (no agent, no Ray)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from lanray_tui import cli, cli_jobs
from lanray_tui.core import submit
from lanray_tui.core.errors import LanrayError
from lanray_tui.core.jobs import JobView


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["submit", *argv])


def test_submit_a_script_with_options_before_and_after_it() -> None:
    args = parse("--cpus", "2", "train.py", "--name", "t", "--follow", "--", "--lr", "0.1")
    command, script, script_args = cli_jobs._split_submit(args)
    assert (command, script, script_args) == ([], "train.py", ["--lr", "0.1"])
    assert args.cpus == 2.0 and args.name == "t" and args.follow


def test_submit_a_command() -> None:
    args = parse("--priority", "3", "--", "python", "-c", "print(1)", "--name", "x")
    command, script, script_args = cli_jobs._split_submit(args)
    assert command == ["python", "-c", "print(1)", "--name", "x"]  # all of it is the command
    assert script == "" and script_args == [] and args.priority == 3


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ((), "needs a script PATH or '-- CMD ...'"),
        (("--",), "needs a command after '--'"),
        (("train.py", "extra"), "put its arguments after '--'"),
    ],
)
def test_submit_usage_errors_are_one_line(argv: tuple[str, ...], says: str) -> None:
    with pytest.raises(LanrayError, match=says):
        cli_jobs._split_submit(parse(*argv))


def test_missing_script_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    args = parse(str(tmp_path / "nope.py"))
    with pytest.raises(LanrayError, match="no such script"):
        cli_jobs._build_spec(args)


def test_script_outside_its_working_dir(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    script = tmp_path / "a" / "s.py"
    script.write_text("print(1)\n")
    args = parse("--working-dir", str(tmp_path / "b"), str(script))
    with pytest.raises(LanrayError, match="not inside --working-dir"):
        cli_jobs._build_spec(args)


def test_bad_env_option() -> None:
    with pytest.raises(LanrayError, match="NAME=VALUE"):
        cli_jobs._parse_env(["JUSTANAME"])
    assert cli_jobs._parse_env(["A=1", "B=x=y"]) == {"A": "1", "B": "x=y"}


@pytest.mark.parametrize(
    "argv",
    [
        ["jobs"],
        ["logs", "j-1234"],
        ["cancel", "j-1234"],
        ["retry", "j-1234"],
        ["submit", "--", "ls"],
    ],
)
def test_without_an_agent_every_command_says_so_in_one_line(argv: list[str]) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "lanray_tui", *argv], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 1
    assert "no lanray-tui agent runs on this node" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and p.stdout == ""


def test_ended_line_ends_with_the_job_id() -> None:
    line = cli_jobs._ended_line(
        JobView.from_json(
            {
                "id": "j-1a2b",
                "state": "FAILED",
                "exit_code": 1,
                "started": 1.0,
                "ended": 3.5,
                "message": "boom",
            }
        )
    )
    assert line == "FAILED (exit code 1; 2.5 s; boom) j-1a2b"


def test_the_upload_signature_changes_with_any_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("print(1)\n")
    (tmp_path / "sub" / "b.txt").write_text("x")
    first = submit.signature(tmp_path)
    assert first and submit.signature(tmp_path) == first
    (tmp_path / "sub" / "b.txt").write_text("xy")
    second = submit.signature(tmp_path)
    assert second != first
    (tmp_path / "c.py").write_text("")
    assert submit.signature(tmp_path) not in (first, second)


def test_the_upload_cache_keeps_the_last_dirs(tmp_path: Path) -> None:
    cache = tmp_path / "state" / "uploads.json"
    for i in range(submit.MAX_CACHED_DIRS + 5):
        submit._write_cache(cache, f"/d{i}", {"signature": "s", "uri": f"gcs://{i}.zip"})
    doc = submit._read_cache(cache)
    assert len(doc) == submit.MAX_CACHED_DIRS and "/d0" not in doc
    assert doc[f"/d{submit.MAX_CACHED_DIRS + 4}"]["uri"].endswith(".zip")
