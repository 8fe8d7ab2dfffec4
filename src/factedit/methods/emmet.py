"""EMMET: equality-constrained batched editing (Gupta et al. 2024), with MEMIT's z, keys and
layer spreading:

    ΔW_l = R (Kᵀ C⁻¹ K + λ I)⁻¹ Kᵀ C⁻¹                 (λ = ``emmet_lambda``, 0.1)

λ → 0 makes ΔW_l K = R exactly (every new key gets its whole share), with the smallest
change of the corpus keys' outputs (in C's metric) that does so.
"""

from __future__ import annotations

from typing import Any

import torch

from factedit.methods.memit import batched_compute
from factedit.methods.spread import StatelessSolver
from factedit.methods.state import MethodState
from factedit.models.loading import LoadedModel


class EmmetSolver(StatelessSolver):
    """S = C⁻¹ K (Kᵀ C⁻¹ K + λ I)⁻¹, so that ΔW = R Sᵀ."""

    name = "emmet"

    def right(
        self, lm: LoadedModel, layer: int, keys: torch.Tensor, state: MethodState
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        C = state.second_moment(lm, layer).double().to(keys.device)
        lam = float(state.hparams.emmet_lambda)
        whitened = torch.linalg.solve(C, keys)
        gram = keys.T @ whitened + lam * torch.eye(
            keys.shape[1], dtype=keys.dtype, device=keys.device
        )
        right = torch.linalg.solve(gram, whitened.T).T
        return right, {"lambda": lam, "lambda_rule": "emmet_lambda"}


compute = batched_compute(EmmetSolver())
