"""Names for exact weights: caches and recorded choices are keyed by what the model *is*,
never by how it was loaded (preset name, local directory, .gguf file, hub id).

    exact, rounded = weight_fingerprints(model)

Both hash every tensor's name, shape and an evenly strided sample of at most
:data:`SAMPLE` of its values, in state-dict order (a weight accelerate offloaded to the CPU or
the disk is read from its offload store). ``exact`` hashes the sampled values as
float32: any edit changes it (a rank-one update changes every entry of its matrix), so
statistics collected on an edited model never land under the base model's key. ``rounded``
hashes them rounded to bfloat16 first, so the same checkpoint loaded in float32 or bfloat16
gets the same name: recorded per-model choices (a preset's edit layer) are keyed by it.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

SAMPLE = 4096


def offloaded_value(model: nn.Module, name: str) -> torch.Tensor | None:
    """The value of the parameter ``name`` that accelerate offloaded (its module's hook
    holds a ``weights_map``: CPU memory or files on disk), or None."""
    module_name, _, leaf = name.rpartition(".")
    try:
        module = model.get_submodule(module_name)
    except AttributeError:
        return None
    weights = getattr(getattr(module, "_hf_hook", None), "weights_map", None)
    if weights is None or leaf not in weights:
        return None
    return weights[leaf]


def _sample(tensor: torch.Tensor) -> torch.Tensor | None:
    """Up to :data:`SAMPLE` evenly strided values of ``tensor`` as float32 on the CPU, or
    None when the values are not in memory (meta / offloaded)."""
    if tensor.device.type == "meta":
        return None
    flat = tensor.detach().reshape(-1)
    stride = max(1, flat.numel() // SAMPLE)
    return flat[::stride][:SAMPLE].to("cpu", torch.float32)


def weight_fingerprints(model: nn.Module) -> tuple[str, str]:
    """(exact, bfloat16-rounded) fingerprints of ``model``'s weights, 16 hex digits each."""
    exact, rounded = hashlib.sha256(), hashlib.sha256()
    for name, tensor in model.state_dict().items():
        header = f"{name}:{tuple(tensor.shape)}\0".encode()
        exact.update(header)
        rounded.update(header)
        if tensor.device.type == "meta":
            found = offloaded_value(model, name)
            tensor = tensor if found is None else found
        values = _sample(tensor)
        if values is None:
            continue
        exact.update(values.numpy().tobytes())
        rounded.update(values.to(torch.bfloat16).view(torch.int16).numpy().tobytes())
    return exact.hexdigest()[:16], rounded.hexdigest()[:16]
