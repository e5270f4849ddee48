"""Building lanray-tui's wheel from this checkout and installing it away from it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# What the build reads: the rest of the checkout (.venv, build/, bench/) stays out of it.
BUILD_INPUTS = ["pyproject.toml", "README.md", "lanray_tui", "configs", "sample_jobs"]


def build_wheel(src: Path, out: Path) -> Path:
    """A wheel built from a copy of this checkout in ``src`` (symlinks kept), into ``out``."""
    for name in BUILD_INPUTS:
        here = REPO / name
        if here.is_dir():
            shutil.copytree(
                here,
                src / name,
                symlinks=True,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )
        else:
            shutil.copy2(here, src / name)
    p = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if p.returncode != 0 and "No matching distribution found for setuptools" in p.stdout + p.stderr:
        pytest.skip("the build backend (setuptools>=77) cannot be installed here")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "deprecat" not in (p.stdout + p.stderr).lower()
    (whl,) = out.glob("lanray_tui-*.whl")
    return whl


def install_wheel(wheel: Path, target: Path) -> Path:
    """The wheel installed (without its dependencies, which this Python has) into ``target``:
    put it first on PYTHONPATH to run the installed lanray-tui instead of the checkout."""
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps"]
    p = subprocess.run(
        [*pip, "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stdout + p.stderr
    return target
