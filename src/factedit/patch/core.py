"""A patch: the deltas of a set of edits, with what is needed to trust, apply and undo them.

    patch = Patch.from_session(session, evaluation=summary, keep_original=False)
    patch.save("eiffel.patch.safetensors")            # KB for one ROME edit
    patch = Patch.load("eiffel.patch.safetensors")    # PatchError if changed or unreadable
    patch.apply(model)                                # refuses a model it was not made on
    patch.revert(model)                               # bit for bit (see below)
    with patch.applied(model): ...                    # applied inside, reverted on exit

A patch applied in this process reverts bit for bit (the original weights are held in memory,
as :class:`~factedit.delta.AppliedDeltas` does). A patch loaded in another process reverts
bit for bit when it was made with ``keep_original`` (it then stores the edited tensors as
they were); otherwise it subtracts ΔW (float64, cast once) and checks the result against the
recorded hash of the original, warning when the two differ by rounding.

On disk (:mod:`factedit.patch.file`): per delta ``{i}.left`` [rows, r] and ``{i}.right``
[cols, r] float32, or ``{i}.dense`` [rows, cols] when that is fewer numbers; ``state.*``
(AlphaEdit's key Gram matrices); ``original.{param}`` with ``keep_original``. The header's
``factedit.deltas`` lists each delta's weight and metadata, ``factedit.state`` the state's,
and ``factedit.patch`` the provenance: the base model's fingerprint
(:mod:`factedit.patch.fingerprint`), the hash of each weight after the patch, method, layers,
hyper-parameters, the edits, the evaluation summary, the factedit version and the time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from factedit.console import warn
from factedit.delta import AppliedDeltas, WeightDelta, apply_deltas
from factedit.errors import PatchError
from factedit.patch.file import INFO_KEY, read_patch, write_patch
from factedit.patch.fingerprint import base_fingerprint, fingerprint_problems, tensor_sha256

if TYPE_CHECKING:
    from factedit.session import EditSession
    from factedit.spec import EditRequest

#: A method's sequential state as saved in a patch: tensors and JSON metadata.
SavedState = tuple[dict[str, torch.Tensor], dict[str, Any]]
#: Version of the layout above; a newer file is refused with a message to upgrade.
FORMAT_VERSION = 1
#: The patch inside a model directory written by factedit (``edit apply --out``, ``patch
#: apply --out``): every delta that directory carries over its base, and the edit state.
PATCH_FILE = "factedit-patch.safetensors"


def _module(model: Any) -> nn.Module:
    """The torch module of a model or a :class:`~factedit.models.loading.LoadedModel`."""
    return model.model if hasattr(model, "arch") else model


def edit_entry(request: EditRequest) -> dict[str, Any]:
    """What a patch records of one edit (its fields that are set)."""
    fields = ("subject", "prompt", "target_new", "target_true", "case_id")
    return {k: getattr(request, k) for k in fields if getattr(request, k) is not None}


@dataclass
class Patch:
    """``deltas`` in the order they apply, ``info`` (the provenance, see the module
    docstring), the sequential ``state`` or None, and ``originals`` (name -> weight before,
    with ``keep_original``)."""

    deltas: list[WeightDelta]
    info: dict[str, Any]
    state: SavedState | None = None
    originals: dict[str, torch.Tensor] = field(default_factory=dict)
    _handles: dict[int, AppliedDeltas] = field(default_factory=dict, repr=False, compare=False)

    # -- building -------------------------------------------------------------------------
    @classmethod
    def from_deltas(
        cls,
        target: Any,
        deltas: Sequence[WeightDelta],
        before: Mapping[str, torch.Tensor],
        *,
        state: SavedState | None = None,
        keep_original: bool = False,
        **info: Any,
    ) -> Patch:
        """A patch of ``deltas``, applied to the model ``target`` now, whose weights were
        ``before`` (name -> tensor) without them; ``info`` adds provenance (model name,
        method, layers, edits...)."""
        module = _module(target)
        params = dict(module.named_parameters())
        touched = {d.param for d in deltas}
        missing = sorted(touched - set(before))
        if missing:
            raise PatchError(f"no original weight for {', '.join(missing)}")
        base = {name: before[name] for name in touched}
        provenance = {
            "format": FORMAT_VERSION,
            "base": base_fingerprint(module, base),
            "after": {name: tensor_sha256(params[name]) for name in sorted(touched)},
            "keep_original": keep_original,
            **info,
        }
        provenance.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
        provenance.setdefault("factedit", _version())
        originals = {k: v.detach().cpu().clone() for k, v in base.items()} if keep_original else {}
        return cls(list(deltas), provenance, state, originals)

    @classmethod
    def from_session(
        cls,
        session: EditSession,
        *,
        evaluation: Mapping[str, Any] | None = None,
        keep_original: bool = False,
    ) -> Patch:
        """The deltas a session has applied, its edits and sequential state."""
        lm, applied = session.lm, session.applied
        before = {name: applied.original(name) for name in applied.params}
        return cls.from_deltas(
            lm,
            session.deltas,
            {k: v for k, v in before.items() if v is not None},
            state=session.saved_state(),
            keep_original=keep_original,
            model=lm.name,
            base_identity=lm.base_identity,
            method=session.method,
            layers=list(session.layers),
            hparams=session.hparams.to_dict(),
            edits=[edit_entry(r) for r in session.edits],
            evaluation=dict(evaluation) if evaluation is not None else None,
        )

    # -- disk -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> int:
        """Write the patch atomically (see the module docstring); returns its size in bytes."""
        tensors: dict[str, torch.Tensor] = {}
        listed = []
        for i, d in enumerate(self.deltas):
            rows, cols = d.left.shape[0], d.right.shape[0]
            if rows * cols <= d.rank * (rows + cols):
                tensors[f"{i}.dense"] = d.dense()
                kind = "dense"
            else:
                tensors[f"{i}.left"], tensors[f"{i}.right"] = d.left.float(), d.right.float()
                kind = "factors"
            listed.append({"param": d.param, "kind": kind, "rank": d.rank, "meta": d.meta})
        header = {"factedit.deltas": json.dumps(listed), INFO_KEY: json.dumps(self.info)}
        if self.state is not None:
            tensors.update({f"state.{k}": v for k, v in self.state[0].items()})
            header["factedit.state"] = json.dumps(self.state[1])
        tensors.update({f"original.{k}": v for k, v in self.originals.items()})
        return write_patch(path, tensors, header)

    @classmethod
    def load(cls, path: str | Path) -> Patch:
        """Read and check a patch written by :meth:`save`."""
        tensors, header = read_patch(path)
        try:
            info = json.loads(header[INFO_KEY])
            listed = json.loads(header["factedit.deltas"])
            if int(info.get("format", 0)) > FORMAT_VERSION:
                raise PatchError(
                    f"{path} was written by a newer factedit (patch format {info['format']}); "
                    "upgrade factedit to read it"
                )
            deltas = [_delta(i, entry, tensors) for i, entry in enumerate(listed)]
        except (KeyError, TypeError, ValueError) as exc:
            raise PatchError(f"{path}: malformed patch header ({exc})") from None
        state = None
        if "factedit.state" in header:
            names = [k for k in tensors if k.startswith("state.")]
            state_tensors = {k.removeprefix("state."): tensors[k] for k in names}
            state = (state_tensors, json.loads(header["factedit.state"]))
        originals = {
            k.removeprefix("original."): v for k, v in tensors.items() if k.startswith("original.")
        }
        return cls(deltas, info, state, originals)

    # -- use ------------------------------------------------------------------------------
    @property
    def params(self) -> list[str]:
        """The edited weights, in first-edit order."""
        return list(dict.fromkeys(d.param for d in self.deltas))

    def problems(self, model: Any) -> list[str]:
        """Why this patch does not fit ``model`` as it is now (empty: it fits)."""
        return fingerprint_problems(self.info["base"], _module(model))

    def apply(self, model: Any, *, force: bool = False) -> None:
        """W += ΔW for every delta, in order, after checking that ``model`` is the one the
        patch was made on (:class:`PatchError` naming the first problem; ``force``: warn and
        apply anyway). All or nothing: on any error the weights are as they were."""
        module = _module(model)
        problems = self.problems(module)
        if problems and not force:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise PatchError(f"the patch does not fit this model: {problems[0]}{more}")
        for problem in problems:
            warn(f"applying anyway (--force): {problem}")
        handle = AppliedDeltas(module)
        try:
            apply_deltas(module, self.deltas, into=handle)
        except BaseException:
            handle.revert()
            raise
        self._handles[id(module)] = handle

    def revert(self, model: Any, *, force: bool = False) -> bool:
        """Undo this patch on ``model``; True when the weights are back bit for bit (checked
        against the recorded hashes; a mismatch is warned about, never raised).

        A model that does not carry the patch (an edited weight is not the one the patch
        left) is refused with :class:`PatchError`; ``force``: warn and subtract anyway."""
        module = _module(model)
        handle = self._handles.pop(id(module), None)
        if handle is not None:
            handle.revert()
            return True
        params = dict(module.named_parameters())
        for name in self.params:
            if name not in params:
                raise PatchError(f"this model has no weight {name}; nothing was reverted")
            if tensor_sha256(params[name]) == self.info["after"][name]:
                continue
            if not force:
                raise PatchError(
                    f"the model does not carry this patch: {name} is not the weight the patch "
                    "left (nothing was reverted; --force subtracts the delta anyway)"
                )
            warn(f"reverting anyway (--force): {name} is not the weight the patch left")
        exact = True
        with torch.no_grad():
            for name in self.params:
                param = params[name]
                if name in self.originals:
                    param.copy_(self.originals[name].to(param.device, param.dtype))
                    continue
                total = sum(d.dense().double() for d in self.deltas if d.param == name)
                param.copy_((param.double() - total.to(param.device)).to(param.dtype))
                if tensor_sha256(param) != self.info["base"]["tensors"][name]["sha256"]:
                    exact = False
                    warn(
                        f"{name}: reverted within float rounding, not bit for bit (make the "
                        "patch with --keep-original for an exact revert)"
                    )
        return exact

    @contextmanager
    def applied(self, model: Any, *, force: bool = False) -> Iterator[Patch]:
        """Apply on entry, revert (bit for bit) on exit, also on an exception."""
        self.apply(model, force=force)
        try:
            yield self
        finally:
            self.revert(model)


def _delta(
    index: int, entry: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
) -> WeightDelta:
    """Delta ``index`` of a loaded file (a dense one as its compact factors)."""
    if entry.get("kind") == "dense":
        dense = tensors[f"{index}.dense"].float()
        rows, cols = dense.shape
        if rows <= cols:
            left, right = torch.eye(rows), dense.T.contiguous()
        else:
            left, right = dense, torch.eye(cols)
        return WeightDelta(entry["param"], left, right, entry["meta"])
    return WeightDelta(
        entry["param"], tensors[f"{index}.left"], tensors[f"{index}.right"], entry["meta"]
    )


def _version() -> str:
    from factedit import __version__

    return __version__
