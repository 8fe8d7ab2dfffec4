"""The wheel carries every file the package reads at run time (not only its Python code).

``pip install .`` (not editable) must give a factedit that finds its presets: the wheel is
built from a copy of the working tree (so the build leaves no ``build/`` or stale egg-info in
the checkout, and a stale ``SOURCES.txt`` cannot smuggle files in), and every non-Python file
under ``src/factedit`` must be inside it. ``.ci/run`` goes further and installs the wheel into a
fresh virtual environment.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from proc_helpers import run_python

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "factedit"
PRESETS = ("gemma-3-270m", "smollm2-135m")
_SKIP_DIRS = {"__pycache__"}
_CODE_SUFFIXES = {".py", ".pyc", ".pyo"}


def _runtime_data_files() -> list[str]:
    """Wheel paths (``factedit/...``) of every non-Python file in the source package."""
    found = []
    for path in sorted(PACKAGE.rglob("*")):
        rel = path.relative_to(PACKAGE)
        if not path.is_file() or _SKIP_DIRS & set(rel.parts) or path.suffix in _CODE_SUFFIXES:
            continue
        found.append(f"factedit/{rel.as_posix()}")
    return found


def _ignore(directory: str, names: list[str]) -> list[str]:
    return [n for n in names if n in _SKIP_DIRS or n.endswith(".egg-info") or n == "build"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    missing = [m for m in ("pip", "setuptools") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"build tooling absent from {sys.executable}: {', '.join(missing)}")
    tmp = tmp_path_factory.mktemp("wheel")
    tree, dist = tmp / "tree", tmp / "dist"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md", "MANIFEST.in", "LICENSE"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, tree / name)
    shutil.copytree(REPO / "src", tree / "src", ignore=_ignore)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    done = subprocess.run(
        [*cmd, "--no-index", "--disable-pip-version-check", "-q", ".", "-w", str(dist)],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"wheel build failed:\n{done.stdout}\n{done.stderr}"
    wheels = sorted(dist.glob("factedit-*.whl"))
    assert len(wheels) == 1, f"expected one factedit wheel, got {[w.name for w in wheels]}"
    return wheels[0]


def _names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_presets_are_in_the_wheel(wheel):
    names = _names(wheel)
    for preset in PRESETS:
        assert f"factedit/models/presets/{preset}.yaml" in names, (
            f"preset {preset} is missing from {wheel.name}; it must be package data "
            "([tool.setuptools.package-data] in pyproject.toml)"
        )


def test_every_runtime_data_file_is_in_the_wheel(wheel):
    expected = _runtime_data_files()
    assert "factedit/py.typed" in expected  # the scan sees the source package
    missing = sorted(set(expected) - _names(wheel))
    assert not missing, (
        f"{wheel.name} lacks files the package ships in src/factedit: {missing}; add them to "
        "[tool.setuptools.package-data] in pyproject.toml"
    )


def test_installed_copy_finds_its_presets(wheel, tmp_path):
    """The presets are found through ``Path(__file__)`` from an unpacked wheel (the same
    layout ``pip install`` gives), not from the checkout."""
    root = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(root)
    # presets.py is loaded by file so that factedit.models' heavy imports (torch) are skipped;
    # everything it imports from factedit comes from the unpacked wheel (sys.path[0]).
    probe = (
        "import importlib.util, sys\n"
        f"sys.path.insert(0, {str(root)!r})\n"
        f"path = {str(root / 'factedit' / 'models' / 'presets.py')!r}\n"
        "spec = importlib.util.spec_from_file_location('_factedit_presets_probe', path)\n"
        "mod = sys.modules[spec.name] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(mod)\n"
        "import factedit\n"
        "assert factedit.__file__.startswith(sys.path[0]), factedit.__file__\n"
        "print(' '.join(sorted(mod.list_presets())))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = run_python(["-c", probe], cwd=tmp_path, env=env)
    assert done.stdout.split() == sorted(PRESETS)
