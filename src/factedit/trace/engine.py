"""The fast causal-tracing engine: few, batched, partial forward passes.

    p_corrupt, probs = run_sites(lm, problem, sites)   # [S], [len(sites), S]

Equal (allclose) to :mod:`factedit.trace.reference`, which runs one full forward pass per
(site, noise sample). What the engine saves:

1. **Batching.** A batch row is one (site, noise sample) pair; rows are chunked to bound
   memory, and only the last position's logits are computed.
2. **Nothing below the restored layer is recomputed.** The corrupted run is computed once
   and every decoder layer's output is kept. A row whose first patched module is in layer
   ``l`` (its *start layer*; ``l + 1`` when a layer output itself is restored) runs only
   layers ``l..L-1``: the decoder modules below are temporarily replaced by stand-ins that
   return the cached corrupted states. The layer list keeps its length and indexes, so the
   base model still builds its attention masks (sliding or full per layer) and rotary
   embeddings exactly as in a full pass — nothing architecture-specific is re-implemented.
3. **Nothing before the restored token is recomputed.** Attention is causal, so at tokens
   before the restored one every state equals the corrupted run's. Rows restoring token
   ``t`` feed only tokens ``t..T-1`` and read the earlier tokens' keys and values from the
   corrupted run's KV cache (when the model returns a dynamic cache; otherwise the whole
   prompt is fed). Sites entirely before the subject equal the corrupted run and are not
   run at all.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from factedit.console import progress
from factedit.forward import resume_from_layer
from factedit.hooks import Trace, TraceDict
from factedit.kvcache import cache_argument, output_cache
from factedit.models.arch import Architecture
from factedit.models.loading import LoadedModel
from factedit.trace.patching import (
    Site,
    TraceProblem,
    last_logits,
    noise_editor,
    restore_editor,
    site_masks,
    site_modules,
)

TOKENS_PER_BATCH = 2048
MAX_ROWS = 128


def site_start(arch: Architecture, site: Site, window: int) -> int:
    """First layer that must be computed: a restored layer output needs only the layers above."""
    return min(j + 1 if site.kind == "hidden" else j for j, _ in site_modules(arch, site, window))


# ---- the KV cache of the corrupted run (prefix reuse) --------------------------------------
def _returned_cache(model: nn.Module, out: Any, num_tokens: int) -> Any | None:
    """The corrupted run's cache if prefixes can be re-used from it, else None."""
    cache = output_cache(out)
    layers = getattr(cache, "layers", None)
    if not layers or not all(hasattr(layer, "keys") for layer in layers):
        return None
    window = getattr(model.config, "sliding_window", None)
    if window is not None and num_tokens >= window - 1:
        return None  # a sliding layer may have dropped early keys
    return cache


def _prefix_cache(model: nn.Module, full: Any, samples: torch.Tensor, prefix: int) -> Any:
    """A fresh cache holding the corrupted run's first ``prefix`` tokens for rows ``samples``."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    for j, layer in enumerate(full.layers):
        cache.update(layer.keys[samples, :, :prefix], layer.values[samples, :, :prefix], j)
    return cache


# ---- the runs ------------------------------------------------------------------------------
@torch.inference_mode()
def corrupted_run(lm: LoadedModel, problem: TraceProblem) -> tuple[torch.Tensor, list, Any]:
    """All noise samples at once: p(answer) ``[S]``, every layer's output ``[S, T, D]`` and
    the KV cache (None when prefixes cannot be re-used)."""
    ids = problem.input_ids.to(lm.device).repeat(problem.samples, 1)
    names = [lm.arch.layer_name(layer) for layer in range(lm.arch.num_layers)]
    noise = noise_editor(problem.prompt.subject_span, problem.noise)
    use_cache = cache_argument(lm.model, default=None) is not None
    with (
        Trace(lm.model, lm.arch.paths.embed, edit_output=noise, retain_output=False),
        TraceDict(lm.model, names, detach=True) as td,
    ):
        out = lm.model(input_ids=ids, use_cache=use_cache)
    probs = torch.softmax(out.logits[:, -1].float(), dim=-1)[:, problem.answer_id]
    cache = _returned_cache(lm.model, out, problem.num_tokens) if use_cache else None
    return probs.cpu(), [td[name].output for name in names], cache


@torch.inference_mode()
def _run_rows(
    lm: LoadedModel,
    problem: TraceProblem,
    start: int,
    prefix: int,
    rows: Sequence[Site],
    samples: torch.Tensor,
    states: list[torch.Tensor],
    cache: Any,
) -> torch.Tensor:
    """p(answer) ``[B]`` for rows (site, noise sample) computed from layer ``start`` and token
    ``prefix`` on (earlier layers and tokens come from the corrupted run)."""
    masks = site_masks(lm.arch, rows, problem.num_tokens, problem.window)
    masks = {name: m[:, prefix:] for name, m in masks.items()}
    clean = {name: problem.clean[name][prefix:] for name in masks}
    ids = problem.input_ids[:, prefix:].to(lm.device).repeat(len(rows), 1)
    kwargs: dict[str, Any] = {}
    if prefix > 0:
        kwargs[cache_argument(lm.model)] = _prefix_cache(lm.model, cache, samples, prefix)
    with contextlib.ExitStack() as stack:
        if start == 0:
            a, b = problem.prompt.subject_span
            lo = max(a, prefix)
            if b > lo:
                eps = problem.noise[samples][:, lo - a :]
                noise = noise_editor((lo - prefix, b - prefix), eps)
                stack.enter_context(
                    Trace(lm.model, lm.arch.paths.embed, edit_output=noise, retain_output=False)
                )
        else:
            below = states[start - 1]  # on the device of layer start - 1 (a device map)
            hidden = below[samples.to(below.device), prefix:]
            stack.enter_context(resume_from_layer(lm.arch, start, hidden))
        editor = restore_editor(masks, clean)
        stack.enter_context(
            TraceDict(lm.model, list(masks), edit_output=editor, retain_output=False)
        )
        logits = last_logits(lm, ids, use_cache=prefix > 0, **kwargs)
    return torch.softmax(logits, dim=-1)[:, problem.answer_id].cpu()


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def run_sites(
    lm: LoadedModel, problem: TraceProblem, sites: Sequence[Site], *, max_rows: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """p_corrupt ``[S]`` and p(answer) with each site restored, ``[len(sites), S]``."""
    p_corrupt, states, cache = corrupted_run(lm, problem)
    out = p_corrupt.repeat(len(sites), 1)
    subject_start = problem.prompt.subject_span[0]
    groups: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for i, site in enumerate(sites):
        effective = [t for t in site.tokens if t >= subject_start]
        if not effective:
            continue  # restoring before the subject changes nothing: p = p_corrupt
        prefix = min(effective) if cache is not None else 0
        key = (site_start(lm.arch, site, problem.window), prefix)
        groups[key].extend((i, s) for s in range(problem.samples))
    work = []
    for (start, prefix), rows in sorted(groups.items()):
        size = max_rows or max(1, min(MAX_ROWS, TOKENS_PER_BATCH // (problem.num_tokens - prefix)))
        work.extend((start, prefix, chunk) for chunk in _chunks(rows, size))
    with progress() as bar:
        task = bar.add_task("tracing", total=sum(len(c) for *_, c in work))
        for start, prefix, chunk in work:
            samples = torch.tensor([s for _, s in chunk])
            rows = [sites[i] for i, _ in chunk]
            probs = _run_rows(lm, problem, start, prefix, rows, samples, states, cache)
            out[[i for i, _ in chunk], samples] = probs
            bar.advance(task, len(chunk))
    return p_corrupt, out
