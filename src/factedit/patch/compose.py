"""Patches applied one after another: their sequential states compose, and ``merge`` writes
the sequence as one patch.

    state = compose_states([a.state, b.state])   # the stream after a, then b
    c = merge([a, b])                             # applies as a then b, bit for bit

A sequential state (AlphaEdit's Σ K Kᵀ of every earlier edit, per layer) records how many
edits it holds (``n_edits``) and how many it started from (``n_edits_before``). The next
patch's state either *continues* the one so far (it was made on the model carrying it:
``n_edits_before`` equals the count so far, and its Gram matrices already include the earlier
keys) or *starts afresh* (``n_edits_before`` 0: made on the base model, so its keys add);
anything else is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from factedit.errors import PatchError
from factedit.patch.core import Patch, SavedState


def compose_states(states: Sequence[SavedState | None]) -> SavedState | None:
    """The sequential state after applying, in order, patches whose states are ``states``."""
    composed: SavedState | None = None
    for index, state in enumerate(states):
        if state is None:
            continue
        if composed is None:
            composed = ({k: v.clone() for k, v in state[0].items()}, dict(state[1]))
            continue
        tensors, meta = state
        so_far_tensors, so_far = composed
        for key in ("method", "layers"):
            if meta.get(key) != so_far.get(key):
                raise PatchError(
                    f"patch {index + 1} keeps a {meta.get('method')} state on layers "
                    f"{meta.get('layers')}, the patches before it {so_far.get('method')} on "
                    f"layers {so_far.get('layers')}: their edit streams cannot be joined"
                )
        before = int(meta.get("n_edits_before", 0))
        if before == so_far["n_edits"]:
            composed = ({k: v.clone() for k, v in tensors.items()}, dict(meta))
            composed[1]["n_edits_before"] = so_far.get("n_edits_before", 0)
        elif before == 0:
            summed = {k: so_far_tensors[k] + v for k, v in tensors.items()}
            composed = (summed, {**so_far, "n_edits": so_far["n_edits"] + meta["n_edits"]})
        else:
            raise PatchError(
                f"patch {index + 1} continues a stream of {before} edits, the patches before "
                f"it carry {so_far['n_edits']}; apply the patch it was made after first"
            )
    return composed


def merge(patches: Sequence[Patch]) -> Patch:
    """One patch that applies as ``patches`` in order. Each must have been made on the
    result of the ones before it wherever they edit the same weight (else PatchError)."""
    if not patches:
        raise PatchError("nothing to merge")
    first = patches[0]
    base = {k: v for k, v in first.info["base"].items() if k != "tensors"}
    tensors: dict[str, Any] = {}
    after: dict[str, str] = {}
    originals = {}
    for index, patch in enumerate(patches):
        info = patch.info
        if info["base"]["config_sha256"] != base["config_sha256"]:
            raise PatchError(
                f"patch {index + 1} is for another model ({info['base'].get('model_type')}, "
                f"config {info['base']['config_sha256'][:12]}) than patch 1"
            )
        for name, described in info["base"]["tensors"].items():
            if name in after and after[name] != described["sha256"]:
                raise PatchError(
                    f"patch {index + 1} was not made on the result of the patches before it: "
                    f"{name} differs (they edit the same weight independently)"
                )
            if name not in tensors:
                tensors[name] = described
                if name in patch.originals:
                    originals[name] = patch.originals[name]
        after.update(info["after"])
    methods = list(dict.fromkeys(p.info.get("method") for p in patches))
    layers = sorted({layer for p in patches for layer in p.info.get("layers", [])})
    info = {
        "format": first.info.get("format"),
        "base": {**base, "tensors": tensors},
        "after": after,
        "keep_original": all(p.info.get("keep_original") for p in patches),
        "model": first.info.get("model"),
        "base_identity": first.info.get("base_identity"),
        "method": methods[0] if len(methods) == 1 else "+".join(map(str, methods)),
        "layers": layers,
        "hparams": [p.info.get("hparams") for p in patches],
        "edits": [e for p in patches for e in p.info.get("edits", [])],
        "evaluation": None,
        "merged_from": [_part(p) for p in patches],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "factedit": first.info.get("factedit"),
    }
    deltas = [d for p in patches for d in p.deltas]
    return Patch(deltas, info, compose_states([p.state for p in patches]), originals)


def _part(patch: Patch) -> dict[str, Any]:
    info = patch.info
    keys = ("method", "layers", "created", "evaluation")
    return {**{k: info.get(k) for k in keys}, "n_edits": len(info.get("edits", []))}
