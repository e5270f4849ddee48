"""The sample jobs that ship with lanray-tui, found as package data.

In a checkout they are the top-level ``sample_jobs/`` folder (``lanray_tui/_data/sample_jobs``
is a symlink to it); in a wheel or pipx install they are files inside the package. Either
way ``importlib.resources`` finds them, so the TUI's new-job form, ``lanray-tui samples``
and ``submit sample_jobs/NAME.py`` work with no checkout in sight.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePath

# What a person types to name a sample: ``sample_jobs/NAME.py``, as in the README.
PREFIX = "sample_jobs"


@dataclass(frozen=True)
class Sample:
    """One sample job: its name (``parallel_map``), its file and its docstring's first line."""

    name: str
    path: Path
    summary: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "path": str(self.path), "summary": self.summary}


def sample_jobs_dir() -> Path | None:
    """The folder of sample jobs in this install (resolved, so a checkout shows its own
    ``sample_jobs/``), or None when this install has none."""
    root = resources.files("lanray_tui") / "_data" / PREFIX
    # Installed packages live on disk; a zipped one (never made by pip) has no folder to upload.
    if not isinstance(root, Path) or not root.is_dir():
        return None
    return root.resolve()


def samples() -> list[Sample]:
    """The sample jobs, by name (files starting with '_' are helpers, not samples)."""
    root = sample_jobs_dir()
    if root is None:
        return []
    return [
        Sample(path.stem, path, _summary(path))
        for path in sorted(root.glob("*.py"))
        if not path.name.startswith("_")
    ]


def packaged(script: PurePath) -> Path | None:
    """The packaged sample that ``script`` names (``sample_jobs/NAME.py``), or None.

    Callers ask only when no such local file exists: a local ``sample_jobs/`` always wins.
    """
    parts = script.parts
    if len(parts) != 2 or parts[0] != PREFIX or parts[1].startswith("_"):
        return None
    root = sample_jobs_dir()
    if root is None:
        return None
    path = root / parts[1]
    return path if path.suffix == ".py" and path.is_file() else None


def _summary(path: Path) -> str:
    try:
        head = path.read_text(errors="replace")[:2000]
    except OSError:
        return ""
    for quote in ('"""', "'''"):
        start = head.find(quote)
        if start != -1:
            body = head[start + 3 :].strip().splitlines()
            return body[0].strip() if body else ""
    return ""
