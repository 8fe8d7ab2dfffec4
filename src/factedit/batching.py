"""Padding token sequences into batches, on either side.

    ids, mask = pad_right(rows, pad_id, device)              # [B, T], [B, T]
    ids, mask, positions = pad_left(rows, pad_id, device)    # [B, T] x 3, rows end at T-1

Right padding keeps a row's real tokens at positions ``0..len-1``; left padding puts every
row's last token in the last column (what batched next-token scoring and generation need),
with ``position_ids`` that still count each row's real tokens from 0. ``pad_id`` is any
token id: the attention mask hides the padded positions, so its value never matters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def _pad(rows: Sequence[Sequence[int]], pad_id: int, *, left: bool) -> tuple[torch.Tensor, ...]:
    """``input_ids`` [B, T] and ``attention_mask`` [B, T] (1 on real tokens), on the CPU;
    ``T`` is the longest row, the padding goes before (``left``) or after each row."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        cols = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, cols] = torch.tensor(list(row), dtype=torch.long)
        mask[i, cols] = 1
    return ids, mask


def pad_right(
    rows: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` [B, T] and ``attention_mask`` [B, T] with real tokens first in each row.

    With right padding and causal attention, the real tokens of a row never see its padding,
    so position i of a row means the same as in an unbatched run.
    """
    ids, mask = _pad(rows, pad_id, left=False)
    return ids.to(device), mask.to(device)


def pad_left(
    rows: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and ``position_ids``, each [B, T]: every row ends in
    column T-1.

    ``position_ids`` are ``cumsum(mask) - 1`` (0 under the padding), so with the mask hiding
    the pads each row sees exactly what it would unbatched.
    """
    ids, mask = _pad(rows, pad_id, left=True)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


def pad_token_id(tokenizer: Any) -> int:
    """A token id to put under masked positions: the tokenizer's pad, else its EOS, else 0."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0
