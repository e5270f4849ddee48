"""Errors meant for people: each carries one line that the CLI and TUI show as is.

:class:`LanrayError` itself lives in :mod:`.types`, the leaf module the adapters may import;
it is re-exported here, where the rest of the code has always found it.
"""

from __future__ import annotations

from .types import LanrayError

__all__ = ["ConfigError", "LanrayError", "NotRunningError"]


class ConfigError(LanrayError):
    """A configuration file is wrong: the message names the file, the key and the reason."""

    exit_code = 2


class NotRunningError(LanrayError):
    """No agent runs on this node (or its socket does not answer)."""
