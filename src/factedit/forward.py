"""Forward passes that skip work which does not change.

``resume_from_layer(arch, layer, hidden)`` runs the model from decoder layer ``layer`` on,
given the residual stream entering it: the layers below are temporarily replaced by
passthrough modules (the list keeps its length and indexes, so the base model still builds
its per-layer attention masks and position embeddings). ``hidden_at(...)`` reads the
residual stream entering a layer, stopping the forward pass there. :class:`PrefixCache`
splits each row of a batch where it starts to change: the keys and values of the fixed
prefix are computed once, and every later forward pass runs only the suffixes.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from factedit.batching import pad_right
from factedit.hooks import Trace
from factedit.kvcache import cache_argument, output_cache
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
    arch: Architecture,
    layer: int,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    **inputs: Any,
) -> torch.Tensor:
    """Residual stream entering decoder ``layer`` (= output of ``layer - 1``): [B, T, d].

    ``inputs`` go to the model as they are (``position_ids``, ``past_key_values``, ...).
    """
    if layer == 0:
        raise ValueError("the stream entering layer 0 is the embedding; nothing to skip")
    inputs.setdefault("use_cache", False)
    layers = arch.layers()
    probe = layers[0].register_forward_hook(mark_tuple_output)
    try:
        with Trace(arch.model, arch.layer_name(layer - 1), detach=True, stop=True) as tr:
            arch.model(input_ids=input_ids, attention_mask=attention_mask, **inputs)
    finally:
        probe.remove()
    assert tr.output is not None
    return tr.output


def mark_tuple_output(module: nn.Module, _args: tuple, output: object) -> None:
    """Remember whether decoder layers return a tuple (the passthrough must do the same)."""
    module._factedit_tuple = isinstance(output, tuple)


class PrefixCache:
    """A batch whose rows are split in two: a fixed prefix, computed once, and a suffix.

    ``rows[i][:split[i]]`` is row i's prefix: tokens whose states never change between the
    forward passes that follow (with causal attention, nothing after them can reach them).
    Their keys and values are computed once, with the prefixes right-padded to width P;
    :meth:`inputs` then gives the model only the suffixes [B, S] (right-padded), with an
    attention mask [B, P + S] that hides the prefix padding and ``position_ids`` [B, S]
    that continue each row's own prefix. Suffix position j of row i is token
    ``split[i] + j`` of the row. Every call of :meth:`inputs` gets a fresh copy of the
    cache, so one forward pass (and its autograd graph) never leaks into the next.
    ``base_model`` is the decoder stack without the LM head (no logits for the prefixes);
    the cache it fills serves the full model too.
    """

    def __init__(
        self,
        base_model: nn.Module,
        rows: Sequence[Sequence[int]],
        split: Sequence[int],
        pad_id: int,
        device: torch.device | str,
    ) -> None:
        pairs = list(zip(rows, split, strict=True))
        if any(not 0 <= s < len(r) for r, s in pairs):
            raise ValueError("every row needs at least one token after its split")
        prefix_ids, prefix_mask = pad_right([r[:s] for r, s in pairs], pad_id, device)
        self.suffix_ids, suffix_mask = pad_right([r[s:] for r, s in pairs], pad_id, device)
        self.attention_mask = torch.cat([prefix_mask, suffix_mask], dim=1)
        offsets = torch.tensor(list(split), device=device)[:, None]
        self.position_ids = offsets + torch.arange(self.suffix_ids.shape[1], device=device)
        self._cache = None
        if prefix_ids.shape[1] > 0:
            # all-ones mask: causal attention keeps each real prefix token from seeing the
            # padding after it, and no row is left with nothing to attend to
            with torch.no_grad():
                out = base_model(
                    input_ids=prefix_ids,
                    attention_mask=torch.ones_like(prefix_ids),
                    use_cache=True,
                )
            self._cache = output_cache(out)
        self._cache_arg = cache_argument(base_model)

    def inputs(self, rows: torch.Tensor | None = None) -> dict[str, Any]:
        """Keyword arguments for one forward pass over the suffixes (of ``rows`` only)."""
        inputs: dict[str, Any] = {
            "input_ids": self.suffix_ids,
            "attention_mask": self.attention_mask,
            "position_ids": self.position_ids,
        }
        if rows is not None:
            inputs = {k: v[rows] for k, v in inputs.items()}
        if self._cache is not None:
            cache = copy.deepcopy(self._cache)
            if rows is not None:
                cache.batch_select_indices(rows)
            inputs.update({self._cache_arg: cache, "use_cache": True})
        else:
            inputs.update(use_cache=False)
        return inputs
