"""What a patch was made on, so that it is applied to that and nothing else.

    fp = base_fingerprint(model, {"model.layers.2.mlp.down_proj.weight": W_before})
    fingerprint_problems(fp, model)   # [] on the model the patch was made on, else one line each

A fingerprint holds the model's ``model_type``, the shape-defining fields of its config (and
their sha256), and per edited weight the sha256 of its bytes *before* the patch (with dtype,
shape, Frobenius norm and the class of the module that owns it): a patch refuses a model
whose edited weights are not bit for bit the ones it was computed on — another model,
another dtype, or the same model already carrying a conflicting edit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

#: The config fields that define the shapes and the arithmetic of a decoder; the fields that
#: change on a save/reload round trip (names, versions, dtype, token ids) are left out.
CONFIG_FIELDS = (
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "n_embd",
    "n_layer",
    "n_head",
    "n_inner",
    "hidden_act",
    "hidden_activation",
    "activation_function",
    "rms_norm_eps",
    "layer_norm_epsilon",
    "tie_word_embeddings",
    "sliding_window",
    "query_pre_attn_scalar",
)


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The raw bytes of a tensor of any dtype on any device (row-major)."""
    return tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()


def tensor_sha256(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and raw bytes (any dtype, any device), hex."""
    h = hashlib.sha256(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    h.update(tensor_bytes(tensor))
    return h.hexdigest()


def config_fields(config: Any) -> dict[str, Any]:
    """The :data:`CONFIG_FIELDS` the config defines (a text sub-config's for multimodal ones)."""
    source = getattr(config, "text_config", None) or config
    values = source.to_dict() if hasattr(source, "to_dict") else dict(source)
    return {k: values[k] for k in CONFIG_FIELDS if values.get(k) is not None}


def config_sha256(fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def describe_tensor(tensor: torch.Tensor) -> dict[str, Any]:
    return {
        "sha256": tensor_sha256(tensor),
        "dtype": str(tensor.dtype).removeprefix("torch."),
        "shape": list(tensor.shape),
    }


def base_fingerprint(model: nn.Module, before: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The fingerprint of ``model`` whose weights ``before`` (name -> tensor as it was before
    the patch) are the ones a patch changes."""
    fields = config_fields(model.config)
    tensors = {}
    for name, tensor in sorted(before.items()):
        owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        tensors[name] = {
            **describe_tensor(tensor),
            "module": type(owner).__name__,
            "norm": float(tensor.detach().double().norm()),
        }
    return {
        "model_type": fields.get("model_type"),
        "config": fields,
        "config_sha256": config_sha256(fields),
        "tensors": tensors,
    }


def fingerprint_problems(fingerprint: Mapping[str, Any], model: nn.Module) -> list[str]:
    """Why ``model`` is not the one ``fingerprint`` describes (empty: it is)."""
    fields = config_fields(model.config)
    wanted = fingerprint.get("config", {})
    if fields.get("model_type") != fingerprint.get("model_type"):
        return [
            f"the patch is for a {fingerprint.get('model_type')} model, this one is "
            f"{fields.get('model_type')}"
        ]
    differ = [k for k in sorted(set(wanted) | set(fields)) if wanted.get(k) != fields.get(k)]
    if differ:
        shown = ", ".join(f"{k} {wanted.get(k)} (this model: {fields.get(k)})" for k in differ)
        return [f"the patch is for another {fields.get('model_type')} configuration: {shown}"]
    problems = []
    params = dict(model.named_parameters())
    for name, want in fingerprint.get("tensors", {}).items():
        if name not in params:
            problems.append(f"this model has no weight {name}")
            continue
        have = describe_tensor(params[name])
        if (have["dtype"], have["shape"]) != (want["dtype"], want["shape"]):
            problems.append(
                f"{name} is {have['dtype']} {have['shape']} here, the patch was made on "
                f"{want['dtype']} {want['shape']}"
            )
        elif have["sha256"] != want["sha256"]:
            problems.append(
                f"{name} differs from the weight the patch was made on (another checkpoint, or "
                "the model already carries an edit there)"
            )
    return problems
