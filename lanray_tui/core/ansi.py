"""Terminal escape codes in job output: Ray colours its log prefixes (``\\x1b[36m(pid=..)``),
which is noise in a file, a pipe or a terminal whose user set ``NO_COLOR``."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

# ECMA-48: CSI sequences (colours, cursor moves), the string sequences (OSC, DCS, SOS, PM,
# APC) up to their terminator, the short escapes (ESC 7, ESC ( B), and any ESC or 8-bit CSI
# left over, so that no escape byte ever reaches the output.
_ESCAPES = re.compile(
    r"""
      \x1b\[[0-?]*[ -/]*[@-~]
    | \x9b[0-?]*[ -/]*[@-~]
    | \x1b[\]PX^_].*?(?:\x07|\x1b\\|(?=\n)|\Z)
    | \x1b[ -/]*[0-~]
    | [\x1b\x9b]
    """,
    re.VERBOSE | re.DOTALL,
)


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences; text with none comes back unchanged."""
    if "\x1b" not in text and "\x9b" not in text:
        return text
    return _ESCAPES.sub("", text)


def wants_plain(is_tty: bool, env: Mapping[str, str] | None = None) -> bool:
    """Whether output should carry no escape codes: it is not a terminal, or ``NO_COLOR`` is
    set to anything but the empty string (https://no-color.org)."""
    env = os.environ if env is None else env
    return not is_tty or bool(env.get("NO_COLOR"))
