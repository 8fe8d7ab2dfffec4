"""``second_moment``: C = E[k kᵀ] of the down-projection's inputs, cached and resumable.

    C = second_moment(lm, layer)          # [d_in, d_in] float32 on CPU, from cache when known
    Cs = moments_and_counts(lm, [4, 5, 6, 7, 8])   # {layer: (C [d_in, d_in], n)}, one pass

First the in-process memo, then (under the entries' file locks, taken in layer order) the disk
cache; otherwise the statistics are collected, all missing layers in one pass (each forward
pass ends after the highest of them), resuming from the layers' ``.partial`` checkpoints when
every one of them has one and all are at the same point. Checkpoints are written every
``checkpoint_every`` batches and when the collection is interrupted (Ctrl-C, or SIGTERM,
which is turned into KeyboardInterrupt while collecting).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from factedit.console import info, progress, warn
from factedit.errors import FactEditError, StatsError
from factedit.models import LoadedModel
from factedit.stats import cache
from factedit.stats.choice import DEFAULT_N_TOKENS, SAMPLED_N_TOKENS, choose_corpus
from factedit.stats.collect import Accumulator, accumulate_layers
from factedit.stats.conditioning import conditioning
from factedit.stats.corpus import corpus_digest, prepare_corpus, token_sequences

ACC_DTYPES = {"float32": torch.float32, "float64": torch.float64}
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
    job = _Job(lm, paths, n_tokens, seq_len, dtype, batch_size, show_progress, checkpoint_every)
    job.corpus_kind = choice.kind
    if not use_cache:
        return {layer: (c, n_tokens) for layer, c in job.collect(layers, None).items()}
    entries = {
        layer: cache.Entry.for_key(stats_key(lm, layer, paths, n_tokens, seq_len, dtype))
        for layer in layers
    }
    found = {layer: hit for layer in layers if (hit := cache.memo_get(entries[layer])) is not None}
    missing = {layer: entry for layer, entry in entries.items() if layer not in found}
    if missing:
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


def _load_or_collect(job: _Job, entries: dict[int, cache.Entry]) -> dict[int, torch.Tensor]:
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
            for layer, C in computed.items():
                extras = {**job.sidecar_extras(), **conditioning(C, job.n_tokens).to_dict()}
                cache.save(todo[layer], C, extras)
                cache.drop_partial(todo[layer])
                info(f"statistics saved to {todo[layer].tensor_path}")
            found.update(computed)
    for layer, C in found.items():
        cache.memo_put(entries[layer], C)
    return found


class _Job:
    """One collection pass: sequences, the loop, checkpoints, progress and sidecar details."""

    def __init__(
        self,
        lm: LoadedModel,
        paths: Sequence[Path],
        n_tokens: int,
        seq_len: int,
        dtype: str,
        batch_size: int,
        show_progress: bool,
        checkpoint_every: int,
    ) -> None:
        self.lm, self.paths, self.n_tokens, self.seq_len = lm, paths, n_tokens, seq_len
        self.dtype, self.batch_size, self.show_progress = dtype, batch_size, show_progress
        self.checkpoint_every = max(1, checkpoint_every)
        self.seconds = 0.0
        self.corpus_kind = "files"

    def collect(
        self, layers: Sequence[int], entries: Mapping[int, cache.Entry] | None
    ) -> dict[int, torch.Tensor]:
        """Run (or resume) one pass for ``layers`` (sorted), checkpointing into ``entries``
        (None: no checkpoints) -> {layer: C [d_in, d_in]} on CPU in the statistics dtype."""
        sequences = token_sequences(self.lm.tokenizer, self.paths, self.n_tokens, self.seq_len)
        latest = initial = self._start(layers, entries)
        since, start = 0, time.perf_counter()
        bar = progress()
        bar.disable = bar.disable or not self.show_progress
        with _sigterm_as_interrupt(), bar:
            task = bar.add_task(
                f"C {self._label(layers)}", total=self.n_tokens, completed=_count(latest)
            )
            try:
                for latest in accumulate_layers(
                    self.lm,
                    layers,
                    sequences,
                    initial,
                    n_tokens=self.n_tokens,
                    batch_size=self.batch_size,
                    dtype=ACC_DTYPES[self.dtype],
                ):
                    bar.update(task, completed=_count(latest))
                    since += 1
                    if (
                        entries
                        and since >= self.checkpoint_every
                        and _count(latest) < self.n_tokens
                    ):
                        self._checkpoint(entries, latest)
                        since = 0
            except KeyboardInterrupt:
                if entries:
                    self._save_on_interrupt(entries, latest)
                raise
        self.seconds = time.perf_counter() - start
        assert all(s.total is not None and s.count == self.n_tokens for s in latest.values())
        dtype = ACC_DTYPES[self.dtype]
        return {layer: (s.total / s.count).to(dtype).cpu() for layer, s in latest.items()}

    def _start(
        self, layers: Sequence[int], entries: Mapping[int, cache.Entry] | None
    ) -> dict[int, Accumulator]:
        """The states to start from: the layers' checkpoints when every layer has one and all
        are at the same point, else zero for all (one position for the whole pass)."""
        label, n_tokens = self._label(layers), self.n_tokens
        saved = {}
        for layer in layers if entries else ():
            state = cache.load_partial(entries[layer])
            if state is not None and state.count:
                saved[layer] = state
        points = {(s.count, s.next_seq) for s in saved.values()}
        if len(saved) == len(layers) and len(points) == 1:
            [(count, _)] = points
            info(f"resuming {label} statistics at {count}/{n_tokens} tokens")
            return {
                layer: Accumulator(s.total.to(self.lm.device), s.count, s.next_seq)
                for layer, s in saved.items()
            }
        if saved:
            info(
                f"checkpoints of {len(saved)} of the {len(layers)} layers, not all at the same "
                f"point ({', '.join(f'layer {k}: {s.count}' for k, s in saved.items())} tokens); "
                f"starting {label} from zero"
            )
        info(f"collecting {label} statistics over {n_tokens} tokens")
        return {layer: Accumulator() for layer in layers}

    def _label(self, layers: Sequence[int]) -> str:
        """The module name for one layer; for several, the layers and the first/last module."""
        names = [self.lm.arch.down_proj_name(layer) for layer in layers]
        if len(names) == 1:
            return names[0]
        return f"layers {', '.join(map(str, layers))} ({names[0]} … {names[-1]})"

    def _checkpoint(
        self, entries: Mapping[int, cache.Entry], states: Mapping[int, Accumulator]
    ) -> None:
        """Save the layers' checkpoints; when that fails (disk full), warn and stop
        checkpointing (checkpoints left at different points are not resumed from)."""
        try:
            for layer, state in states.items():
                cache.save_partial(entries[layer], state, self.batch_size)
        except FactEditError as exc:
            warn(f"checkpoints disabled for this collection: {exc}")
            self.checkpoint_every = sys.maxsize

    def _save_on_interrupt(
        self, entries: Mapping[int, cache.Entry], states: Mapping[int, Accumulator]
    ) -> None:
        try:
            for layer, state in states.items():
                cache.save_partial(entries[layer], state, self.batch_size)
        except FactEditError as exc:
            warn(f"could not save the interrupted collection: {exc}")
            return
        if _count(states):
            paths = [entries[layer].partial_path for layer in states]
            where = (
                paths[0].name
                if len(paths) == 1
                else f"{len(paths)} checkpoints in {paths[0].parent}"
            )
            warn(
                f"interrupted at {_count(states)}/{self.n_tokens} tokens; progress saved "
                f"in {where}, the next run resumes from there"
            )

    def sidecar_extras(self) -> dict[str, Any]:
        return {
            "model_name": self.lm.name,
            "corpus_files": [p.name for p in self.paths],
            "corpus_kind": self.corpus_kind,
            "computed_by": os.getpid(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(self.seconds, 3),
            "device": str(self.lm.device),
            "model_dtype": str(self.lm.model.dtype).removeprefix("torch."),
            "batch_size": self.batch_size,
        }


def _count(states: Mapping[int, Accumulator]) -> int:
    """Token vectors summed so far (the same for every layer of one pass)."""
    return next(iter(states.values())).count


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While collecting, SIGTERM raises KeyboardInterrupt (so a checkpoint is written)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
