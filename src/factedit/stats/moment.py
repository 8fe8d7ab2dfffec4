"""``second_moment``: C = E[k kᵀ] of the down-projection's inputs, cached and resumable.

    C = second_moment(lm, layer)          # [d_in, d_in] float32 on CPU, from cache when known
    Cs = moments_and_counts(lm, [4, 5, 6, 7, 8])   # {layer: (C [d_in, d_in], n)}, one pass

First the in-process memo, then (under the entries' file locks, taken in layer order) the disk
cache; otherwise the statistics are collected, all missing layers in one pass (each forward
pass ends after the highest of them), resuming from the layers' ``.partial`` checkpoints when
every one of them has one and all are at the same point (the pass itself:
:mod:`factedit.stats.collection`). Under torchrun the ranks share the pass and rank 0 alone
uses the cache (:mod:`factedit.stats.distributed`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from factedit.console import info
from factedit.errors import StatsError
from factedit.models import LoadedModel
from factedit.stats import cache
from factedit.stats.choice import DEFAULT_N_TOKENS, SAMPLED_N_TOKENS, choose_corpus
from factedit.stats.collection import ACC_DTYPES, CollectionPass
from factedit.stats.conditioning import conditioning
from factedit.stats.corpus import corpus_digest, prepare_corpus
from factedit.stats.distributed import from_main

CHECKPOINT_EVERY = 20
# Token vectors per statistic (DEFAULT_N_TOKENS; SAMPLED_N_TOKENS = 50k for the corpus
# sampled from the model, see factedit.stats.sampled). Measured (scripts/bench_stats.py):
# gemma-3-270m layer 4 takes 1-5 min on a 2-core CPU, under a second on an H200; fewer tokens
# make u = C⁻¹k noisier (cos(u_n, u_100k) median 0.89 at 20k, 0.95 at 50k, gemma layer 4;
# on the sampled corpus, layer 2: 0.91 at 20k, 0.97 at 50k). Cached once per layer.
__all__ = [
    "DEFAULT_N_TOKENS",
    "SAMPLED_N_TOKENS",
    "moment_and_count",
    "moments_and_counts",
    "second_moment",
    "stats_key",
]

#: tokens per corpus row of the statistics (capped at the model's context length)
SEQ_LEN = 256


def stats_key(
    lm: LoadedModel, layer: int, corpus: Sequence[Path], n_tokens: int, seq_len: int, dtype: str
) -> dict[str, Any]:
    """The cache key: everything that determines C (file names of the corpus do not)."""
    return {
        "version": cache.FORMAT_VERSION,
        "model": lm.identity,
        "layer": layer,
        "module": lm.arch.down_proj_name(layer),
        "corpus": corpus_digest(corpus),
        "n_tokens": n_tokens,
        "seq_len": seq_len,
        "dtype": dtype,
    }


def second_moment(lm: LoadedModel, layer: int, **options: Any) -> torch.Tensor:
    """C for ``layer`` (see :func:`moment_and_count` for the options) [d_in, d_in]."""
    return moment_and_count(lm, layer, **options)[0]


def moment_and_count(lm: LoadedModel, layer: int, **options: Any) -> tuple[torch.Tensor, int]:
    """(C, n): C = mean of k kᵀ over n corpus token vectors, k the input of the MLP
    down-projection at ``layer`` -> [d_in, d_in] in ``dtype`` (float32/float64), on CPU.

    The one-layer case of :func:`moments_and_counts` (same options: ``corpus``,
    ``n_tokens``, ``dtype``, ``seq_len``, ``batch_size``, ``show_progress``, ``use_cache``,
    ``checkpoint_every``). The returned tensor is a fresh copy; the caller may modify it.
    """
    return moments_and_counts(lm, [layer], **options)[layer]


def moments_and_counts(
    lm: LoadedModel,
    layers: Sequence[int],
    *,
    corpus: Sequence[str | Path] | None = None,
    n_tokens: int | None = None,
    dtype: str = "float32",
    seq_len: int = SEQ_LEN,
    batch_size: int = 8,
    show_progress: bool = True,
    use_cache: bool = True,
    checkpoint_every: int = CHECKPOINT_EVERY,
) -> dict[int, tuple[torch.Tensor, int]]:
    """{layer: (C, n)} for each of ``layers`` (sorted, duplicates dropped): C = mean of k kᵀ
    over n corpus token vectors, k the input of the layer's MLP down-projection ->
    [d_in, d_in] in ``dtype`` (float32/float64), on CPU, a fresh copy. The layers not in the
    memo or the disk cache are collected together, in one forward pass per batch that ends
    after the highest of them.

    ``corpus``: files, ``["model"]``, or None for the fallback order of
    :mod:`factedit.stats.choice`; ``n_tokens`` None takes :data:`DEFAULT_N_TOKENS`, or
    :data:`SAMPLED_N_TOKENS` for a corpus sampled from the model. ``use_cache=False``
    neither reads nor writes the cache (benchmarks).
    """
    layers = sorted(set(layers))
    _check_options(lm, layers, dtype, n_tokens, batch_size)
    seq_len = min(seq_len, lm.max_length)
    choice, n_tokens = prepare_corpus(
        choose_corpus(corpus, n_tokens=n_tokens),
        lm=lm,
        n_tokens=n_tokens,
        seq_len=seq_len,
        show_progress=show_progress,
    )
    paths = list(choice.paths)
    job = CollectionPass(
        lm, paths, n_tokens, seq_len, dtype, batch_size, show_progress, checkpoint_every
    )
    job.corpus_kind = choice.kind
    if not use_cache:
        return {layer: (c, n_tokens) for layer, c in job.collect(layers, None).items()}
    entries = {
        layer: cache.Entry.for_key(stats_key(lm, layer, paths, n_tokens, seq_len, dtype))
        for layer in layers
    }
    found = {layer: hit for layer in layers if (hit := cache.memo_get(entries[layer])) is not None}
    missing = {layer: entry for layer, entry in entries.items() if layer not in found}
    if job.ranks.active:
        found = _load_or_collect_on_ranks(job, found, missing)
    elif missing:
        found.update(_load_or_collect(job, missing))
    return {layer: (found[layer].clone(), n_tokens) for layer in layers}


def _check_options(
    lm: LoadedModel, layers: Sequence[int], dtype: str, n_tokens: int | None, batch_size: int
) -> None:
    if dtype not in ACC_DTYPES:
        raise StatsError(f"statistics dtype must be float32 or float64, not {dtype!r}")
    if (n_tokens is not None and n_tokens <= 0) or batch_size <= 0:
        raise StatsError(f"n_tokens and batch_size must be positive ({n_tokens}, {batch_size})")
    if not layers:
        raise StatsError("no layer to collect statistics for")
    for layer in layers:
        lm.arch.down_proj_name(layer)  # an unknown layer fails here, before any work


def _load_or_collect(
    job: CollectionPass, entries: dict[int, cache.Entry]
) -> dict[int, torch.Tensor]:
    """Under the entries' locks (taken in layer order, so that two processes asking for
    overlapping layers cannot deadlock): C of each entry from disk, or, for those still
    missing, collected together and saved -> {layer: C [d_in, d_in]}; all put in the memo."""
    with contextlib.ExitStack() as locks:
        for layer in sorted(entries):
            locks.enter_context(cache.locked(entries[layer]))
        found = {}
        for layer, entry in entries.items():
            hit = cache.load(entry)  # another process may have written it while we waited
            if hit is not None:
                found[layer] = hit
        todo = {layer: entry for layer, entry in entries.items() if layer not in found}
        if todo:
            computed = job.collect(sorted(todo), todo)
            _save(job, todo, computed)
            found.update(computed)
    for layer, C in found.items():
        cache.memo_put(entries[layer], C)
    return found


def _save(
    job: CollectionPass, entries: Mapping[int, cache.Entry], computed: Mapping[int, torch.Tensor]
):
    """Write each computed C with its sidecar, and drop its checkpoint."""
    for layer, C in computed.items():
        extras = {**job.sidecar_extras(), **conditioning(C, job.n_tokens).to_dict()}
        cache.save(entries[layer], C, extras)
        cache.drop_partial(entries[layer])
        info(f"statistics saved to {entries[layer].tensor_path}")


def _load_or_collect_on_ranks(
    job: CollectionPass, found: dict[int, torch.Tensor], missing: dict[int, cache.Entry]
) -> dict[int, torch.Tensor]:
    """:func:`_load_or_collect` for a process group (:mod:`factedit.stats.distributed`):
    rank 0 alone looks in the cache (under the locks) and tells the others which layers to
    collect; all collect those together; rank 0 saves them and sends what it found."""
    ranks = job.ranks
    with contextlib.ExitStack() as locks:
        if ranks.main:
            for layer in sorted(missing):
                locks.enter_context(cache.locked(missing[layer]))
            for layer, entry in missing.items():
                if (hit := cache.load(entry)) is not None:
                    found[layer] = hit
        todo = from_main(sorted(layer for layer in missing if layer not in found), ranks)
        computed = job.collect(todo, missing if ranks.main else None) if todo else {}
        if ranks.main:
            _save(job, missing, computed)
    found = {**from_main(found, ranks), **computed}
    for layer, C in found.items():
        if layer in missing:
            cache.memo_put(missing[layer], C)
    return found
