"""AlphaEdit: MEMIT with every update projected onto the null space of the preserved keys
(Fang et al., ICLR 2025; jianghoucheng/AlphaEdit ``AlphaEdit_main.py``).

Per layer, with P the projector onto C's null space (:meth:`MethodState.projector`), K the
new batch's keys, R its residual and K_p the keys of every earlier edit of this session:

    Δᵀ = (P (K Kᵀ + K_p K_pᵀ + μλC) + α I)⁻¹ P K Rᵀ     (μ = 0, the paper: P carries C)

Δ lies in P's range (α Δᵀ = P(K Rᵀ − (K Kᵀ + K_p K_pᵀ) Δᵀ)), so Δ k₀ ≈ 0 for every key k₀
that C preserves, and the K_p K_pᵀ term keeps earlier edits' keys where they were. α is
``l2`` × the mean of ‖P k‖² over the batch's keys (scale-free: with one key the layer
delivers 1 / (1 + l2) of its share). ``leak_weight`` μ > 0 keeps MEMIT's λC term (λ by
:func:`~factedit.methods.memit.update_weight`): P is a null space only up to the share of
trace(C) it leaves, and the term weighs the outputs of the corpus keys that reach P's range
against the edits, minimising ‖ΔK − R‖² + ‖ΔK_p‖² + μλ tr(Δ C Δᵀ) + α‖Δ‖² over Δ = Δ P.
After the whole window is written, the batch's keys
are recomputed on the edited model and staged; the session adds them to K_p when it applies
the deltas.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from factedit.delta import WeightDelta
from factedit.methods.keys import template_mean
from factedit.methods.memit import batched_compute, update_weight
from factedit.methods.state import MethodState
from factedit.methods.stream import PromptStream
from factedit.methods.value import rewrite_prompts
from factedit.models.loading import LoadedModel
from factedit.spec import EditRequest


class AlphaEditSolver:
    """S = ((P (K Kᵀ + K_p K_pᵀ + μλC) + α I)⁻¹ P K), so that ΔW = R Sᵀ."""

    name = "alphaedit"

    def right(
        self, lm: LoadedModel, layer: int, keys: torch.Tensor, state: MethodState
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        P, null_info = state.projector(lm, layer)
        P = P.to(keys.device)
        width = keys.shape[0]
        earlier = state.edit_gram(layer, width).to(keys.device)
        projected = P @ keys
        hp = state.hparams
        alpha = hp.l2 * float(projected.pow(2).sum(0).mean())
        kept = keys @ keys.T + earlier
        leak: dict[str, Any] = {"leak_weight": hp.leak_weight}
        if hp.leak_weight > 0:
            C = state.second_moment(lm, layer).double().to(keys.device)
            lam, rule = update_weight(hp, width)
            kept = kept + hp.leak_weight * lam * C
            leak.update({"lambda": lam, "lambda_rule": rule})
        system = P @ kept + alpha * torch.eye(width, dtype=keys.dtype, device=keys.device)
        right = torch.linalg.solve(system, projected)
        null_share = projected.pow(2).sum(0) / keys.pow(2).sum(0)
        return right, {
            **null_info,
            "alpha": alpha,
            "alpha_rule": f"l2 ({hp.l2:g}) x mean ||P k||^2 of the batch's keys",
            **leak,
            "key_null_share_median": float(null_share.median()),
            "earlier_edits": state.sequential.n_edits,
        }

    def after(
        self,
        lm: LoadedModel,
        requests: Sequence[EditRequest],
        layers: Sequence[int],
        state: MethodState,
        deltas: Sequence[WeightDelta],
    ) -> None:
        """Stage K Kᵀ per layer, with every delta of the batch applied (the reference)."""
        templates, weights = state.templates(lm), state.template_weights()
        prompts = [p for r in requests for p in rewrite_prompts(lm, r, templates)]
        stream = PromptStream(lm, prompts, layers[0], state.hparams.key_batch_rows)
        grams = {}
        for i, layer in enumerate(layers):
            if i > 0:
                stream.advance(layer)
            at_subject = stream.at_subject(lm.arch.down_proj_name(layer), module_input=True)
            keys = template_mean(at_subject, len(requests), weights).double().cpu()
            grams[layer] = keys.T @ keys
        state.stage_edit_keys(deltas, grams, len(requests))


compute = batched_compute(AlphaEditSolver())
