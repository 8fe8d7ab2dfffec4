"""The accumulation loop: forward passes that stop at the highest layer wanted, summing k kᵀ.

    for states in accumulate_layers(lm, [4, 5, 6], sequences, {4: Accumulator(), ...},
                                    n_tokens=..., batch_size=8, dtype=torch.float32):
        ...                     # states[4].total [d_in, d_in] float64, .count, .next_seq
    for state in accumulate(lm, layer, sequences, Accumulator(), n_tokens=...):
        ...                     # the one-layer case (same loop)

One forward pass per batch records the down-projection inputs of every layer asked for and
ends right after the highest one. Each batch's k kᵀ is computed per layer in the accumulation
dtype (float32 or float64; keys are cast up before the matmul, never summed in fp16) and added
to that layer's float64 running sum. Batches are fixed slices of the sequence tensor, so a run
resumed from ``next_seq`` performs the very same additions in the same order as an
uninterrupted one, and a layer collected with others gets the very same sums as alone: the
sums are bit-identical.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

from factedit.hooks import TraceDict
from factedit.models import LoadedModel

#: ``keys_fn(lm, layers, input_ids [B, T])`` -> {layer: keys [B*T, d_in]} for each layer.
LayerKeysFn = Callable[[LoadedModel, Sequence[int], torch.Tensor], Mapping[int, torch.Tensor]]
#: ``keys_fn(lm, layer, input_ids [B, T])`` -> keys [B*T, d_in] (the one-layer form).
KeysFn = Callable[[LoadedModel, int, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Accumulator:
    """A consistent snapshot of the running sum: ``total`` [d_in, d_in] float64 (None before
    the first batch), ``count`` token vectors summed, ``next_seq`` the first sequence index not
    yet consumed. Immutable, so a snapshot taken at any moment (e.g. on Ctrl-C) is whole."""

    total: torch.Tensor | None = None
    count: int = 0
    next_seq: int = 0


def layer_keys(
    lm: LoadedModel, layers: Sequence[int], input_ids: torch.Tensor
) -> dict[int, torch.Tensor]:
    """Inputs of the down-projection at each of ``layers`` for ``input_ids`` [B, T]
    -> {layer: [B*T, d_in]}.

    One forward pass, ended right after the highest layer's down-projection: the layers above
    never run.
    """
    names = {layer: lm.arch.down_proj_name(layer) for layer in sorted(set(layers))}
    with (
        torch.no_grad(),
        TraceDict(
            lm.model, names.values(), retain_input=True, retain_output=False, stop=True
        ) as tr,
    ):
        lm.model(input_ids=input_ids.to(lm.device), use_cache=False)
    keys = {}
    for layer, name in names.items():
        k = tr[name].input
        if k is None:
            raise RuntimeError(f"module {name} was not called during the forward pass")
        keys[layer] = k.reshape(-1, k.shape[-1])
    return keys


def batch_keys(lm: LoadedModel, layer: int, input_ids: torch.Tensor) -> torch.Tensor:
    """Inputs of the down-projection at ``layer`` for ``input_ids`` [B, T] -> [B*T, d_in].

    The forward pass ends right after that module: the layers above never run.
    """
    return layer_keys(lm, [layer], input_ids)[layer]


def accumulate_layers(
    lm: LoadedModel,
    layers: Sequence[int],
    sequences: torch.Tensor,
    states: Mapping[int, Accumulator],
    *,
    n_tokens: int,
    batch_size: int = 8,
    dtype: torch.dtype = torch.float32,
    keys_fn: LayerKeysFn = layer_keys,
    rank: int = 0,
    world: int = 1,
) -> Iterator[dict[int, Accumulator]]:
    """Add k kᵀ of ``sequences[next_seq:]`` for every layer, batch by batch; yield a new
    {layer: Accumulator} after each batch (never changed afterwards).

    ``sequences`` [n_seq, T]; ``states`` holds one snapshot per layer, all at the same
    ``count`` and ``next_seq``. Stops once ``n_tokens`` token vectors are summed; the last
    batch is truncated so that exactly the first ``n_tokens`` vectors (stream order) count.
    ``keys_fn`` computes a batch's keys {layer: [B*T, d_in]} in one forward pass.

    With ``world`` > 1 ranks (:mod:`factedit.stats.distributed`) the batches go in rounds of
    ``world``, rank ``rank`` taking the round's batch number ``rank``: each yield follows one
    round, ``total`` holds only this rank's batches while ``count`` and ``next_seq`` are the
    whole round's (the same on every rank).
    """
    layers = sorted(set(layers))
    if sorted(states) != layers:
        raise ValueError(f"states for layers {sorted(states)}, but layers {layers} asked for")
    positions = {(s.count, s.next_seq) for s in states.values()}
    if len(positions) != 1:
        raise ValueError(f"the layers' states are not at the same position: {positions}")
    [(count, start)] = positions
    current = dict(states)
    while count < n_tokens:
        if start >= len(sequences):
            raise RuntimeError(f"ran out of sequences at {count}/{n_tokens} tokens")
        mine, after = None, count
        for i in range(world):  # the round: who takes which batch, and how many vectors count
            if after >= n_tokens or start >= len(sequences):
                break
            batch = sequences[start : start + batch_size]
            n_added = min(batch.numel(), n_tokens - after)
            if i == rank:
                mine = (batch, n_added)
            after, start = after + n_added, start + len(batch)
        totals = {layer: current[layer].total for layer in layers}
        if mine is not None:
            totals = _add_batch(lm, layers, *mine, totals, dtype, keys_fn)
        current = {layer: Accumulator(totals[layer], after, start) for layer in layers}
        count = after
        yield dict(current)


def _add_batch(
    lm: LoadedModel,
    layers: Sequence[int],
    batch: torch.Tensor,
    n_added: int,
    totals: Mapping[int, torch.Tensor | None],
    dtype: torch.dtype,
    keys_fn: LayerKeysFn,
) -> dict[int, torch.Tensor]:
    """``totals`` plus k kᵀ of the first ``n_added`` key vectors of ``batch`` [B, T]."""
    keys = keys_fn(lm, layers, batch)
    if sorted(keys) != list(layers) or {k.shape[0] for k in keys.values()} != {batch.numel()}:
        shapes = {layer: tuple(k.shape) for layer, k in keys.items()}
        raise RuntimeError(f"keys for layers {sorted(keys)} of unexpected shapes {shapes}")
    out = {}
    for layer in layers:
        k = keys[layer][:n_added].to(dtype)
        with torch.no_grad():
            moment = (k.T @ k).to(torch.float64)
        previous = totals[layer]
        out[layer] = moment if previous is None else previous + moment
    return out


def accumulate(
    lm: LoadedModel,
    layer: int,
    sequences: torch.Tensor,
    state: Accumulator,
    *,
    n_tokens: int,
    batch_size: int = 8,
    dtype: torch.dtype = torch.float32,
    keys_fn: KeysFn = batch_keys,
) -> Iterator[Accumulator]:
    """The one-layer case of :func:`accumulate_layers`: yield ``layer``'s state after each
    batch (``total`` [d_in, d_in] float64). ``keys_fn(lm, layer, input_ids [B, T])`` computes
    a batch's keys [B*T, d_in] (the benchmark swaps in a full pass)."""

    def one(lm: LoadedModel, layers: Sequence[int], batch: torch.Tensor) -> dict[int, torch.Tensor]:
        return {layer: keys_fn(lm, layer, batch)}

    for states in accumulate_layers(
        lm,
        [layer],
        sequences,
        {layer: state},
        n_tokens=n_tokens,
        batch_size=batch_size,
        dtype=dtype,
        keys_fn=one,
    ):
        yield states[layer]
