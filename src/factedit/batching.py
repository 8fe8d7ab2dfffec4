"""Padding token sequences into batches (right padding; positions stay 0..len-1 per row)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_right(
    rows: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` [B, T] and ``attention_mask`` [B, T] with real tokens first in each row.

    With right padding and causal attention, the real tokens of a row never see its padding,
    so position i of a row means the same as in an unbatched run.
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)
