"""The log-probabilities of the value optimisation's loss (ROME's v*, MEMIT's z): the
target tokens' log-probability with a one-block backward, and the KL term's direction."""

from __future__ import annotations

from typing import Any

import torch


class TargetLogProb(torch.autograd.Function):
    """log softmax(logits)[target] per row: ``logits`` [N, V], ``targets`` [N] -> [N].

    The same values and gradients as ``log_softmax(logits).gather(1, targets)``, with a
    backward that writes one [N, V] block, (one-hot − softmax) × grad, where that pair
    zero-fills a block for the gather and reads and writes two more for the softmax: on a
    262,144-token vocabulary those blocks, not the arithmetic, are the cost.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        lse = torch.logsumexp(logits, dim=-1)
        ctx.save_for_backward(logits, lse, targets)
        return logits.gather(1, targets[:, None]).squeeze(1) - lse

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, lse, targets = ctx.saved_tensors
        out = (logits - lse[:, None]).exp_().mul_(-grad[:, None])
        out.scatter_add_(1, targets[:, None], grad[:, None])
        return out, None


def kl_new_orig(logp_new: torch.Tensor, logp_orig: torch.Tensor) -> torch.Tensor:
    """KL(p_new ‖ p_orig) = Σ p_new (log p_new − log p_orig) over the last axis: the *edited*
    distribution first (ROME Eq. 4; the reference's ``kl_div(log_p_orig, log_p_new,
    log_target=True)``). Log-probabilities [..., V] -> [...]."""
    return (logp_new.exp() * (logp_new - logp_orig)).sum(dim=-1)
