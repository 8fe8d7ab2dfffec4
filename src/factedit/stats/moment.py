"""``second_moment``: C = E[k kᵀ] of the down-projection's inputs, cached and resumable.

    C = second_moment(lm, layer)          # [d_in, d_in] float32 on CPU, from cache when known

First the in-process memo, then (under the entry's file lock) the disk cache; otherwise the
statistic is collected, resuming from a ``.partial`` checkpoint if one exists. Checkpoints
are written every ``checkpoint_every`` batches and when the collection is interrupted
(Ctrl-C, or SIGTERM, which is turned into KeyboardInterrupt while collecting).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from factedit.console import info, progress, warn
from factedit.errors import FactEditError, StatsError
from factedit.models import LoadedModel
from factedit.stats import cache
from factedit.stats.choice import DEFAULT_N_TOKENS, SAMPLED_N_TOKENS, choose_corpus
from factedit.stats.collect import Accumulator, accumulate
from factedit.stats.conditioning import conditioning
from factedit.stats.corpus import corpus_digest, prepare_corpus, token_sequences

ACC_DTYPES = {"float32": torch.float32, "float64": torch.float64}
CHECKPOINT_EVERY = 20
# Token vectors per statistic (DEFAULT_N_TOKENS; SAMPLED_N_TOKENS = 50k for the corpus
# sampled from the model, see factedit.stats.sampled). Measured (scripts/bench_stats.py):
# gemma-3-270m layer 4 takes 1-5 min on a 2-core CPU, under a second on an H200; fewer tokens
# make u = C⁻¹k noisier (cos(u_n, u_100k) median 0.89 at 20k, 0.95 at 50k, gemma layer 4;
# on the sampled corpus, layer 2: 0.91 at 20k, 0.97 at 50k). Cached once per layer.
__all__ = ["DEFAULT_N_TOKENS", "SAMPLED_N_TOKENS", "moment_and_count", "second_moment", "stats_key"]


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


def moment_and_count(
    lm: LoadedModel,
    layer: int,
    *,
    corpus: Sequence[str | Path] | None = None,
    n_tokens: int | None = None,
    dtype: str = "float32",
    seq_len: int = 256,
    batch_size: int = 8,
    show_progress: bool = True,
    use_cache: bool = True,
    checkpoint_every: int = CHECKPOINT_EVERY,
) -> tuple[torch.Tensor, int]:
    """(C, n): C = mean of k kᵀ over n corpus token vectors, k the input of the MLP
    down-projection at ``layer`` -> [d_in, d_in] in ``dtype`` (float32/float64), on CPU.

    ``corpus``: files, ``["model"]``, or None for the fallback order of
    :mod:`factedit.stats.choice`; ``n_tokens`` None takes :data:`DEFAULT_N_TOKENS`, or
    :data:`SAMPLED_N_TOKENS` for a corpus sampled from the model. ``use_cache=False``
    neither reads nor writes the cache (benchmarks). The returned tensor is a fresh copy;
    the caller may modify it.
    """
    if dtype not in ACC_DTYPES:
        raise StatsError(f"statistics dtype must be float32 or float64, not {dtype!r}")
    if (n_tokens is not None and n_tokens <= 0) or batch_size <= 0:
        raise StatsError(f"n_tokens and batch_size must be positive ({n_tokens}, {batch_size})")
    seq_len = min(seq_len, lm.max_length)
    choice, n_tokens = prepare_corpus(
        choose_corpus(corpus, n_tokens=n_tokens),
        lm=lm,
        n_tokens=n_tokens,
        seq_len=seq_len,
        show_progress=show_progress,
    )
    paths = list(choice.paths)
    key = stats_key(lm, layer, paths, n_tokens, seq_len, dtype)
    job = _Job(lm, layer, paths, key, batch_size, show_progress, checkpoint_every)
    job.corpus_kind = choice.kind
    if not use_cache:
        return job.collect(None), n_tokens
    entry = cache.Entry.for_key(key)
    hit = cache.memo_get(entry)
    if hit is None:
        with cache.locked(entry):
            hit = cache.load(entry)
            if hit is None:
                hit = job.collect(entry)
                extras = {**job.sidecar_extras(), **conditioning(hit, n_tokens).to_dict()}
                cache.save(entry, hit, extras)
                cache.drop_partial(entry)
                info(f"statistics saved to {entry.tensor_path}")
        cache.memo_put(entry, hit)
    return hit.clone(), n_tokens


class _Job:
    """One collection: sequences, the loop, checkpoints, progress and sidecar details."""

    def __init__(
        self,
        lm: LoadedModel,
        layer: int,
        paths: Sequence[Path],
        key: dict[str, Any],
        batch_size: int,
        show_progress: bool,
        checkpoint_every: int,
    ) -> None:
        self.lm, self.layer, self.paths, self.key = lm, layer, paths, key
        self.batch_size, self.show_progress = batch_size, show_progress
        self.checkpoint_every = max(1, checkpoint_every)
        self.seconds = 0.0
        self.corpus_kind = "files"

    def collect(self, entry: cache.Entry | None) -> torch.Tensor:
        """Run (or resume) the collection -> C [d_in, d_in] on CPU in the key's dtype."""
        n_tokens, module = self.key["n_tokens"], self.key["module"]
        sequences = token_sequences(self.lm.tokenizer, self.paths, n_tokens, self.key["seq_len"])
        state = (cache.load_partial(entry) if entry else None) or Accumulator()
        if state.count:
            info(f"resuming {module} statistics at {state.count}/{n_tokens} tokens")
            state = Accumulator(state.total.to(self.lm.device), state.count, state.next_seq)
        else:
            info(f"collecting {module} statistics over {n_tokens} tokens")
        latest, since = state, 0
        start = time.perf_counter()
        bar = progress()
        bar.disable = bar.disable or not self.show_progress
        with _sigterm_as_interrupt(), bar:
            task = bar.add_task(f"C {module}", total=n_tokens, completed=state.count)
            try:
                for latest in accumulate(
                    self.lm,
                    self.layer,
                    sequences,
                    state,
                    n_tokens=n_tokens,
                    batch_size=self.batch_size,
                    dtype=ACC_DTYPES[self.key["dtype"]],
                ):
                    bar.update(task, completed=latest.count)
                    since += 1
                    if entry and since >= self.checkpoint_every and latest.count < n_tokens:
                        self._checkpoint(entry, latest)
                        since = 0
            except KeyboardInterrupt:
                if entry:
                    self._save_on_interrupt(entry, latest)
                raise
        self.seconds = time.perf_counter() - start
        assert latest.total is not None and latest.count == n_tokens
        return (latest.total / latest.count).to(ACC_DTYPES[self.key["dtype"]]).cpu()

    def _checkpoint(self, entry: cache.Entry, state: Accumulator) -> None:
        """Save a checkpoint; when that fails (disk full), warn and stop checkpointing."""
        try:
            cache.save_partial(entry, state, self.batch_size)
        except FactEditError as exc:
            warn(f"checkpoints disabled for this collection: {exc}")
            self.checkpoint_every = sys.maxsize

    def _save_on_interrupt(self, entry: cache.Entry, state: Accumulator) -> None:
        try:
            cache.save_partial(entry, state, self.batch_size)
        except FactEditError as exc:
            warn(f"could not save the interrupted collection: {exc}")
            return
        if state.count:
            warn(
                f"interrupted at {state.count}/{self.key['n_tokens']} tokens; progress saved "
                f"in {entry.partial_path.name}, the next run resumes from there"
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
