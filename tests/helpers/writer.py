"""A stand-in for an asyncio StreamWriter that keeps what was written."""

from __future__ import annotations

import json
from typing import Any


class FakeWriter:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        pass

    def items(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.data.splitlines()]
