"""A short history of one reading, drawn as a one-line sparkline, and nvitop's load levels.

Pure text: the UI maps a level to a colour (light: green, moderate: yellow, heavy: red).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

BLOCKS = "▁▂▃▄▅▆▇█"
NA_CELL = " "  # where a reading was n/a

# nvitop's thresholds (percent): below the first "light", below the second "moderate".
GPU_UTILIZATION_THRESHOLDS = (10.0, 75.0)
MEMORY_UTILIZATION_THRESHOLDS = (10.0, 80.0)
CPU_THRESHOLDS = (10.0, 75.0)


class History:
    """The last ``size`` readings (None for n/a), oldest first."""

    def __init__(self, size: int = 60) -> None:
        self._values: deque[float | None] = deque(maxlen=size)

    def push(self, value: float | None) -> None:
        self._values.append(value)

    def values(self) -> list[float | None]:
        return list(self._values)

    def last(self) -> float | None:
        return self._values[-1] if self._values else None

    def __len__(self) -> int:
        return len(self._values)

    def sparkline(self, width: int | None = None, lo: float = 0.0, hi: float = 100.0) -> str:
        return sparkline(self._values, width, lo, hi)


def sparkline(
    values: Iterable[float | None], width: int | None = None, lo: float = 0.0, hi: float = 100.0
) -> str:
    """One cell per value between ``lo`` and ``hi`` (clamped); the last ``width`` values,
    padded on the left with spaces to ``width``."""
    vals = list(values)
    if width is not None:
        vals = vals[-width:] if width > 0 else []
    span = hi - lo if hi > lo else 1.0
    cells = []
    for v in vals:
        if v is None:
            cells.append(NA_CELL)
            continue
        frac = min(1.0, max(0.0, (v - lo) / span))
        cells.append(BLOCKS[min(len(BLOCKS) - 1, int(frac * len(BLOCKS)))])
    line = "".join(cells)
    return line.rjust(width) if width is not None else line


def downsample(values: Sequence[float | None], width: int) -> list[float | None]:
    """``values`` in at most ``width`` buckets, each the mean of its readings (None where a
    bucket had none): 60 one-second readings in 12 cells of 5 s."""
    if width <= 0:
        return []
    if len(values) <= width:
        return list(values)
    out: list[float | None] = []
    for i in range(width):
        lo, hi = i * len(values) // width, (i + 1) * len(values) // width
        got = [v for v in values[lo:hi] if v is not None]
        out.append(sum(got) / len(got) if got else None)
    return out


def bar(percent: float | None, width: int = 20) -> str:
    """``█████▌··········`` for ``percent`` of ``width`` cells (eighths at the edge)."""
    if width <= 0:
        return ""
    if percent is None:
        return " " * width
    eighths = round(min(100.0, max(0.0, percent)) / 100.0 * width * 8)
    full, part = divmod(eighths, 8)
    cells = "█" * full + (PARTIAL[part] if part else "")
    return cells + "·" * (width - len(cells))


PARTIAL = " ▏▎▍▌▋▊▉"


def level(percent: float | None, thresholds: tuple[float, float] = CPU_THRESHOLDS) -> str:
    """How loaded: light, moderate or heavy (nvitop's loading intensity); "n/a" without a value."""
    if percent is None:
        return "n/a"
    if percent < thresholds[0]:
        return "light"
    return "moderate" if percent < thresholds[1] else "heavy"
