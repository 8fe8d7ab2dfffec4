"""MEMIT's layer loop (Meng et al. 2023, Alg. 1), shared by MEMIT, AlphaEdit and EMMET.

    z = compute_targets(lm, requests, layers[-1], templates, hp)       # z_i [n, d]
    deltas = spread_over_layers(lm, requests, layers, z, state, solver)  # one per layer

For each layer l of the window, in order, on the model carrying the updates of the layers
before it:

    K    = keys at l, template-averaged (bare prompt ½, the reference)           [d_in, n]
    Z_c  = current z at the last window layer (bare prompts)                    [d, n]
    R    = (Z − Z_c) / (layers left, l included), mapped to W's output space
           (:func:`factedit.methods.mlp_out.weight_space_residuals`)           [d_out, n]
    ΔW_l = R Sᵀ,  S = solver.right(K)        e.g. MEMIT: S = (λC + K Kᵀ)⁻¹ K      [d_in, n]

ΔW_l is applied before the next layer's keys are computed. Both are read from a
:class:`~factedit.methods.stream.PromptStream` that keeps each prompt's residual entering the
current layer and runs only the layers it moves through (the values of a full pass).
Everything is solved in float64 and cast to the weight's dtype once, when applied. The model
is left as it was found.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from factedit.console import progress
from factedit.delta import AppliedDeltas, WeightDelta, compact_factors
from factedit.methods.hparams import MemitHParams
from factedit.methods.keys import template_mean
from factedit.methods.mlp_out import output_change, weight_space_residuals
from factedit.methods.state import MethodState
from factedit.methods.stream import PromptStream
from factedit.methods.value import (
    HookSite,
    ValueBatch,
    optimise_values,
    rewrite_prompts,
    suffix_length,
)
from factedit.methods.zcache import ZCache
from factedit.models.loading import LoadedModel
from factedit.spec import EditRequest
from factedit.stats.distributed import current_ranks, from_main, gathered


class Solver(Protocol):
    """A method's update rule: ΔW_l = R Sᵀ with S = ``right(...)``."""

    name: str

    def right(
        self, lm: LoadedModel, layer: int, keys: torch.Tensor, state: MethodState
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """S [d_in, n] float64 for keys [d_in, n] float64, and what to record about it."""
        ...

    def after(
        self,
        lm: LoadedModel,
        requests: Sequence[EditRequest],
        layers: Sequence[int],
        state: MethodState,
        deltas: Sequence[WeightDelta],
    ) -> None:
        """Called with every delta applied (e.g. AlphaEdit records the new keys)."""
        ...


class StatelessSolver:
    """A solver that keeps nothing between batches (MEMIT, EMMET)."""

    name = "stateless"

    def after(self, *_args: Any) -> None:
        return None


@dataclass
class Targets:
    """z_i = z_orig,i + δ_i at the last window layer: ``z`` and ``z_orig`` [n, d] float32."""

    z: torch.Tensor
    z_orig: torch.Tensor
    logs: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        """Mean/max of the final loss terms and the step count over the facts."""
        final = [log["losses"][-1] for log in self.logs]
        steps = [log["steps"] for log in self.logs]
        if not final:
            return {}
        return {
            "z_steps_mean": sum(steps) / len(steps),
            "z_final_nll_mean": sum(f["nll"] for f in final) / len(final),
            "z_final_nll_max": max(f["nll"] for f in final),
            "z_delta_norm_mean": float((self.z - self.z_orig).norm(dim=-1).mean()),
        }


def compute_targets(
    lm: LoadedModel,
    requests: Sequence[EditRequest],
    layer: int,
    templates: Sequence[str],
    hp: MemitHParams,
    *,
    use_cache: bool = True,
) -> Targets:
    """z for each request at the output of decoder ``layer`` (the residual stream), optimised
    as ROME's v* (:func:`factedit.methods.value.optimise_values`) in chunks of
    ``hp.z_batch_facts`` facts per forward pass; batched equals one at a time, so the facts
    are grouped by :func:`~factedit.methods.value.suffix_length` (a pass pads every row to
    its longest suffix: on the first 1,000 records of counterfact-mass.json, chunks of 32
    in request order are 43 % padding, grouped 9 %). Each z is
    kept on disk as soon as its chunk is done (:class:`~factedit.methods.zcache.ZCache`), so
    an interrupted batch resumes where it stopped (``use_cache=False``: neither read nor
    written).

    In a process group (torchrun; :mod:`factedit.stats.distributed`) the facts are
    independent until the solve: rank 0's cache hits go to every rank, rank r optimises the
    facts ``r, r + K, ...`` of the rest, and every rank ends with all of them.
    """
    ranks = current_ranks()
    site = HookSite.residual(lm, layer)
    cache = ZCache(lm, site, templates, hp) if use_cache else None
    values = from_main([cache.get(r) if cache else None for r in requests], ranks)
    todo = [i for i, v in enumerate(values) if v is None]
    todo.sort(key=lambda i: suffix_length(lm, requests[i]))
    mine = todo[ranks.rank :: ranks.world]
    size = hp.z_batch_facts
    with progress() as bar:
        bar.disable = bar.disable or not ranks.main
        done = len(requests) - len(todo)
        task = bar.add_task(f"z at layer {layer}", total=len(requests), completed=done)
        for start in range(0, len(mine), size):
            chunk = mine[start : start + size]
            batch = ValueBatch.build(lm, [requests[i] for i in chunk], templates)
            for i, value in zip(chunk, optimise_values(lm, batch, site, hp), strict=True):
                if cache:
                    cache.put(requests[i], value)
                values[i] = value
            bar.update(task, completed=done + (start + len(chunk)) * ranks.world)
    for i, value in gathered({i: values[i] for i in mine}, ranks).items():
        values[i] = value
    found = [v for v in values if v is not None]
    assert len(found) == len(requests)
    return Targets(
        torch.stack([v.v_star for v in found]),
        torch.stack([v.v_orig for v in found]),
        [v.log for v in found],
    )


def spread_over_layers(
    lm: LoadedModel,
    requests: Sequence[EditRequest],
    layers: Sequence[int],
    targets: Targets,
    state: MethodState,
    solver: Solver,
) -> list[WeightDelta]:
    """One delta per layer of ``layers`` (see the module docstring); the model is unchanged.

    With ``window_passes`` P > 1 the layer loop runs P times, each pass on the model carrying
    every update before it and spreading what is left of Z − Z_c; a layer's delta is the sum
    of its P updates. Every delta records the share of z − z_orig the edited model reaches
    at the last window layer (``z_reached_mean``; per pass in ``z_reached_by_pass``).
    """
    hp: MemitHParams = state.hparams
    state.second_moments(lm, layers)  # every layer of the window in one pass (memoised)
    passes = hp.window_passes
    by_pass: list[list[WeightDelta]] = []
    reached: list[float] = []
    with AppliedDeltas(lm.model) as applied, progress() as bar:
        label = f"keys and solve, layers {layers[0]}-{layers[-1]}"
        label += f", {passes} passes" if passes > 1 else ""
        task = bar.add_task(label, total=len(layers) * passes)
        for _ in range(passes):
            deltas, z_now = _layer_loop(
                lm, requests, layers, targets, state, solver, applied, lambda: bar.advance(task)
            )
            by_pass.append(deltas)
            reached.append(_z_reached(targets, z_now))
        merged = [_merged([p[i] for p in by_pass]) for i in range(len(layers))]
        for delta in merged:
            delta.meta.update(z_reached_mean=reached[-1], window_passes=passes)
            if passes > 1:
                delta.meta["z_reached_by_pass"] = reached
        solver.after(lm, requests, layers, state, merged)
    return merged


def _layer_loop(
    lm: LoadedModel,
    requests: Sequence[EditRequest],
    layers: Sequence[int],
    targets: Targets,
    state: MethodState,
    solver: Solver,
    applied: AppliedDeltas,
    done_one: Callable[[], object],
) -> tuple[list[WeightDelta], torch.Tensor]:
    """One pass over the window, each update applied into ``applied`` before the next
    layer's keys; returns the deltas and z at the last window layer after them [n, d]."""
    hp: MemitHParams = state.hparams
    templates = state.templates(lm)
    key_prompts = [p for r in requests for p in rewrite_prompts(lm, r, templates)]
    bare_prompts = [p for r in requests for p in rewrite_prompts(lm, r, ["{}"])]
    keys_stream = PromptStream(lm, key_prompts, layers[0], hp.key_batch_rows)
    bare_stream = PromptStream(lm, bare_prompts, layers[0], hp.key_batch_rows)
    z_layer = lm.arch.layer_name(layers[-1])
    deltas: list[WeightDelta] = []
    for i, layer in enumerate(layers):
        if i > 0:  # up to this layer, through the updates just applied below it
            keys_stream.advance(layer)
            bare_stream.advance(layer)
        keys = template_mean(
            keys_stream.at_subject(lm.arch.down_proj_name(layer), module_input=True),
            len(requests),
            state.template_weights(),
        )
        z_now = bare_stream.at_subject(z_layer, module_input=False)
        share = (targets.z.to(z_now.device) - z_now) / (len(layers) - i)
        residual_w = weight_space_residuals(lm, layer, keys, share)
        right, solve_info = solver.right(lm, layer, keys.double().T, state)
        delta = layer_delta(lm, layer, residual_w, right)
        delta.meta = {
            "method": solver.name,
            "layer": layer,
            "layers": list(layers),
            "n_facts": len(requests),
            "key_template_mean": hp.key_template_mean,
            **solve_info,
            **_norms(lm, layer, delta),
            **_reach(lm, layer, keys, delta, share),
            **targets.summary(),
            "c_tokens": state.conditioning[layer].n_tokens,
            "c_condition": state.conditioning[layer].condition,
        }
        applied.add(delta)
        deltas.append(delta)
        done_one()
    return deltas, bare_stream.at_subject(z_layer, module_input=False)


def _z_reached(targets: Targets, z_now: torch.Tensor) -> float:
    """Mean over facts of ⟨z_now − z_orig, z − z_orig⟩ / ‖z − z_orig‖² (1: z reached)."""
    wanted = (targets.z - targets.z_orig).double()
    got = (z_now.to(wanted.device) - targets.z_orig).double()
    return float(((got * wanted).sum(-1) / wanted.pow(2).sum(-1).clamp_min(1e-30)).mean())


def _merged(deltas: Sequence[WeightDelta]) -> WeightDelta:
    """The sum of one layer's updates from every pass, as one delta: the first pass's record
    (whose ``weight_norm`` is the weight before the batch) with the norms of the sum and each
    pass's share reached."""
    if len(deltas) == 1:
        return deltas[0]
    first = deltas[0]
    left, right = compact_factors(
        torch.cat([d.left for d in deltas], dim=1), torch.cat([d.right for d in deltas], dim=1)
    )
    merged = WeightDelta(first.param, left, right, dict(first.meta))
    norm = float(merged.dense().norm())
    merged.meta.update(delta_norm=norm, relative_norm=norm / first.meta["weight_norm"])
    merged.meta["share_reached_by_pass"] = [d.meta["share_reached_mean"] for d in deltas]
    return merged


def layer_delta(
    lm: LoadedModel, layer: int, residual_w: torch.Tensor, right: torch.Tensor
) -> WeightDelta:
    """ΔW = R Sᵀ as factors in the weight's orientation (``residual_w`` [n, d_out] = Rᵀ,
    ``right`` [d_in, n]); dense-sized factors when n exceeds the smaller side."""
    weight = lm.arch.down_proj(layer).weight
    r = residual_w.T.float().to(weight.device)
    s = right.float().to(weight.device)
    left, right_ = (s, r) if lm.arch.weight_is_in_out(layer) else (r, s)
    left, right_ = compact_factors(left, right_)
    return WeightDelta(lm.arch.down_proj_weight_name(layer), left, right_)


def _norms(lm: LoadedModel, layer: int, delta: WeightDelta) -> dict[str, float]:
    norm = float(delta.dense().norm())
    weight = float(lm.arch.down_proj(layer).weight.float().norm())
    return {"delta_norm": norm, "weight_norm": weight, "relative_norm": norm / weight}


def _reach(
    lm: LoadedModel, layer: int, keys: torch.Tensor, delta: WeightDelta, share: torch.Tensor
) -> dict[str, float]:
    """How much of its share of the residual target the layer's update delivers at the keys:
    ⟨achieved, wanted⟩ / ‖wanted‖² per fact (1 = all of it), mean and minimum."""
    achieved = output_change(lm, layer, keys, delta.dense())
    wanted = share.double().to(achieved.device)
    reach = (achieved * wanted).sum(-1) / wanted.pow(2).sum(-1).clamp_min(1e-30)
    return {"share_reached_mean": float(reach.mean()), "share_reached_min": float(reach.min())}
