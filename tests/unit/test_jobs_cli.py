"""The job commands' parsing and their one-line errors (no agent, no Ray)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lanray_tui import cli, cli_jobs
from lanray_tui.core import protocol as p
from lanray_tui.core import submit
from lanray_tui.core.errors import LanrayError
from lanray_tui.core.jobs import JobView
from lanray_tui.core.models import PROTOCOL_VERSION
from lanray_tui.core.paths import Paths, ensure_private_dir
from tests.helpers.agent_stub import AGENT, AgentStub, answers


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


# ----- the commands against an agent on a real socket (tests/agent_stub.py) ----------------


@pytest.fixture()
def sock() -> Path:
    paths = Paths.from_env()
    ensure_private_dir(paths.runtime_dir)
    return paths.socket


JOB_JSON = {
    "id": "j-1a2b",
    "name": "train",
    "state": "RUNNING",
    "priority": 0,
    "entrypoint": "python train.py",
    "working_dir": "",
    "submitter": "me@n1",
    "created": 1.0,
    "submitted": 2.0,
    "started": 3.0,
    "ended": None,
    "exit_code": None,
    "message": "",
    "ray_id": "lanray-j-1a2b-1-abcd",
    "attempt": 1,
    "num_cpus": None,
    "num_gpus": None,
    "node": "10.0.0.2",
}


def test_jobs_prints_the_queue_as_the_agent_sent_it(
    sock: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = JobView.from_json(JOB_JSON)
    stub = AgentStub(
        sock,
        answers(
            AGENT.to_json(),
            jobs=p.JobsReply(jobs=[job], cluster_ready=False, scheduler_error="Ray is down"),
            cancel=p.CancelReply(job=job, changed=True),
            retry=JobView.from_json({**JOB_JSON, "state": "QUEUED", "attempt": 2}),
        ),
    )
    try:
        assert cli.main(["jobs", "--json"]) == 0
        # in no cluster here: no storage, so no output folder nor size
        no_output = {"output": "", "output_bytes": None}
        assert json.loads(capsys.readouterr().out) == {"jobs": [{**JOB_JSON, **no_output}]}
        assert cli.main(["jobs"]) == 0
        out = capsys.readouterr().out
        assert "j-1a2b  train" in out
        assert "note: the cluster is not ready: queued jobs wait" in out
        assert "note: scheduler: Ray is down" in out
        assert cli.main(["cancel", "j-1a2b"]) == 0
        assert capsys.readouterr().out == "cancelled j-1a2b\n"
        assert cli.main(["retry", "j-1a2b"]) == 0
        assert capsys.readouterr().out == "queued j-1a2b again (attempt 2)\n"
        # one handshake per command (a fresh client each), then the op itself
        assert stub.seen == ["info", "jobs", "info", "jobs", "info", "cancel", "info", "retry"]
    finally:
        stub.close()


def test_a_bad_job_id_is_refused_before_anything_is_sent(
    sock: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stub = AgentStub(sock, answers(AGENT.to_json()))
    try:
        assert cli.main(["cancel", "   "]) == 1
        err = capsys.readouterr().err
        assert (
            err == "lanray-tui: error: which job? (give its id, as 'lanray-tui jobs' lists them)\n"
        )
        assert stub.seen == []
    finally:
        stub.close()


def test_an_agent_of_another_protocol_is_one_line_from_every_command(
    sock: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = AGENT.to_json()
    del old["protocol"]
    stub = AgentStub(sock, answers(old, jobs=p.JobsReply(jobs=[])))
    try:
        for argv in (["jobs"], ["status"], ["logs", "j-1"], ["resume"]):
            assert cli.main(argv) == 1
            got = capsys.readouterr()
            assert got.out == ""
            assert got.err == (
                f"lanray-tui: error: this lanray-tui speaks protocol {PROTOCOL_VERSION} but the "
                "agent (pid 7, version 0.1.0) speaks 1: stop it with 'lanray-tui leave' and "
                "start it again\n"
            )
        assert stub.seen == ["info"] * 4
    finally:
        stub.close()


def test_status_json_is_the_agents_answer(sock: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = {
        "node_id": "n1",
        "ip": "10.0.0.1",
        "name": "alpha",
        "role": "head",
        "state": "ALIVE",
        "cpus": 4.0,
        "gpus": 0.0,
        "memory_gb": 8.0,
        "link": "UP",
        "last_heartbeat_s": None,
        "lending": {"state": "lending", "reason": "lent to the cluster"},
        "resources": {},
        "runtime": {"kind": "native"},
    }
    status = p.StatusReply(nodes=[node], agent=AGENT, free={"free_cpus": 3.0})
    stub = AgentStub(sock, answers(AGENT.to_json(), status=status))
    try:
        assert cli.main(["status", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == status.to_json()
        assert cli.main(["status"]) == 0
        out = capsys.readouterr().out
        assert "cluster 'lab'  head 10.0.0.1:6379" in out
        assert "alpha  10.0.0.1  head  ALIVE  UP    lending  4     n/a" in out
    finally:
        stub.close()
