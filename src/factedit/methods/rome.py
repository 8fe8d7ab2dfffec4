"""ROME: one fact, one rank-one update of an MLP down-projection (Meng et al. 2022, §3).

    k*  = mean over context templates of W's input at the subject's last token     [d_in]
    v*  = v_orig + δ, δ optimised at W's output (factedit.methods.value)          [d_out]
    ΔW  = (v* − W k*) uᵀ / (uᵀ k*),  u = C⁻¹ k*                                     rank one

``value_scale: "none"`` is the paper's ROME; ``"norm"`` (the default) adds factedit's own
step where the MLP output is normalised (:func:`~factedit.methods.rank_one.norm_matched_value`).
Several requests are edited one after another, as the reference does: each is computed on
the model carrying the deltas of the ones before it. The model is left unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from factedit.delta import AppliedDeltas, WeightDelta
from factedit.errors import FactEditError
from factedit.methods.rank_one import compute_key, norm_matched_value, rank_one_delta
from factedit.methods.state import MethodState
from factedit.methods.value import HookSite, optimise_value
from factedit.models.loading import LoadedModel
from factedit.spec import EditRequest


@dataclass
class RomeResult:
    """The delta plus what produced it: ``k_star`` [d_in], ``v_star`` [d_out], float32."""

    delta: WeightDelta
    k_star: torch.Tensor
    v_star: torch.Tensor
    log: dict[str, Any] = field(default_factory=dict)


def compute(
    lm: LoadedModel,
    requests: Sequence[EditRequest],
    layers: Sequence[int],
    state: MethodState,
) -> list[WeightDelta]:
    """One delta per request, at the single layer in ``layers``; the model is unchanged."""
    if len(layers) != 1:
        raise FactEditError(
            f"ROME edits exactly one layer; got layers {list(layers)} (spreading an edit over "
            "several layers is MEMIT)"
        )
    deltas = []
    with AppliedDeltas(lm.model) as earlier:  # reverted on exit
        for i, request in enumerate(requests):
            deltas.append(compute_rome(lm, request, layers[0], state).delta)
            if i + 1 < len(requests):
                earlier.add(deltas[-1])
    return deltas


def compute_rome(
    lm: LoadedModel, request: EditRequest, layer: int, state: MethodState
) -> RomeResult:
    """The full ROME update for one request at ``layer``; the model is left unchanged."""
    hp = state.hparams
    templates = state.templates(lm)
    C = state.second_moment(lm, layer)
    k_star = compute_key(lm, request, layer, templates, state.template_weights())
    value = optimise_value(lm, request, HookSite.down_proj(lm, layer), templates, hp)
    v_star, factor, scale = value.v_star, 1.0, "none"
    if hp.value_scale == "norm" and lm.arch.mlp_output_is_normed():
        v_star, factor = norm_matched_value(lm, layer, k_star, v_star)
        scale = "norm"
    delta, norms = rank_one_delta(lm, layer, C, k_star, v_star)
    final = value.log["losses"][-1]
    delta.meta = {
        "method": "rome",
        "value_scale": scale,
        "layer": layer,
        "subject": request.subject,
        "target_new": request.target_new,
        **norms,
        "v_steps": value.log["steps"],
        "final_loss": final["total"],
        "final_nll": final["nll"],
        "v_rescaled_by": factor,
        "c_tokens": state.conditioning[layer].n_tokens,
        "c_condition": state.conditioning[layer].condition,
    }
    return RomeResult(delta, k_star, v_star, {**value.log, **norms, "v_rescaled_by": factor})
