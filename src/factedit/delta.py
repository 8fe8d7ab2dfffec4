"""Low-rank weight deltas: computed by a method, applied and reverted exactly.

    delta = WeightDelta(param, left, right)        # ΔW = left @ right.T, weight orientation
    applied = apply_deltas(model, [delta, ...])    # W += ΔW (ΔW rounded once from float64)
    applied.revert()                               # every weight restored bit for bit
    with apply_deltas(model, deltas): ...          # same, reverted on exit

Saving deltas with their provenance is :class:`factedit.patch.Patch`.

Methods never mutate the model: they return deltas, and applying them is a separate,
reversible step (the original weights are kept until ``revert``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from factedit.errors import NumericalError, RefusedEdit


@dataclass
class WeightDelta:
    """ΔW = ``left @ right.T`` for the parameter named ``param`` (in its stored orientation).

    ``left``: [rows, r], ``right``: [cols, r], float32, where the weight is [rows, cols].
    ``meta``: JSON-able provenance (method, layer, edit, norms).
    """

    param: str
    left: torch.Tensor
    right: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return self.left.shape[1]

    def dense(self) -> torch.Tensor:
        """The full update, [rows, cols] float32: the product is taken in float64 and rounded
        once, so every device gives the same bits (a patch's recorded hashes hold anywhere)."""
        return (self.left.double() @ self.right.double().T).float()

    def digest(self) -> str:
        """sha256 of the parameter name and both factors (float32 bytes), hex."""
        h = hashlib.sha256(self.param.encode())
        for factor in (self.left, self.right):
            h.update(factor.detach().float().contiguous().cpu().numpy().tobytes())
        return h.hexdigest()

    def check_finite(self) -> None:
        if not (torch.isfinite(self.left).all() and torch.isfinite(self.right).all()):
            raise RefusedEdit(
                f"the update to {self.param} contains NaN/Inf ({self.meta.get('edit', '')}); "
                "the model was not changed"
            )


def compact_factors(left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same ΔW = left @ rightᵀ with the fewest numbers: unchanged while the rank r is
    at most the smaller side of the weight, else (I, ΔWᵀ) or (ΔW, I) of rank min(rows, cols).

    ``left`` [rows, r], ``right`` [cols, r] -> factors [rows, r'], [cols, r'].
    """
    rows, cols, rank = left.shape[0], right.shape[0], left.shape[1]
    if rank <= min(rows, cols):
        return left, right
    dense = left @ right.T
    if rows <= cols:
        return torch.eye(rows, dtype=dense.dtype, device=dense.device), dense.T.contiguous()
    return dense, torch.eye(cols, dtype=dense.dtype, device=dense.device)


#: Attribute of a model listing (handle id, delta digest) for every delta applied through
#: :class:`AppliedDeltas` and not yet reverted (read by :func:`applied_digest`).
_APPLIED_ATTR = "_factedit_applied"


def applied_digest(model: nn.Module) -> str | None:
    """A digest of the deltas applied to ``model`` now, in order (None when there are none)."""
    applied = getattr(model, _APPLIED_ATTR, None)
    if not applied:
        return None
    return hashlib.sha256(" ".join(d for _, d in applied).encode()).hexdigest()[:16]


class AppliedDeltas:
    """Deltas applied to a model; ``revert()`` restores the original weights bit for bit.

    While applied, the model carries their digests (:func:`applied_digest`), which
    :attr:`factedit.models.loading.LoadedModel.identity` includes.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._originals: dict[str, torch.Tensor] = {}
        self.deltas: list[WeightDelta] = []

    def add(self, delta: WeightDelta) -> None:
        delta.check_finite()
        param = self.model.get_parameter(delta.param)
        if tuple(param.shape) != (delta.left.shape[0], delta.right.shape[0]):
            raise NumericalError(
                f"delta for {delta.param} has shape {delta.left.shape[0]}x{delta.right.shape[0]}, "
                f"the weight is {tuple(param.shape)}"
            )
        if delta.param not in self._originals:
            self._originals[delta.param] = param.detach().clone()
        with torch.no_grad():
            update = delta.dense().to(param.device)
            param.copy_((param.float() + update).to(param.dtype))
        self.deltas.append(delta)
        if not hasattr(self.model, _APPLIED_ATTR):
            object.__setattr__(self.model, _APPLIED_ATTR, [])
        getattr(self.model, _APPLIED_ATTR).append((id(self), delta.digest()))

    def revert(self) -> None:
        """Restore every weight this handle changed, bit for bit."""
        with torch.no_grad():
            for name, original in self._originals.items():
                self.model.get_parameter(name).copy_(original)
        self._originals.clear()
        self.deltas.clear()
        applied = getattr(self.model, _APPLIED_ATTR, [])
        applied[:] = [(owner, d) for owner, d in applied if owner != id(self)]

    def absorb(self, other: AppliedDeltas) -> None:
        """Take over ``other``'s applied deltas (applied after this handle's own), so one
        :meth:`revert` undoes both; ``other`` is left empty."""
        for name, original in other._originals.items():
            self._originals.setdefault(name, original)
        self.deltas.extend(other.deltas)
        applied = getattr(self.model, _APPLIED_ATTR, [])
        applied[:] = [(id(self) if owner == id(other) else owner, d) for owner, d in applied]
        other._originals, other.deltas = {}, []

    @property
    def params(self) -> list[str]:
        return list(self._originals)

    def original(self, name: str) -> torch.Tensor | None:
        """The weight ``name`` as it was before this handle changed it (None if untouched)."""
        return self._originals.get(name)

    def __enter__(self) -> AppliedDeltas:
        return self

    def __exit__(self, *exc: object) -> None:
        self.revert()


def apply_deltas(
    model: nn.Module, deltas: Sequence[WeightDelta], into: AppliedDeltas | None = None
) -> AppliedDeltas:
    """Apply ``deltas`` in order (all checked for NaN/Inf first); returns the undo handle.

    Pass ``into`` to accumulate several rounds of edits under one handle (sequential editing).
    """
    for delta in deltas:
        delta.check_finite()
    applied = into if into is not None else AppliedDeltas(model)
    for delta in deltas:
        applied.add(delta)
    return applied


__all__ = [
    "AppliedDeltas",
    "WeightDelta",
    "applied_digest",
    "apply_deltas",
    "compact_factors",
]
