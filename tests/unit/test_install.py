"""lanray-tui installs like a real tool: a built wheel carries its defaults and sample jobs as
files, and the installed command runs from any directory with no checkout in sight."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lanray_tui import __version__
from lanray_tui.core import config, samples, submit
from lanray_tui.core.errors import LanrayError
from tests.helpers.wheel import build_wheel, install_wheel

REPO = Path(__file__).resolve().parents[2]
SAMPLES = ["gpu_tasks", "kfold_cv", "parallel_map", "train_digits"]
HEAVY = ("ray", "textual", "docker", "scapy")


# ----- the package data, from this checkout ----------------------------------------------------


def test_defaults_and_samples_are_package_data() -> None:
    assert config.DEFAULT_FILE.is_file()
    text = config.DEFAULT_FILE.read_text()
    assert text == (REPO / "configs" / "default.yaml").read_text()  # one file: the symlink's
    found = samples.samples()
    assert [s.name for s in found] == SAMPLES
    for s in found:
        assert s.path.is_file() and s.path.parent == REPO / "sample_jobs"
        assert s.summary and "\n" not in s.summary
    assert submit.sample_jobs() == [(str(s.path), s.summary) for s in found]


def test_the_data_links_point_at_the_top_level_folders() -> None:
    data = REPO / "lanray_tui" / "_data"
    for name in ("configs", "sample_jobs"):
        assert (data / name).is_symlink()
        assert (data / name).resolve() == REPO / name


@pytest.mark.parametrize(
    ("typed", "found"),
    [
        ("sample_jobs/kfold_cv.py", "kfold_cv.py"),
        ("sample_jobs/nope.py", None),
        ("sample_jobs/README.md", None),
        ("other/kfold_cv.py", None),
        ("kfold_cv.py", None),
        ("x/sample_jobs/kfold_cv.py", None),
        ("/sample_jobs/kfold_cv.py", None),
    ],
)
def test_packaged_sample_by_the_path_people_type(typed: str, found: str | None) -> None:
    got = samples.packaged(Path(typed))
    assert (got.name if got else None) == found
    if got is not None:
        assert got.is_file()


def _spec_from(cwd: Path, script: str, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, Path]:
    uploaded: list[Path] = []

    def fake_upload(paths: Any, directory: Path) -> str:
        uploaded.append(directory)
        return "gcs://_ray_pkg_test.zip"

    monkeypatch.setattr(submit, "upload", fake_upload)
    monkeypatch.chdir(cwd)
    spec = submit.build_spec(object(), submit.Submission(script=Path(script)))  # type: ignore[arg-type]
    return spec, uploaded[0]


def test_submit_a_sample_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, uploaded = _spec_from(tmp_path, "sample_jobs/parallel_map.py", monkeypatch)
    assert spec["script"] == "parallel_map.py"
    assert spec["working_dir"] == "gcs://_ray_pkg_test.zip"
    assert uploaded == samples.sample_jobs_dir()


def test_a_local_sample_jobs_folder_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "sample_jobs"
    mine.mkdir()
    (mine / "parallel_map.py").write_text("print('mine')\n")
    spec, uploaded = _spec_from(tmp_path, "sample_jobs/parallel_map.py", monkeypatch)
    assert spec["script"] == "parallel_map.py" and uploaded == mine.resolve()


def test_an_unknown_sample_is_no_such_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LanrayError, match=r"^no such script: 'sample_jobs/nope\.py'$"):
        submit.build_spec(object(), submit.Submission(script=Path("sample_jobs/nope.py")))  # type: ignore[arg-type]


def test_samples_command_lists_names_paths_and_json() -> None:
    run = [sys.executable, "-m", "lanray_tui", "samples"]
    p = subprocess.run(run, capture_output=True, text=True, timeout=60, cwd="/")
    assert p.returncode == 0, p.stderr
    for name in SAMPLES:
        assert f"{REPO / 'sample_jobs' / name}.py" in p.stdout
    p = subprocess.run([*run, "--json"], capture_output=True, text=True, timeout=60, cwd="/")
    doc = json.loads(p.stdout)
    assert [s["name"] for s in doc["samples"]] == SAMPLES
    assert all(Path(s["path"]).is_file() and s["summary"] for s in doc["samples"])


# ----- a built wheel, installed outside the checkout ------------------------------------------


def imported_names(importtime_stderr: str) -> set[str]:
    """Module names from ``python -X importtime`` output."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in importtime_stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of this checkout (symlinks kept as symlinks)."""
    return build_wheel(tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield install_wheel(wheel, tmp_path_factory.mktemp("site"))


def run_installed(
    target: Path, *argv: str, python_flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """The installed ``lanray-tui`` entry point, run from ``/`` with only the install (and this
    venv's dependencies) on the path: never the checkout."""
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("LANRAY_DEBUG", None)
    return subprocess.run(
        [sys.executable, *python_flags, str(target / "bin" / "lanray-tui"), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_the_wheel_carries_defaults_and_samples_as_files(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        infos = {i.filename: i for i in z.infolist()}
        data = sorted(n for n in infos if n.startswith("lanray_tui/_data/"))
        assert data == [
            "lanray_tui/_data/configs/default.yaml",
            "lanray_tui/_data/sample_jobs/README.md",
            *(f"lanray_tui/_data/sample_jobs/{n}.py" for n in SAMPLES),
        ]
        for name in data:
            mode = infos[name].external_attr >> 16
            assert stat.S_ISREG(mode), f"{name} is not a plain file"
        assert (
            z.read("lanray_tui/_data/configs/default.yaml")
            == (REPO / "configs" / "default.yaml").read_bytes()
        )
        assert "lanray_tui/styles/app.tcss" in infos
        meta = z.read(f"lanray_tui-{__version__}.dist-info/METADATA").decode()
        assert "License-Expression: Apache-2.0" in meta


def test_installed_command_is_the_install_not_the_checkout(installed: Path) -> None:
    code = (
        "import json, lanray_tui; from lanray_tui.core import config, samples; "
        "cfg = config.load(); "
        "print(json.dumps({'file': lanray_tui.__file__, 'default': str(config.DEFAULT_FILE), "
        "'keys': len(cfg.as_dict()), 'port': cfg['ray.gcs_port'], "
        "'samples': [str(s.path) for s in samples.samples()]}))"
    )
    env = {**os.environ, "PYTHONPATH": str(installed)}
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/", env=env
    )
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert Path(doc["file"]).is_relative_to(installed)
    assert Path(doc["default"]).is_relative_to(installed)
    assert doc["keys"] == len(config.SCHEMA) and doc["port"] == 6379
    assert [Path(s).stem for s in doc["samples"]] == SAMPLES
    assert all(Path(s).is_relative_to(installed) for s in doc["samples"])


def test_installed_version_and_help_import_no_ray(installed: Path) -> None:
    for flag in ("--version", "--help"):
        p = run_installed(installed, flag, python_flags=("-X", "importtime"))
        assert p.returncode == 0, p.stderr[-2000:]
        names = imported_names(p.stderr)
        assert "lanray_tui.cli" in names  # the measure sees the command's own imports
        leaked = {n for n in names if n.split(".")[0] in HEAVY}
        assert not leaked, f"{flag} imports {sorted(leaked)[:5]}"
    assert run_installed(installed, "--version").stdout.strip() == f"lanray-tui {__version__}"
    assert "samples" in run_installed(installed, "--help").stdout


def test_installed_status_without_an_agent_is_one_line(installed: Path) -> None:
    p = run_installed(installed, "status")
    assert p.returncode != 0 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [p.stderr.strip()]
    assert "no lanray-tui agent runs on this node" in p.stderr


def test_installed_samples_lists_the_packaged_files(installed: Path) -> None:
    p = run_installed(installed, "samples", "--json")
    assert p.returncode == 0, p.stderr
    listed = json.loads(p.stdout)["samples"]
    assert [s["name"] for s in listed] == SAMPLES
    for s in listed:
        path = Path(s["path"])
        assert path.is_file() and path.is_relative_to(installed)
    p = run_installed(installed, "samples")
    assert p.returncode == 0 and "parallel_map" in p.stdout and str(installed) in p.stdout


def test_installed_submit_finds_the_packaged_sample(installed: Path) -> None:
    # From /, with no credentials: the sample is found (the next step, the upload, needs a
    # cluster), while a name that is no sample is no such script.
    p = run_installed(installed, "submit", "sample_jobs/parallel_map.py")
    assert p.returncode == 1 and "no cluster credentials" in p.stderr, p.stderr
    p = run_installed(installed, "submit", "sample_jobs/nope.py")
    assert p.returncode == 1 and "no such script: 'sample_jobs/nope.py'" in p.stderr, p.stderr
