"""Work on torch.distributed: the ranks share the corpus (statistics) and the facts (z).

    torchrun --nproc-per-node 2 -m factedit stats collect --model M --layer 4 --corpus c.txt

MEMIT's z vectors are independent until the solve, so in a process group each rank optimises
its share of the facts (:func:`factedit.methods.spread.compute_targets`) and :func:`gathered`
gives every rank all of them; the keys and solves then run alike on every rank.

For the statistics, the corpus's batches are dealt out in rounds: in round j, rank r takes
batch j·K + r of the one-process order (K ranks). Each rank sums k kᵀ of its own batches in
float64; the ranks' sums are combined by :func:`combined_total` (all-gathered, then added in
rank order on every rank, so the order is fixed and every rank holds the same bits). After j
whole rounds the combined sum covers exactly the first j·K batches, which is what a
one-process checkpoint at that point holds, so checkpoints keep the one-process format (and a
run resumes with any number of ranks). Only rank 0 takes the cache lock, reads the cache,
writes the checkpoints and the entry, and prints; the others learn from it
(:func:`from_main`) what to collect.

The process group is the one torchrun describes (:func:`join_from_env`: ``WORLD_SIZE`` > 1 in
the environment): gloo on the CPU, nccl on CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Ranks:
    """This process's place in the group: ``rank`` of ``world`` (0 of 1 without one)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def current_ranks() -> Ranks:
    """The initialised default process group's rank and size, else a group of one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def join_from_env(device: torch.device | str = "cpu") -> Ranks:
    """Join the group that torchrun's environment describes (``WORLD_SIZE`` > 1), once;
    gloo for the CPU, nccl for CUDA; the ranks other than 0 turn their info lines off.
    Without one, a group of one (nothing is initialised)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return current_ranks()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    dist.init_process_group(backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    ranks = current_ranks()
    if not ranks.main:
        os.environ["FACTEDIT_QUIET"] = "1"  # one rank speaks: the info lines are rank 0's
    return ranks


def combined_total(local: torch.Tensor | None, shape: torch.Size, ranks: Ranks) -> torch.Tensor:
    """Σ over ranks of each rank's ``local`` sum [d, d] float64 (None: nothing summed yet),
    added in rank order; every rank must call it. A group of one returns ``local``."""
    if not ranks.active:
        assert local is not None
        return local
    import torch.distributed as dist

    mine = local if local is not None else torch.zeros(shape, dtype=torch.float64)
    parts = [torch.empty_like(mine) for _ in range(ranks.world)]
    dist.all_gather(parts, mine.contiguous())
    total = parts[0].clone()
    for part in parts[1:]:
        total += part
    return total


def from_main(value: Any, ranks: Ranks) -> Any:
    """Rank 0's ``value`` on every rank (a picklable object); every rank must call it."""
    if not ranks.active:
        return value
    import torch.distributed as dist

    box = [value if ranks.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gathered(mine: dict[Any, Any], ranks: Ranks) -> dict[Any, Any]:
    """The union of every rank's ``mine`` (picklable values), on every rank; every rank
    must call it. A group of one returns ``mine``."""
    if not ranks.active:
        return mine
    import torch.distributed as dist

    parts: list[dict[Any, Any] | None] = [None] * ranks.world
    dist.all_gather_object(parts, mine)
    return {key: value for part in parts if part for key, value in part.items()}
