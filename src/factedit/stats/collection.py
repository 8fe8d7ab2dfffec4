"""One collection pass of the statistics: the loop, checkpoints, progress, ranks.

    job = CollectionPass(lm, paths, n_tokens, seq_len, "float32", 8, True, 20)
    Cs = job.collect([4, 5], entries)          # {layer: C [d_in, d_in]}, checkpointed

The pass sums k kᵀ over the corpus sequences (:func:`factedit.stats.collect.accumulate_layers`),
resuming from the entries' ``.partial`` checkpoints when every layer has one at the same point,
writes checkpoints every ``checkpoint_every`` batches (rounds, in a process group) and when it
is interrupted (Ctrl-C, or SIGTERM, turned into KeyboardInterrupt while collecting). In a
process group (:mod:`factedit.stats.distributed`) every rank runs the pass on its share.
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
from factedit.errors import FactEditError
from factedit.models import LoadedModel
from factedit.stats import cache
from factedit.stats.collect import Accumulator, accumulate_layers
from factedit.stats.corpus import token_sequences
from factedit.stats.distributed import combined_total, current_ranks, from_main

ACC_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class CollectionPass:
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
        self.ranks = current_ranks()
        self.saving = True  # checkpoints are written (until one fails)

    def collect(
        self, layers: Sequence[int], entries: Mapping[int, cache.Entry] | None
    ) -> dict[int, torch.Tensor]:
        """Run (or resume) one pass for ``layers`` (sorted), checkpointing into ``entries``
        (None: no checkpoints) -> {layer: C [d_in, d_in]} on CPU in the statistics dtype.

        In a process group every rank calls this with the same ``layers`` (``entries`` on
        rank 0 only): each sums its share of the batches, and the checkpoints and C are
        the ranks' combined sums (:mod:`factedit.stats.distributed`)."""
        ranks = self.ranks
        sequences = token_sequences(self.lm.tokenizer, self.paths, self.n_tokens, self.seq_len)
        latest = initial = self._start_on_ranks(layers, entries)
        since, start = 0, time.perf_counter()
        bar = progress()
        bar.disable = bar.disable or not self.show_progress or not ranks.main
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
                    rank=ranks.rank,
                    world=ranks.world,
                ):
                    bar.update(task, completed=_count(latest))
                    since += 1
                    wanted = entries is not None or ranks.active  # the group decides alike
                    if wanted and since >= self.checkpoint_every and _count(latest) < self.n_tokens:
                        self._checkpoint(entries, self._combined(latest))
                        since = 0
            except KeyboardInterrupt:
                if entries and not ranks.active:  # a group keeps its last checkpoint
                    self._save_on_interrupt(entries, latest)
                raise
        self.seconds = time.perf_counter() - start
        totals = self._combined(latest)
        assert all(s.total is not None and s.count == self.n_tokens for s in totals.values())
        dtype = ACC_DTYPES[self.dtype]
        return {layer: (s.total / s.count).to(dtype).cpu() for layer, s in totals.items()}

    def _combined(self, states: Mapping[int, Accumulator]) -> dict[int, Accumulator]:
        """The group's sums at this point (every rank calls it); alone, ``states`` itself."""
        if not self.ranks.active:
            return dict(states)
        out = {}
        for layer, state in states.items():
            width = self.lm.arch.down_proj(layer).weight.shape
            d_in = width[0 if self.lm.arch.weight_is_in_out(layer) else 1]
            total = combined_total(state.total, torch.Size([d_in, d_in]), self.ranks)
            out[layer] = Accumulator(total, state.count, state.next_seq)
        return out

    def _start_on_ranks(
        self, layers: Sequence[int], entries: Mapping[int, cache.Entry] | None
    ) -> dict[int, Accumulator]:
        """:meth:`_start` on rank 0; the other ranks start at its position with no sum."""
        if not self.ranks.active:
            return self._start(layers, entries)
        states = self._start(layers, entries) if self.ranks.main else None
        count, next_seq = from_main(
            None if states is None else (_count(states), next(iter(states.values())).next_seq),
            self.ranks,
        )
        if states is not None:
            return states
        return {layer: Accumulator(None, count, next_seq) for layer in layers}

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
        self, entries: Mapping[int, cache.Entry] | None, states: Mapping[int, Accumulator]
    ) -> None:
        """Save the layers' checkpoints (None: nothing to save on this rank); when that
        fails (disk full), warn and stop checkpointing (checkpoints left at different points
        are not resumed from)."""
        if entries is None or not self.saving:
            return
        try:
            for layer, state in states.items():
                cache.save_partial(entries[layer], state, self.batch_size)
        except FactEditError as exc:
            warn(f"checkpoints disabled for this collection: {exc}")
            self.saving = False  # a group keeps combining at the same rounds, in step
            if not self.ranks.active:
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
