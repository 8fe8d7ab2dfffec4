"""The logit lens (nostalgebraist 2020): read a layer's residual through the model's own head.

    ranks, probs = logit_lens(lm, acts, token_ids)    # acts [N, L, d] -> [N, L] each
    summary = lens_summary(ranks, probs)              # per layer: top-1, top-10, median rank

The span's representation at layer l goes through the final norm and the LM head (with the
final-logit soft-capping some families use: :meth:`Architecture.logits`); the label's first
token (its tokens with a leading space, :func:`~factedit.tokens.target_token_ids`) is looked
up in the softmax. At the last layer the residual is what the model's own head reads, so the
lens there *is* the model's next-token distribution at that position. Training-free: no
probe, no split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from factedit.models.loading import LoadedModel
from factedit.tokens import target_token_ids

#: Rows unembedded at once (a [rows, vocab] float32 block: 64 x 262k is 67 MB).
CHUNK = 64


@torch.no_grad()
def lens_logits(lm: LoadedModel, hidden: torch.Tensor) -> torch.Tensor:
    """[n, d] residual states -> [n, vocab] float32 logits (final norm, then the head)."""
    param = next(lm.arch.lm_head().parameters())
    h = hidden.to(param.device, param.dtype)
    return lm.arch.logits(lm.arch.final_norm()(h)).float()


def label_token_ids(tokenizer, labels: Sequence[str]) -> list[int]:
    """The first token of each label, as the model would write it after a space."""
    return [target_token_ids(tokenizer, label)[0] for label in labels]


@torch.no_grad()
def logit_lens(
    lm: LoadedModel, acts: torch.Tensor, token_ids: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """(rank [N, L], probability [N, L]) of ``token_ids[i]`` when row i of ``acts`` [N, L, d]
    at each layer is unembedded; rank 1 is the most likely token."""
    n, n_layers, _ = acts.shape
    ids = torch.as_tensor(list(token_ids))
    ranks = np.zeros((n, n_layers), dtype=np.int64)
    probs = np.zeros((n, n_layers))
    for layer in range(n_layers):
        for s in range(0, n, CHUNK):
            logits = lens_logits(lm, acts[s : s + CHUNK, layer]).cpu()
            target = logits.gather(1, ids[s : s + CHUNK, None])
            ranks[s : s + CHUNK, layer] = (logits > target).sum(dim=1).numpy() + 1
            probs[s : s + CHUNK, layer] = (
                torch.softmax(logits, dim=1).gather(1, ids[s : s + CHUNK, None])[:, 0].numpy()
            )
    return ranks, probs


def lens_summary(ranks: np.ndarray, probs: np.ndarray) -> list[dict[str, float]]:
    """Per layer: fraction at rank 1 and within the top 10, median rank, mean probability."""
    return [
        {
            "top1": float(np.mean(ranks[:, layer] == 1)),
            "top10": float(np.mean(ranks[:, layer] <= 10)),
            "median_rank": float(np.median(ranks[:, layer])),
            "mean_prob": float(np.mean(probs[:, layer])),
        }
        for layer in range(ranks.shape[1])
    ]
