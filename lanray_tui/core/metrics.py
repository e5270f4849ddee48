"""Per-epoch metrics that a job writes into its log, for the job's details view.

A job reports a metric row by printing one line::

    lanray-metric {"epoch": 3, "loss": 0.41, "accuracy": 0.93, "run": "parallel"}

Every number in the row but ``epoch``/``step`` becomes a point of a series named after the
key (prefixed by ``run`` when the row has one). Anything else in the log is ignored, and so
is a marker line whose JSON does not parse: a job's log is never trusted to be well formed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

MARKER = "lanray-metric "
MAX_POINTS = 1000  # per series: a details view shows the last ones
_INDEX_KEYS = frozenset({"epoch", "step"})


def metric_line(row: dict[str, object]) -> str:
    """The line a job prints for one row (what :func:`parse` reads back)."""
    return MARKER + json.dumps(row, sort_keys=True)


class Reader:
    """Series read line by line (a live log): :meth:`feed` says whether a line added points."""

    def __init__(self) -> None:
        self.series: dict[str, list[float]] = {}

    def feed(self, line: str) -> bool:
        at = line.find(MARKER)
        if at == -1:
            return False
        try:
            row = json.loads(line[at + len(MARKER) :])
        except ValueError:
            return False
        if not isinstance(row, dict):
            return False
        run = row.get("run")
        prefix = f"{run} " if isinstance(run, str) and run else ""
        added = False
        for key, value in row.items():
            if key in _INDEX_KEYS or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)):
                points = self.series.setdefault(f"{prefix}{key}", [])
                points.append(float(value))
                if len(points) > MAX_POINTS:
                    del points[0]
                added = True
        return added

    def snapshot(self) -> dict[str, list[float]]:
        return {name: list(points) for name, points in self.series.items()}


def parse(lines: Iterable[str]) -> dict[str, list[float]]:
    """Series by name, in the order the rows came, each at most :data:`MAX_POINTS` long."""
    reader = Reader()
    for line in lines:
        reader.feed(line)
    return reader.series
