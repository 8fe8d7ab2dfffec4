"""General capability: perplexity on held-out text, before and after editing.

    heldout = heldout_text(lm.tokenizer, corpus_paths, skip_tokens=c_stream_tokens)
    ppl = perplexity(lm, heldout.ids)            # exp(mean NLL of every predicted token)

The held-out slice is a fixed piece of the statistics corpus that C was *not* collected on:
the :data:`HELDOUT_TOKENS` stream tokens that follow the ones C's token vectors came from
(:func:`factedit.stats.corpus.stream_tokens_used`), cut into rows of :data:`HELDOUT_SEQ_LEN`
(each starting with BOS where the tokenizer adds one). The same slice is scored on every model
state of a run, so before/after differences are not sampling noise. Perplexity is
exp(Σ NLL / N) over the N next-token predictions of every row (position 0 predicts nothing),
accumulated in float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from factedit.models.loading import LoadedModel
from factedit.stats.corpus import adds_bos, token_stream

#: stream tokens in the held-out slice (4 rows of 512: about 1 s of forward per 1,000 tokens
#: for gemma-3-270m on 2 CPU cores, so a point of a sequential curve stays cheap)
HELDOUT_TOKENS = 2048
HELDOUT_SEQ_LEN = 512


@dataclass(frozen=True)
class HeldOut:
    """The held-out rows ``ids`` [n_rows, seq_len] and where they came from (``source``)."""

    ids: torch.Tensor
    source: str

    def to_dict(self) -> dict[str, Any]:
        rows, seq_len = self.ids.shape
        return {"rows": rows, "seq_len": seq_len, "source": self.source}


def heldout_text(
    tokenizer: Any,
    paths: Sequence[Path],
    skip_tokens: int,
    n_tokens: int = HELDOUT_TOKENS,
    seq_len: int = HELDOUT_SEQ_LEN,
) -> HeldOut | None:
    """The slice of the corpus stream after its first ``skip_tokens`` ids, as rows; None
    when the corpus has fewer than ``skip_tokens + n_tokens`` stream tokens."""
    bos = adds_bos(tokenizer)
    body = seq_len - int(bos)
    n_rows = -(-n_tokens // seq_len)
    stream = token_stream(tokenizer, paths, skip_tokens + n_rows * body)
    piece = stream[skip_tokens:]
    if len(piece) < n_rows * body:
        return None
    rows = torch.tensor(piece, dtype=torch.long).view(n_rows, body)
    if bos:
        first = torch.full((n_rows, 1), tokenizer.bos_token_id, dtype=torch.long)
        rows = torch.cat([first, rows], dim=1)
    names = ", ".join(p.name for p in paths)
    source = (
        f"{names}: stream tokens {skip_tokens}..{skip_tokens + n_rows * body} (after the "
        f"{skip_tokens} that C was collected on), {n_rows} rows of {seq_len}"
    )
    return HeldOut(rows, source)


@torch.no_grad()
def perplexity(lm: LoadedModel, ids: torch.Tensor, logit_rows: int = 128) -> float:
    """exp(mean next-token NLL) of ``ids`` [n_rows, seq_len] (no padding) under ``lm``.

    One row per forward pass; the LM head runs on ``logit_rows`` positions at a time, so
    a 262k-token vocabulary never needs a [seq_len, vocab] float32 block (512 MiB at 512)."""
    total, count = 0.0, 0
    for row in ids.to(lm.device):
        hidden = lm.arch.base_model()(input_ids=row[None], use_cache=False).last_hidden_state[0]
        for start in range(0, row.shape[0] - 1, logit_rows):
            stop = min(start + logit_rows, row.shape[0] - 1)
            logits = lm.arch.logits(hidden[start:stop]).float()
            nll = torch.nn.functional.cross_entropy(
                logits, row[start + 1 : stop + 1], reduction="sum"
            )
            total += float(nll.double())
        count += row.shape[0] - 1
    return math.exp(total / count)


def heldout_summary(
    heldout: HeldOut | None, unedited: float | None, edited: Sequence[float]
) -> dict[str, Any] | None:
    """The report's ``heldout_perplexity``: unedited, edited (the mean over the model states
    measured: one per edit in an independent run, the final model in a sequential one), the
    worst, and the slice it was measured on (None when nothing was measured)."""
    if heldout is None or unedited is None:
        return None
    return {
        **heldout.to_dict(),
        "unedited": unedited,
        "edited": sum(edited) / len(edited) if edited else None,
        "edited_max": max(edited) if edited else None,
        "states_measured": len(edited),
    }
