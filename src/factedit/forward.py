"""Forward passes that skip work which does not change.

``resume_from_layer(arch, layer, hidden)`` runs the model from decoder layer ``layer`` on,
given the residual stream entering it: the layers below are temporarily replaced by
passthrough modules (the list keeps its length and indexes, so the base model still builds
its per-layer attention masks and position embeddings). ``hidden_at(...)`` reads the
residual stream entering a layer, stopping the forward pass there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from factedit.hooks import Trace
from factedit.models.arch import Architecture


class _Passthrough(nn.Module):
    """Stands in for a skipped decoder layer: returns its input (or a fixed tensor)."""

    def __init__(self, original: nn.Module, replacement: torch.Tensor | None = None) -> None:
        super().__init__()
        self.__dict__["_original"] = original
        self.__dict__["_replacement"] = replacement

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        replacement = self.__dict__["_replacement"]
        out = hidden_states if replacement is None else replacement
        # some transformers versions return (hidden, ...) from decoder layers
        return (out,) if getattr(self.__dict__["_original"], "_factedit_tuple", False) else out

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_original"], name)


@contextlib.contextmanager
def resume_from_layer(
    arch: Architecture, layer: int, hidden: torch.Tensor | None
) -> Iterator[None]:
    """Within the block, a forward pass starts at ``layer`` with residual ``hidden`` [B, T, d].

    The batch given to the model must have the same shape [B, T] as ``hidden``. At layer 0
    nothing is skipped and ``hidden`` is ignored (may be None).
    """
    if layer == 0 or hidden is None:
        yield
        return
    layers = arch.layers()
    originals = [layers[i] for i in range(layer)]
    is_tuple = getattr(layers[0], "_factedit_tuple", False)
    for module in originals:
        module._factedit_tuple = is_tuple
    try:
        layers[0] = _Passthrough(originals[0], hidden)
        for i in range(1, layer):
            layers[i] = _Passthrough(originals[i])
        yield
    finally:
        for i, module in enumerate(originals):
            layers[i] = module


@torch.no_grad()
def hidden_at(
    arch: Architecture, layer: int, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Residual stream entering decoder ``layer`` (= output of ``layer - 1``): [B, T, d]."""
    if layer == 0:
        raise ValueError("the stream entering layer 0 is the embedding; nothing to skip")
    layers = arch.layers()
    probe = layers[0].register_forward_hook(_mark_tuple_output)
    try:
        with Trace(arch.model, arch.layer_name(layer - 1), detach=True, stop=True) as tr:
            arch.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        probe.remove()
    assert tr.output is not None
    return tr.output


def _mark_tuple_output(module: nn.Module, _args: tuple, output: object) -> None:
    """Remember whether decoder layers return a tuple (the passthrough must do the same)."""
    module._factedit_tuple = isinstance(output, tuple)
