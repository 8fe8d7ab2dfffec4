"""Choose the edit layer from causal traces (``layers: auto``).

    layer, why = recommend_layer(lm, requests)   # e.g. (4, "layer 4: the MLP indirect ...")

The recommended layer is where restoring the MLP output at the subject's last token raises
p(answer) the most. If an aggregate trace over known facts is cached for this model
(``factedit trace --facts``, stored under ``$FACTEDIT_HOME/traces/``) it is used; otherwise the
requests' own rewrite prompts are traced for the model's greedy answer (MLP sites at the last
subject token only — one short batched run per request).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from factedit.errors import FactEditError
from factedit.models.loading import LoadedModel
from factedit.paths import atomic_write_text, cache_dir
from factedit.tokens import locate_subject
from factedit.trace.aggregate import AggregateResult
from factedit.trace.engine import run_sites
from factedit.trace.fact import build_problem
from factedit.trace.noise import DEFAULT_NOISE
from factedit.trace.patching import Site
from factedit.trace.window import PLATEAU_FRACTION, aggregate_mlp_curve, plateau_window


def aggregate_cache_path(identity: str) -> Path:
    """Where the aggregate trace of the model named by ``identity`` is cached."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", identity)[-60:].strip("-")
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return cache_dir("traces") / f"{slug}-{digest}.json"


def save_aggregate(lm: LoadedModel, agg: AggregateResult) -> Path | None:
    """Cache ``agg`` for ``lm`` (atomic JSON) when it has an MLP recommendation."""
    if agg.recommended_layer() is None:
        return None
    path = aggregate_cache_path(lm.identity)
    data = agg.to_json()
    data["identity"] = lm.identity
    atomic_write_text(path, json.dumps(data))
    return path


def load_cached_aggregate(lm: LoadedModel) -> dict[str, Any] | None:
    """The cached aggregate trace JSON for ``lm``, or None (also for a stale or broken file)."""
    path = aggregate_cache_path(lm.identity)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if data.get("identity") != lm.identity or not data.get("recommended_layer"):
        return None
    return data


def mlp_last_subject_curve(
    lm: LoadedModel,
    prompt: str,
    subject: str,
    *,
    template: str | None = None,
    samples: int = 10,
    noise: str | float = DEFAULT_NOISE,
    seed: int = 0,
    window: int = 10,
) -> np.ndarray:
    """``[L]`` MLP indirect effect at the last subject token for the model's greedy answer."""
    located = locate_subject(lm.tokenizer, prompt, subject, template=template)
    end = located.subject_span[1]
    with torch.inference_mode():
        problem, _ = build_problem(
            lm, located, target=None, samples=samples, noise=noise, window=window, seed=seed
        )
        sites = [Site("mlp", (end - 1,), layer) for layer in range(lm.arch.num_layers)]
        p_corrupt, probs = run_sites(lm, problem, sites)
    return (probs.double().mean(dim=1) - p_corrupt.double().mean()).numpy()


def recommend_layer(
    lm: LoadedModel,
    requests: Sequence[Any],
    *,
    samples: int = 10,
    seed: int = 0,
    use_cache: bool = True,
) -> tuple[int, str]:
    """(layer, one-line explanation) for editing ``requests`` (EditRequest-like objects).

    Uses the cached aggregate trace of this model if there is one, else traces each
    request's rewrite prompt and averages the MLP indirect effect at the last subject token.
    """
    if use_cache and (cached := load_cached_aggregate(lm)) is not None:
        rec = cached["recommended_layer"]
        return int(rec["layer"]), (
            f"layer {rec['layer']}: restoring the MLP at the last subject token has the largest "
            f"average indirect effect there ({rec['effect']:.3f}) over {cached['facts_kept']} "
            f"known facts (cached aggregate trace {aggregate_cache_path(lm.identity)})"
        )
    if not requests:
        raise FactEditError("layers: auto needs at least one edit to trace")
    curves = [
        mlp_last_subject_curve(
            lm, r.rewrite_prompt, r.subject, template=r.prompt, samples=samples, seed=seed
        )
        for r in requests
    ]
    mean = np.mean(curves, axis=0)
    layer = int(np.argmax(mean))
    return layer, (
        f"layer {layer}: restoring the MLP at the last subject token has the largest indirect "
        f"effect there ({mean[layer]:.3f}, mean over {len(requests)} traced "
        f"{'fact' if len(requests) == 1 else 'facts'}, {samples} noise samples)"
    )


def resolve_layers(
    lm: LoadedModel,
    layers: Sequence[int] | str,
    requests: Sequence[Any],
    *,
    window: bool = False,
) -> tuple[tuple[int, ...], str]:
    """Concrete layers and a one-line reason.

    ``"auto"`` takes, in order: the preset's recorded layer (chosen from its aggregate trace
    and the selectivity of its keys, see the README); else this model's cached aggregate
    trace (``factedit trace --facts``, the MLP peak at the last subject token); else a causal
    trace of the requests themselves. With ``window`` (MEMIT-like methods) it is a window of
    layers instead (:func:`resolve_window`).
    """
    if layers != "auto":
        chosen = tuple(int(x) for x in layers)
        for layer in chosen:
            lm.arch.layer_name(layer)  # validates the index
        return chosen, "given in the spec / on the command line"
    if window:
        return resolve_window(lm)
    if lm.default_layer is not None:
        layer = lm.default_layer
        owner = f" by preset {lm.preset}" if lm.preset else ""
        reason = (
            f"layers: auto -> layer {layer}, recorded for these weights{owner} (among the "
            "layers where causal tracing finds the MLP effect at the last subject token within "
            "15% of its peak, the one whose keys leak least into other subjects)"
        )
    else:
        layer, reason = recommend_layer(lm, requests)
        reason = f"layers: auto -> {reason}"
    return (layer,), reason


def resolve_window(lm: LoadedModel) -> tuple[tuple[int, ...], str]:
    """``layers: auto`` for the multi-layer methods: the preset's recorded window, else the
    plateau (:func:`factedit.trace.window.plateau_window`) of this model's cached aggregate
    trace over known facts. Never the edited facts' own traces: a window chosen on the
    facts being evaluated would be tuned to them."""
    rule = (
        f"the layers with at least {PLATEAU_FRACTION:.0%} of the peak MLP effect at the "
        "last subject token"
    )
    if lm.default_window is not None:
        chosen = tuple(lm.default_window)
        owner = f" by preset {lm.preset}" if lm.preset else ""
        return chosen, (
            f"layers: auto -> window {chosen[0]}-{chosen[-1]}, recorded for these weights{owner} "
            f"({rule}, known facts)"
        )
    cached = load_cached_aggregate(lm)
    curve = aggregate_mlp_curve(cached) if cached else None
    if curve is None:
        raise FactEditError(
            "layers: auto for a multi-layer method needs a causal-trace profile of this model "
            "over known facts: run `factedit trace --facts FILE --model ...` once (it is "
            "cached), or give the window, e.g. layers: [3, 4, 5, 6, 7, 8]"
        )
    chosen = plateau_window(curve)
    return chosen, (
        f"layers: auto -> window {chosen[0]}-{chosen[-1]} ({rule}, cached aggregate trace over "
        f"{cached['facts_kept']} known facts, {aggregate_cache_path(lm.identity)})"
    )
