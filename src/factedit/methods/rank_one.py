"""ROME's key and closed-form rank-one update (Meng et al. 2022, Eq. 2; Gupta et al. 2024).

    k* = compute_key(lm, request, layer, templates, w)       [d_in]
    ΔW = rank_one_delta(lm, layer, C, k*, v*)                 (v* − W k*) uᵀ / (uᵀ k*), u = C⁻¹ k*

The same template-averaged k* is used in u, in the residual and in the denominator (r-ROME,
Gupta et al. 2024): mixing in the bare-prompt key is what produces "disabling edits".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from factedit.delta import WeightDelta
from factedit.methods.keys import compute_keys
from factedit.models.loading import LoadedModel
from factedit.spec import EditRequest


def compute_key(
    lm: LoadedModel,
    request: EditRequest,
    layer: int,
    templates: Sequence[str],
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """k*: W's input at the last subject token, averaged over the templates with ``weights``
    [len(templates)] (None: alike, ROME's reference) -> [d_in] float32."""
    return compute_keys(lm, [request], layer, templates, weights)[0]


def output_for(module: torch.nn.Module, key: torch.Tensor) -> torch.Tensor:
    """W key [d_out] float32 for ``key`` [d_in] (run in the module's own dtype and device)."""
    weight = module.weight
    return module(key.to(weight.device, weight.dtype)[None]).float()[0]


@torch.no_grad()
def norm_matched_value(
    lm: LoadedModel, layer: int, k_star: torch.Tensor, v_star: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """v* [d_out] rescaled to the norm of the current output W k* (``k_star`` [d_in]).

    factedit's own step (``value_scale: norm``), not the ROME paper's. Where the MLP output is
    normalised before it joins the residual stream (Gemma 2/3, OLMo 2), the layer sees only
    the direction of W's output: v* and c·v* (c > 0) are the same target *at k**. The v*
    optimisation cannot feel the size of δ there, so δ grows to the clamp (about 4 ‖v‖), and
    every other key k receives its share uᵀk / uᵀk* of that needlessly large v* − W k*.
    Returns the rescaled v* and the factor ‖v*‖ / ‖W k*‖ it was divided by.
    """
    current = output_for(lm.arch.down_proj(layer), k_star)
    factor = float(v_star.norm() / current.norm())
    return v_star / factor, factor


@torch.no_grad()
def rank_one_delta(
    lm: LoadedModel, layer: int, C: torch.Tensor, k_star: torch.Tensor, v_star: torch.Tensor
) -> tuple[WeightDelta, dict[str, float]]:
    """ΔW = (v* − W k*) uᵀ / (uᵀ k*), u = C⁻¹ k*, in the weight's own orientation.

    ``C`` [d_in, d_in], ``k_star`` [d_in], ``v_star`` [d_out]; solved in float64.
    """
    module = lm.arch.down_proj(layer)
    weight = module.weight
    k64 = k_star.double().to(C.device)
    u = torch.linalg.solve(C.double(), k64)
    denom = torch.dot(u, k64)
    current = output_for(module, k_star)
    residual = (v_star.to(current.device) - current).double() / denom
    u32, r32 = u.float().to(weight.device), residual.float().to(weight.device)
    if lm.arch.weight_is_in_out(layer):  # Conv1D: W is [in, out], ΔW = u rᵀ
        left, right = u32[:, None], r32[:, None]
    else:  # Linear: W is [out, in], ΔW = r uᵀ
        left, right = r32[:, None], u32[:, None]
    norm = float(left.norm() * right.norm())
    norms = {
        "delta_norm": norm,
        "relative_norm": norm / float(weight.float().norm()),
        "residual_norm": float(residual.norm() * denom),
    }
    return WeightDelta(lm.arch.down_proj_weight_name(layer), left, right), norms
