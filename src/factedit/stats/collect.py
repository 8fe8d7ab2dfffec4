"""The accumulation loop: forward passes that stop at the edited layer, summing k kᵀ.

    for state in accumulate(lm, layer, sequences, Accumulator(), n_tokens=..., batch_size=8,
                            dtype=torch.float32):
        ...                     # state.total [d_in, d_in] float64, .count, .next_seq

Each batch's k kᵀ is computed in the accumulation dtype (float32 or float64; keys are cast up
before the matmul, never summed in fp16) and added to a float64 running sum. Batches are
fixed slices of the sequence tensor, so a run resumed from ``state.next_seq`` performs the very
same additions in the same order as an uninterrupted one: the sums are bit-identical.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from factedit.hooks import Trace
from factedit.models import LoadedModel


@dataclass(frozen=True)
class Accumulator:
    """A consistent snapshot of the running sum: ``total`` [d_in, d_in] float64 (None before
    the first batch), ``count`` token vectors summed, ``next_seq`` the first sequence index not
    yet consumed. Immutable, so a snapshot taken at any moment (e.g. on Ctrl-C) is whole."""

    total: torch.Tensor | None = None
    count: int = 0
    next_seq: int = 0


def batch_keys(lm: LoadedModel, layer: int, input_ids: torch.Tensor) -> torch.Tensor:
    """Inputs of the down-projection at ``layer`` for ``input_ids`` [B, T] -> [B*T, d_in].

    The forward pass ends right after that module: the layers above never run.
    """
    name = lm.arch.down_proj_name(layer)
    with (
        torch.no_grad(),
        Trace(lm.model, name, retain_input=True, retain_output=False, stop=True) as trace,
    ):
        lm.model(input_ids=input_ids.to(lm.device), use_cache=False)
    keys = trace.input
    if keys is None:
        raise RuntimeError(f"module {name} was not called during the forward pass")
    return keys.reshape(-1, keys.shape[-1])


def accumulate(
    lm: LoadedModel,
    layer: int,
    sequences: torch.Tensor,
    state: Accumulator,
    *,
    n_tokens: int,
    batch_size: int = 8,
    dtype: torch.dtype = torch.float32,
    keys_fn: Callable[[LoadedModel, int, torch.Tensor], torch.Tensor] = batch_keys,
) -> Iterator[Accumulator]:
    """Add k kᵀ of ``sequences[state.next_seq:]`` batch by batch; yield the state after each.

    ``sequences`` [n_seq, T]. Stops once ``n_tokens`` token vectors are summed; the last batch
    is truncated so that exactly the first ``n_tokens`` vectors (stream order) count.
    ``keys_fn`` computes a batch's keys [B*T, d_in] (the benchmark swaps in a full pass).
    """
    while state.count < n_tokens:
        start = state.next_seq
        if start >= len(sequences):
            raise RuntimeError(f"ran out of sequences at {state.count}/{n_tokens} tokens")
        batch = sequences[start : start + batch_size]
        keys = keys_fn(lm, layer, batch)
        keys = keys[: n_tokens - state.count].to(dtype)
        with torch.no_grad():
            moment = (keys.T @ keys).to(torch.float64)
            total = moment if state.total is None else state.total + moment
        state = Accumulator(total, state.count + keys.shape[0], start + len(batch))
        yield state
