"""The core never imports the UI, and no command pays for heavy imports it does not use."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import lanray_tui.core

CORE = sorted(f"lanray_tui.core.{m.name}" for m in pkgutil.iter_modules(lanray_tui.core.__path__))
HEAVY = ("textual", "rich", "ray", "docker", "scapy", "pynvml")


def imported_after(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return {m.split(".")[0] for m in out.stdout.split()}


def test_core_modules_import_no_ui_nor_heavy_libraries() -> None:
    assert CORE, "no core modules found"
    for module in CORE:
        leaked = imported_after(module) & set(HEAVY)
        assert not leaked, f"{module} imports {leaked}"


def test_cli_startup_is_light() -> None:
    leaked = imported_after("lanray_tui.cli") & set(HEAVY)
    assert not leaked
