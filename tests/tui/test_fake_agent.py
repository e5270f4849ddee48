"""The TUI tests' fake agent speaks the real protocol to the real client."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from lanray_tui.core import protocol as p
from lanray_tui.core.control import AgentError, ControlClient
from tests.helpers.fake_agent import FakeAgent


def test_fake_agent_answers_the_real_client(tmp_path: Path) -> None:
    fake = FakeAgent().start()
    try:
        client = ControlClient(fake.paths.socket, timeout=5.0)
        assert client.info().cluster_name == "testlab"
        assert len(client.request(p.StatusRequest()).nodes) == 3
        lines = [item.line for item in client.stream(p.LogsRequest(source="ray", lines=1))]
        assert lines == ["ray line 2"]
        assert client.request(p.CodeRequest()).code == "7-tiger-canvas"
        assert [o["op"] for o in fake.ops] == ["info", "status", "logs", "code"]
    finally:
        fake.stop()
    assert not fake.paths.socket.exists()
    assert socket.AF_UNIX  # the fake is a Unix socket, nothing else


def test_fake_agent_refuses_what_the_agent_refuses() -> None:
    fake = FakeAgent().start()
    try:
        client = ControlClient(fake.paths.socket, timeout=5.0)
        with pytest.raises(AgentError, match="which job"):
            client.request(p.JobRequest(id=""))
        fake.code = None
        with pytest.raises(AgentError, match="'code' is not available here"):
            client.request(p.CodeRequest())
    finally:
        fake.stop()
