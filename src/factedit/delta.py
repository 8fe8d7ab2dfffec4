"""Low-rank weight deltas: computed by a method, applied and reverted exactly.

    delta = WeightDelta(param, left, right)        # ΔW = left @ right.T, weight orientation
    applied = apply_deltas(model, [delta, ...])    # W += ΔW (computed in float32, cast once)
    applied.revert()                               # every weight restored bit for bit
    with apply_deltas(model, deltas): ...          # same, reverted on exit
    save_deltas(path, deltas); load_deltas(path)   # safetensors + JSON metadata

Methods never mutate the model: they return deltas, and applying them is a separate,
reversible step (the original weights are kept until ``revert``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save
from torch import nn

from factedit.errors import NumericalError, RefusedEdit
from factedit.paths import atomic_file


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
        """The full update, [rows, cols] float32."""
        return self.left.float() @ self.right.float().T

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


#: A method's sequential state as saved beside deltas: tensors and JSON metadata.
SavedState = tuple[dict[str, torch.Tensor], dict[str, Any]]


def save_deltas(
    path: str | Path, deltas: Sequence[WeightDelta], state: SavedState | None = None
) -> None:
    """Write deltas (factors only: KB-sized for ROME) as one safetensors file, atomically,
    with a method's sequential ``state`` (tensors kept in their dtype) when given."""
    tensors, meta = {}, []
    for i, d in enumerate(deltas):
        tensors[f"{i}.left"] = d.left.detach().float().contiguous().cpu()
        tensors[f"{i}.right"] = d.right.detach().float().contiguous().cpu()
        meta.append({"param": d.param, "meta": d.meta})
    header = {"factedit.deltas": json.dumps(meta)}
    if state is not None:
        for name, tensor in state[0].items():
            tensors[f"state.{name}"] = tensor.detach().contiguous().cpu()
        header["factedit.state"] = json.dumps(state[1])
    with atomic_file(path) as fh:
        fh.write(save(tensors, metadata=header))


def load_deltas(path: str | Path) -> list[WeightDelta]:
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()["factedit.deltas"])
    tensors = load_file(str(path))
    return [
        WeightDelta(m["param"], tensors[f"{i}.left"], tensors[f"{i}.right"], m["meta"])
        for i, m in enumerate(meta)
    ]


def load_state(path: str | Path) -> SavedState | None:
    """The sequential state saved with the deltas in ``path``, or None when it has none."""
    with safe_open(str(path), framework="pt") as fh:
        header = fh.metadata() or {}
        if "factedit.state" not in header:
            return None
        names = [k for k in fh.keys() if k.startswith("state.")]  # noqa: SIM118 (not a dict)
        tensors = {k.removeprefix("state."): fh.get_tensor(k) for k in names}
    return tensors, json.loads(header["factedit.state"])


__all__ = [
    "AppliedDeltas",
    "WeightDelta",
    "applied_digest",
    "apply_deltas",
    "compact_factors",
    "load_deltas",
    "load_state",
    "save_deltas",
]
