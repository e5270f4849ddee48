"""Progress of starting this node, step by step, with the failure (if any) at the end."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

# What the agent's states mean to a person watching it start.
STATE_WORDS = {
    "starting": "starting Ray",
    "restarting": "Ray restarting",
    "ready": "Ray is ready",
    "failed": "Ray failed",
    "stopping": "stopping",
}


class StepList(Static):
    """Steps done (✓), the current one (…), and an error line (✗)."""

    DEFAULT_CSS = """
    StepList { height: auto; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.steps: list[str] = []
        self.error = ""
        self.done = False

    def reset(self) -> None:
        self.steps, self.error, self.done = [], "", False
        self._redraw()

    def add(self, step: str) -> None:
        """A new step; one that updates the step before it (the same words before ": ",
        as in "pulling IMAGE: 2 of 5 layers") replaces it instead."""
        word = STATE_WORDS.get(step, step)
        if self.steps and _topic(self.steps[-1]) == _topic(word) and ": " in word:
            self.steps[-1] = word
        elif not self.steps or self.steps[-1] != word:
            self.steps.append(word)
        self._redraw()

    def finish(self, error: str = "") -> None:
        self.error = error
        self.done = not error
        self._redraw()

    def text(self) -> Text:
        out = Text()
        for i, step in enumerate(self.steps):
            last = i == len(self.steps) - 1
            if last and not self.done and not self.error:
                out.append("… ", "bold")
                out.append(step + "\n", "bold")
            elif last and self.error:
                out.append(f"✗ {step}\n")
            else:
                out.append(f"✓ {step}\n")
        if self.error:
            out.append("✗ ", "bold reverse")
            out.append(self.error, "bold")
        return out

    def _redraw(self) -> None:
        self.update(self.text())


def _topic(step: str) -> str:
    """The words before the last ": " (an image name may hold colons of its own)."""
    return step.rpartition(": ")[0] or step
