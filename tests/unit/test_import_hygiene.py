"""The core never imports the UI, and no command pays for heavy imports it does not use."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import lanray_tui.adapters
import lanray_tui.core

CORE = sorted(f"lanray_tui.core.{m.name}" for m in pkgutil.iter_modules(lanray_tui.core.__path__))
ADAPTERS = sorted(
    f"lanray_tui.adapters.{m.name}" for m in pkgutil.iter_modules(lanray_tui.adapters.__path__)
)
CYCLES_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "import_cycles.py"
HEAVY = ("textual", "rich", "ray", "docker", "scapy", "pynvml")


def modules_after(module: str) -> set[str]:
    """Every module loaded by importing ``module`` in a fresh interpreter."""
    code = f"import sys, {module}; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def imported_after(module: str) -> set[str]:
    return {m.split(".")[0] for m in modules_after(module)}


def test_core_modules_import_no_ui_nor_heavy_libraries() -> None:
    assert CORE, "no core modules found"
    for module in CORE:
        leaked = imported_after(module) & set(HEAVY)
        assert not leaked, f"{module} imports {leaked}"


def test_cli_startup_is_light() -> None:
    leaked = imported_after("lanray_tui.cli") & set(HEAVY)
    assert not leaked


def test_adapters_load_nothing_of_the_core_but_its_types_leaf() -> None:
    assert ADAPTERS, "no adapters found"
    for module in ADAPTERS:
        core = {m for m in modules_after(module) if m.startswith("lanray_tui.core.")}
        assert core <= {"lanray_tui.core.types"}, f"{module} loads {sorted(core)}"


def test_the_types_leaf_imports_nothing_of_lanray_tui() -> None:
    ours = {m for m in modules_after("lanray_tui.core.types") if m.startswith("lanray_tui")}
    assert ours == {"lanray_tui", "lanray_tui.core", "lanray_tui.core.types"}


def test_the_old_homes_re_export_the_very_same_types() -> None:
    from lanray_tui.core import errors, models, resources, types

    assert errors.LanrayError is types.LanrayError
    assert issubclass(errors.ConfigError, types.LanrayError)
    assert models.NodeInfo is types.NodeInfo and models.GIB == types.GIB
    assert resources.Reading is types.Reading
    assert resources.GpuSample is types.GpuSample and resources.GpuProcess is types.GpuProcess


def count_cycles(package: Path, *flags: str) -> tuple[int, dict[str, int], str]:
    out = subprocess.run(
        [sys.executable, str(CYCLES_SCRIPT), str(package), "--json", *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.returncode, json.loads(out.stdout.splitlines()[-1]), out.stdout


def test_lanray_tui_has_no_import_cycle() -> None:
    rc, summary, text = count_cycles(Path(lanray_tui.__file__).parent)
    assert (rc, summary["cycles"]) == (0, 0), text
    assert summary["modules"] > 50


def test_the_cycle_counter_sees_deferred_imports_and_skips_type_checking(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    # a -> b -> a, with a's import deferred into a function: still a cycle.
    (pkg / "a.py").write_text("from . import c\n\ndef f():\n    from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("from ..a import f\n")
    # c -> a only under TYPE_CHECKING: no cycle unless asked for.
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n"
    )
    rc, summary, text = count_cycles(pkg)
    assert (rc, summary["cycles"], summary["modules"]) == (1, 1, 5), text
    assert "cycle: pkg.a -> pkg.sub.b -> pkg.a" in text
    rc, summary, text = count_cycles(pkg, "--type-checking")
    assert (rc, summary["cycles"]) == (1, 2), text
