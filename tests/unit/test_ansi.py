"""Ray's terminal escape codes leave job output when it goes to a file, a pipe or NO_COLOR."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lanray_tui import cli_jobs
from lanray_tui.core.ansi import strip_ansi, wants_plain
from lanray_tui.core.jobs import JobView
from lanray_tui.core.protocol import JobLogItem, JobLogsRequest

ESC_BYTES = ("\x1b", "\x9b")
plain_text = st.text().filter(lambda t: not any(b in t for b in ESC_BYTES))
params = st.text(alphabet="0123456789;:<=>?", max_size=8)
csi = st.builds(
    lambda intro, p, mid, final: intro + p + mid + final,
    st.sampled_from(["\x1b[", "\x9b"]),
    params,
    st.text(alphabet=" !\"#$%&'()*+,-./", max_size=2),
    st.characters(min_codepoint=0x40, max_codepoint=0x7E),
)
osc = st.builds(
    lambda kind, body, end: "\x1b" + kind + body + end,
    st.sampled_from(["]", "P", "X", "^", "_"]),
    plain_text.filter(lambda t: "\x07" not in t and "\n" not in t),
    st.sampled_from(["\x07", "\x1b\\"]),
)
short = st.sampled_from(["\x1b7", "\x1b8", "\x1bc", "\x1b(B", "\x1b)0", "\x1b="])
escape = st.one_of(csi, osc, short)


def test_ray_log_prefixes_lose_their_colours() -> None:
    line = "\x1b[36m(parallel_map pid=4182, ip=10.0.0.7)\x1b[0m chunk 3 done \x1b[1;32mOK\x1b[0m"
    assert strip_ansi(line) == "(parallel_map pid=4182, ip=10.0.0.7) chunk 3 done OK"
    assert strip_ansi("\x1b]8;;http://x\x07link\x1b]8;;\x1b\\ here") == "link here"
    assert strip_ansi("50%\x1b[2K\r60%") == "50%\r60%"  # carriage returns are text
    assert strip_ansi("cut \x1b[3") == "cut 3"  # a cut-off CSI leaves no ESC behind
    assert strip_ansi("\x1b]0;title never ends\nnext") == "\nnext"


@given(plain_text)
def test_text_without_escapes_comes_back_unchanged(text: str) -> None:
    assert strip_ansi(text) == text


@given(st.lists(st.tuples(escape, plain_text), max_size=6), plain_text)
def test_escapes_between_text_leave_exactly_the_text(
    pieces: list[tuple[str, str]], head: str
) -> None:
    mixed = head + "".join(e + t for e, t in pieces)
    assert strip_ansi(mixed) == head + "".join(t for _, t in pieces)


@given(
    st.text(
        alphabet=st.sampled_from(
            ["\x1b", "\x9b", "[", "]", "\\", "\x07", "m", "1", ";", "a", "\n", "P", "("]
        )
    )
    | st.text()
)
def test_no_escape_byte_survives_and_stripping_twice_changes_nothing(text: str) -> None:
    once = strip_ansi(text)
    assert not any(b in once for b in ESC_BYTES)
    assert strip_ansi(once) == once
    assert len(once) <= len(text)


@pytest.mark.parametrize(
    ("tty", "env", "plain"),
    [
        (True, {}, False),
        (False, {}, True),
        (True, {"NO_COLOR": "1"}, True),
        (True, {"NO_COLOR": ""}, False),  # no-color.org: an empty value does not count
        (False, {"NO_COLOR": "1"}, True),
    ],
)
def test_plain_when_not_a_terminal_or_no_color(tty: bool, env: dict[str, str], plain: bool) -> None:
    assert wants_plain(tty, env) is plain


# ----- the CLI's log printing (logs, submit --follow) ------------------------------------------

COLOURED = "\x1b[36m(task pid=7)\x1b[0m hello"


DONE = JobView(id="j1", name="j1", state="SUCCEEDED")


class StubClient:
    """The agent's side of one ``job_logs`` stream: a line, then the ended job."""

    def stream(self, req: JobLogsRequest) -> Iterator[JobLogItem]:
        assert req.OP == "job_logs" and req.id == "j1"
        yield JobLogItem(line=COLOURED)
        yield JobLogItem(job=DONE)


@pytest.mark.parametrize(
    ("tty", "no_color", "printed"),
    [
        (False, None, "(task pid=7) hello"),
        (True, "1", "(task pid=7) hello"),
        (True, None, COLOURED),
    ],
)
def test_printed_log_lines(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tty: bool,
    no_color: str | None,
    printed: str,
) -> None:
    monkeypatch.setattr(cli_jobs, "_client", lambda args: StubClient())
    monkeypatch.setattr(sys.stdout, "isatty", lambda: tty)
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    last = cli_jobs._print_logs(argparse.Namespace(), "j1", follow=True)
    assert last == DONE
    assert capsys.readouterr().out == printed + "\n"
