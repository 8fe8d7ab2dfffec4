"""A model directory factedit writes: the weights as they are now, and the patch that says how
they differ from their base.

    write_model_dir(lm, out, patch, {"factedit-spec.yaml": text}, overwrite=False)

Contents: config + safetensors weights + tokenizer (``AutoModelForCausalLM.from_pretrained``
loads it), :data:`~factedit.patch.core.PATCH_FILE` (the deltas over the base with the edit
state: a later ``edit apply --model DIR`` continues an AlphaEdit stream from it) and any extra
text files. A model that was itself loaded from such a directory passes its patch on: the new
one is merged after it, so the file always holds every delta over the original base. Written
atomically: on an error or Ctrl-C, nothing is left at ``out``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from factedit.console import warn
from factedit.errors import PatchError
from factedit.models.loading import LoadedModel
from factedit.patch.compose import merge
from factedit.patch.core import PATCH_FILE, Patch
from factedit.paths import atomic_dir


def write_model_dir(
    lm: LoadedModel,
    out: str | Path,
    patch: Patch,
    files: Mapping[str, str] | None = None,
    *,
    overwrite: bool = False,
) -> None:
    patch = with_prior_patch(lm, patch)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        lm.model.save_pretrained(tmp, safe_serialization=True)
        lm.tokenizer.save_pretrained(tmp)
        patch.save(tmp / PATCH_FILE)
        for name, text in (files or {}).items():
            (tmp / name).write_text(text)


def with_prior_patch(lm: LoadedModel, patch: Patch) -> Patch:
    """``patch`` after the patch of the directory ``lm`` was loaded from, if it has one."""
    prior_path = lm.source_dir / PATCH_FILE if lm.source_dir is not None else None
    if prior_path is None or not prior_path.is_file():
        return patch
    try:
        return merge([Patch.load(prior_path), patch])
    except PatchError as exc:
        warn(f"{prior_path} is not carried on ({exc}); the new patch holds this run's edits only")
        return patch


def model_bytes(lm: LoadedModel) -> int:
    """Bytes of the model's parameters as stored (what a full copy of the weights costs)."""
    return sum(p.numel() * p.element_size() for p in lm.model.parameters())
