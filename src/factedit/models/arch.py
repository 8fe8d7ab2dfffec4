"""The architecture map: ``config.model_type`` -> module paths and weight orientation.

This module is the only place in factedit that knows module names. Every other module asks
an :class:`Architecture` (bound to one model) for the layer list, the MLP down-projection that
ROME edits, the MLP, the attention, the embedding, the final norm and the LM head.

A model whose ``model_type`` is not listed can still be edited by naming its modules in the
edit spec under ``architecture:`` (keys: see :data:`ARCH_KEYS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields, replace

import torch
from torch import nn

from factedit.errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class ArchPaths:
    """Dotted module paths for one model family.

    ``layers``, ``embed``, ``final_norm`` and ``lm_head`` are relative to the model root;
    ``mlp``, ``down_proj``, ``attn`` and ``mlp_out_norm`` are relative to one decoder layer.
    ``mlp_out_norm`` names a norm applied to the MLP's output before it joins the residual
    stream (Gemma 2/3 and OLMo 2's ``post_feedforward_layernorm``); None where the output is
    added as it is.
    """

    layers: str
    mlp: str
    down_proj: str
    attn: str
    embed: str
    final_norm: str
    lm_head: str
    mlp_out_norm: str | None = None


_LLAMA_LIKE = ArchPaths(
    layers="model.layers",
    mlp="mlp",
    down_proj="mlp.down_proj",
    attn="self_attn",
    embed="model.embed_tokens",
    final_norm="model.norm",
    lm_head="lm_head",
)

ARCHITECTURES: dict[str, ArchPaths] = {
    "gpt2": ArchPaths(
        layers="transformer.h",
        mlp="mlp",
        down_proj="mlp.c_proj",
        attn="attn",
        embed="transformer.wte",
        final_norm="transformer.ln_f",
        lm_head="lm_head",
    ),
    "gptj": ArchPaths(
        layers="transformer.h",
        mlp="mlp",
        down_proj="mlp.fc_out",
        attn="attn",
        embed="transformer.wte",
        final_norm="transformer.ln_f",
        lm_head="lm_head",
    ),
    "gpt_neox": ArchPaths(
        layers="gpt_neox.layers",
        mlp="mlp",
        down_proj="mlp.dense_4h_to_h",
        attn="attention",
        embed="gpt_neox.embed_in",
        final_norm="gpt_neox.final_layer_norm",
        lm_head="lm_head",
    ),
    **{name: _LLAMA_LIKE for name in ("llama", "mistral", "qwen2", "qwen3", "gemma", "phi3")},
    **{
        name: replace(_LLAMA_LIKE, mlp_out_norm="post_feedforward_layernorm")
        for name in ("gemma2", "gemma3_text", "olmo2")
    },
}

ARCH_KEYS: tuple[str, ...] = tuple(f.name for f in fields(ArchPaths))
#: The keys a hand-written ``architecture:`` map must give for an unknown model type.
REQUIRED_ARCH_KEYS: tuple[str, ...] = tuple(
    f.name for f in fields(ArchPaths) if f.default is MISSING
)


def _is_conv1d(module: nn.Module) -> bool:
    """True for GPT-2 style ``Conv1D`` (weight stored [in, out]); decided by type, never shape."""
    return type(module).__name__ == "Conv1D"


class Architecture:
    """Module accessors for one loaded model, resolved through :data:`ARCHITECTURES`."""

    def __init__(self, model: nn.Module, paths: ArchPaths, model_type: str) -> None:
        self.model = model
        self.paths = paths
        self.model_type = model_type
        self.num_layers = len(self.layers())

    # ---- names (for hooks) -------------------------------------------------------------
    def layer_name(self, layer: int) -> str:
        return f"{self.paths.layers}.{self._check(layer)}"

    def mlp_name(self, layer: int) -> str:
        return f"{self.layer_name(layer)}.{self.paths.mlp}"

    def down_proj_name(self, layer: int) -> str:
        return f"{self.layer_name(layer)}.{self.paths.down_proj}"

    def attn_name(self, layer: int) -> str:
        return f"{self.layer_name(layer)}.{self.paths.attn}"

    # ---- modules ---------------------------------------------------------------------
    def layers(self) -> nn.ModuleList:
        return self.model.get_submodule(self.paths.layers)

    def down_proj(self, layer: int) -> nn.Module:
        return self.model.get_submodule(self.down_proj_name(layer))

    def mlp_out_norm(self, layer: int) -> nn.Module | None:
        """The norm on the MLP output before the residual add (``mlp_out_norm``), or None."""
        if self.paths.mlp_out_norm is None:
            return None
        return self.model.get_submodule(f"{self.layer_name(layer)}.{self.paths.mlp_out_norm}")

    def embed(self) -> nn.Module:
        return self.model.get_submodule(self.paths.embed)

    def final_norm(self) -> nn.Module:
        return self.model.get_submodule(self.paths.final_norm)

    def lm_head(self) -> nn.Module:
        return self.model.get_submodule(self.paths.lm_head)

    def base_model(self) -> nn.Module:
        """The decoder stack without the LM head; its output is normed (``final_norm``)."""
        return self.model.base_model

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM-head logits from final (normed) hidden states [..., d] -> [..., vocab].

        Applies the final-logit soft-capping some families use (Gemma 2).
        """
        logits = self.lm_head()(hidden)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    # ---- the edited weight -----------------------------------------------------------
    def down_proj_weight_name(self, layer: int) -> str:
        """Parameter name of the edited weight, as in ``model.named_parameters()``."""
        return f"{self.down_proj_name(layer)}.weight"

    def down_proj_weight(self, layer: int) -> torch.nn.Parameter:
        return self.down_proj(layer).weight

    def mlp_output_is_normed(self) -> bool:
        """True when the MLP output is normalised before the residual add (``mlp_out_norm``):
        the layer then sees only the direction of the down-projection's output, not its size.
        """
        return self.paths.mlp_out_norm is not None

    def weight_is_in_out(self, layer: int) -> bool:
        """True when the edited weight is stored [in, out] (GPT-2 Conv1D), else [out, in]."""
        return _is_conv1d(self.down_proj(layer))

    def _check(self, layer: int) -> int:
        n = len(self.model.get_submodule(self.paths.layers))
        if not 0 <= layer < n:
            raise UnsupportedArchitectureError(
                f"layer {layer} does not exist: this model has layers 0..{n - 1}"
            )
        return layer


def resolve_architecture(
    model: nn.Module, overrides: Mapping[str, str] | None = None
) -> Architecture:
    """Bind the architecture map to ``model`` (a ``PreTrainedModel``).

    ``overrides`` (from a spec's ``architecture:`` key) replaces or supplies module paths,
    which is how a user maps a model type factedit does not know.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None) or "unknown"
    base = ARCHITECTURES.get(model_type)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(ARCH_KEYS))
    if unknown:
        raise UnsupportedArchitectureError(
            f"unknown architecture keys {unknown}; valid keys: {', '.join(ARCH_KEYS)}"
        )
    if base is None:
        missing = [k for k in REQUIRED_ARCH_KEYS if k not in overrides]
        if missing:
            known = ", ".join(sorted(ARCHITECTURES))
            raise UnsupportedArchitectureError(
                f'model_type "{model_type}" is not supported (supported: {known}); map it by '
                f"hand in the edit spec under 'architecture:' with the keys "
                f"{', '.join(REQUIRED_ARCH_KEYS)} (dotted module paths, e.g. layers: "
                "model.layers, down_proj: mlp.down_proj; optional: mlp_out_norm, a norm on "
                "the MLP output before the residual add)"
            )
        paths = ArchPaths(**overrides)
    else:
        paths = ArchPaths(**{**base.__dict__, **overrides})
    for attr in ("layers", "embed", "final_norm", "lm_head"):
        try:
            model.get_submodule(getattr(paths, attr))
        except AttributeError as exc:
            raise UnsupportedArchitectureError(
                f'model_type "{model_type}": module "{getattr(paths, attr)}" ({attr}) not found '
                "in the model; fix it under 'architecture:' in the edit spec"
            ) from exc
    if paths.mlp_out_norm is not None:
        norm = f"{paths.layers}.0.{paths.mlp_out_norm}"
        try:
            model.get_submodule(norm)
        except AttributeError as exc:
            raise UnsupportedArchitectureError(
                f'model_type "{model_type}": module "{norm}" (mlp_out_norm) not found in the '
                "model; fix it under 'architecture:' in the edit spec"
            ) from exc
    return Architecture(model, paths, model_type)
