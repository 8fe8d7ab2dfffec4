"""MEMIT: many facts at once, spread over a window of layers (Meng et al. 2023).

    deltas = compute(lm, requests, layers, state)     # one delta per layer of the window

z for every fact at the last window layer (:func:`factedit.methods.spread.compute_targets`),
then the layer loop of :mod:`factedit.methods.spread` with MEMIT's update

    ΔW_l = R Kᵀ (λ C_l + K Kᵀ)⁻¹                     solved in float64

λ weighs the preserved corpus keys against the new ones. Its rule, when the spec does not
set ``mom2_update_weight``: λ = d_in, the width of W's input. With C = E[k kᵀ] a typical
corpus key has kᵀ C⁻¹ k = d_in, so one new fact whose key is as unusual as a typical corpus
key gets half of its layer's share (s / (1 + s), s = kᵀ(λC)⁻¹k = 1) and the later layers
of the window the rest. The reference's λ = 15000 for GPT-J (d_in 16384) and Llama-3-8B
(d_in 14336) are within 10 % of the rule; its 20000 for GPT-2 XL (d_in 6400) is 3 d_in.
Every delta records λ, the rule and the batch's median kᵀC⁻¹k / d_in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from factedit.delta import WeightDelta
from factedit.errors import FactEditError
from factedit.methods.spread import (
    Solver,
    StatelessSolver,
    compute_targets,
    spread_over_layers,
)
from factedit.methods.state import MethodState
from factedit.models.loading import LoadedModel
from factedit.spec import EditRequest


def update_weight(hparams: Any, d_in: int) -> tuple[float, str]:
    """(λ, the rule it came from) for a W with ``d_in`` inputs."""
    if hparams.mom2_update_weight is not None:
        return float(hparams.mom2_update_weight), "mom2_update_weight given"
    return float(d_in), "d_in (the width of W's input; see factedit.methods.memit)"


def whitened_key_norms(C: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """kᵀ C⁻¹ k for keys [d_in, n] float64 -> [n] float64."""
    return (keys * torch.linalg.solve(C, keys)).sum(0)


class MemitSolver(StatelessSolver):
    """S = (λC + K Kᵀ)⁻¹ K, so that ΔW = R Sᵀ = R Kᵀ (λC + K Kᵀ)⁻¹."""

    name = "memit"

    def right(
        self, lm: LoadedModel, layer: int, keys: torch.Tensor, state: MethodState
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        C = state.second_moment(lm, layer).double().to(keys.device)
        lam, rule = update_weight(state.hparams, C.shape[0])
        right = torch.linalg.solve(lam * C + keys @ keys.T, keys)
        spread = whitened_key_norms(C, keys) / C.shape[0]
        return right, {
            "lambda": lam,
            "lambda_rule": rule,
            "key_whitened_norm_median": float(spread.median()),
        }


def edit_batch(
    lm: LoadedModel,
    requests: Sequence[EditRequest],
    layers: Sequence[int],
    state: MethodState,
    solver: Solver,
) -> list[WeightDelta]:
    """z at the last layer, then the layer loop with ``solver`` (MEMIT, AlphaEdit, EMMET)."""
    window = list(layers)
    if not window or window != sorted(set(window)):
        raise FactEditError(
            f"{solver.name} needs a window of distinct layers in increasing order, got {window}"
        )
    if not requests:
        return []
    state.second_moments(lm, window)  # first: a C that cannot be used fails before z
    targets = compute_targets(lm, requests, window[-1], state.templates(lm), state.hparams)
    return spread_over_layers(lm, requests, window, targets, state, solver)


def batched_compute(solver: Solver) -> Callable[..., list[WeightDelta]]:
    """A method's ``compute(lm, requests, layers, state)``: :func:`edit_batch` with ``solver``
    (one delta per layer of ``layers`` realising every request; the model is unchanged)."""

    def compute(
        lm: LoadedModel,
        requests: Sequence[EditRequest],
        layers: Sequence[int],
        state: MethodState,
    ) -> list[WeightDelta]:
        return edit_batch(lm, requests, layers, state, solver)

    compute.__doc__ = f"{solver.name}: " + (batched_compute.__doc__ or "")
    return compute


compute = batched_compute(MemitSolver())
