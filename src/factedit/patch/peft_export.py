"""A patch as a PEFT LoRA adapter: ``PeftModel.from_pretrained(base, DIR)`` then computes the
edited model, and stacks that serve LoRA adapters serve the edits without a merged copy.

    export_peft(patch, "adapter/")   # adapter_config.json + adapter_model.safetensors

Every edited weight becomes one LoRA module of rank r = the sum of its deltas' ranks (the
deltas of one weight are concatenated: ΔW = Σ_j L_j R_jᵀ = [L_1 … L_k] [R_1 … R_k]ᵀ), with
``lora_alpha`` = r so that PEFT's scaling α / r is 1. For ``nn.Linear`` (weight [out, in]):
``lora_B`` = L [out, r], ``lora_A`` = Rᵀ [r, in]. For GPT-2's ``Conv1D`` (weight [in, out],
``fan_in_fan_out``): ``lora_B`` = R [out, r], ``lora_A`` = Lᵀ [r, in]. Only the edited
down-projections are targeted (full module paths, with per-module ``rank_pattern``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

from factedit.errors import PatchError
from factedit.patch.core import Patch
from factedit.paths import atomic_dir

#: PEFT's prefix for the wrapped model's modules in a saved adapter.
PEFT_PREFIX = "base_model.model."


def lora_factors(patch: Patch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Module path -> (lora_A [r, in], lora_B [out, r]) float32 for every edited weight."""
    modules = {}
    for name in patch.params:
        if not name.endswith(".weight"):
            raise PatchError(f"{name} is not a module weight; a LoRA adapter cannot carry it")
        deltas = [d for d in patch.deltas if d.param == name]
        left = torch.cat([d.left.float() for d in deltas], dim=1)
        right = torch.cat([d.right.float() for d in deltas], dim=1)
        in_out = patch.info["base"]["tensors"][name].get("module") == "Conv1D"
        a, b = (left.T, right) if in_out else (right.T, left)
        modules[name.removesuffix(".weight")] = (a.contiguous(), b.contiguous())
    return modules


def adapter_config(patch: Patch, modules: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """adapter_config.json: LoRA on exactly ``modules``, scaling 1, no dropout, no bias."""
    ranks = {path: a.shape[0] for path, (a, _) in modules.items()}
    r = max(ranks.values())
    kinds = {patch.info["base"]["tensors"][f"{p}.weight"].get("module") for p in modules}
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": patch.info.get("model"),
        "r": r,
        "lora_alpha": r,
        "rank_pattern": ranks,
        "alpha_pattern": ranks,
        "target_modules": sorted(modules),
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": kinds == {"Conv1D"},
        "inference_mode": True,
        "init_lora_weights": True,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
    }


def export_peft(patch: Patch, out: str | Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Write the adapter directory ``out`` atomically; returns its config."""
    modules = lora_factors(patch)
    kinds = {patch.info["base"]["tensors"][f"{p}.weight"].get("module") for p in modules}
    if len(kinds) > 1 and "Conv1D" in kinds:
        raise PatchError("the patch edits both Conv1D and Linear weights; PEFT takes one layout")
    config = adapter_config(patch, modules)
    tensors = {}
    for path, (a, b) in modules.items():
        tensors[f"{PEFT_PREFIX}{path}.lora_A.weight"] = a
        tensors[f"{PEFT_PREFIX}{path}.lora_B.weight"] = b
    with atomic_dir(out, overwrite=overwrite) as tmp:
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        # bytes through write_bytes: the file gets the usual mode (save_file makes it 0600)
        data = save(tensors, metadata={"format": "pt"})
        (tmp / "adapter_model.safetensors").write_bytes(data)
        provenance = {k: patch.info.get(k) for k in ("model", "method", "layers", "edits")}
        (tmp / "factedit-provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return config
