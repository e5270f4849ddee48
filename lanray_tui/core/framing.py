"""The control protocol's framing: one JSON object per line, on the agent's Unix socket and on
the host's cluster API alike.

A request is ``{"op": NAME, ...}``; the reply is ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "one line"}``; a stream sends many ``ok`` lines, then
``{"end": true}``. The ops themselves are in :mod:`.protocol`; this module is what both
sides need to put a line on the wire, and it is small enough for the first frame's
``info``.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import LanrayError

MAX_LINE = 1 << 20  # one request or reply line, in bytes
END_LINE = b'{"end":true}\n'


class ProtocolError(LanrayError):
    """A request or reply that does not follow the protocol, with the reason in one line."""


def encode(obj: Any) -> bytes:
    """One protocol line."""
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def ok_line(reply: Any) -> bytes:
    """The line that answers a request (or carries one item of a stream) with ``reply``
    (an object with ``to_json``: a reply class of :mod:`.protocol`)."""
    return encode({"ok": True, "result": reply.to_json()})


def error_line(message: str) -> bytes:
    """The line that refuses a request; ``message`` is one line for a person."""
    return encode({"ok": False, "error": message})
