"""Errors meant for people: each carries one line that the CLI and TUI show as is."""

from __future__ import annotations


class LanrayError(Exception):
    """An error whose message is one line a user can act on.

    The CLI prints it as ``lanray-tui: error: MESSAGE`` and exits non-zero; the TUI shows
    it in a notification. Never raise it with a multi-line message.
    """

    exit_code = 1


class ConfigError(LanrayError):
    """A configuration file is wrong: the message names the file, the key and the reason."""

    exit_code = 2


class NotRunningError(LanrayError):
    """No agent runs on this node (or its socket does not answer)."""
