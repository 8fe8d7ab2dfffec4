"""Second-moment statistics C = E[k kᵀ] of the MLP down-projection's inputs.

ROME (Meng et al. 2022, Eq. 2 and Appendix A) solves against C.

    C = second_moment(lm, layer, corpus=None)   # [d_in, d_in] float32, CPU
    Cs = moments_and_counts(lm, [4, 5, 6])      # {layer: (C, n_tokens)}, missing layers in one pass
    choice = choose_corpus(None)          # which corpus, decided without loading anything:
                                          # explicit > $FACTEDIT_CORPUS > WikiText-103 > model
    paths = resolve_corpus(None, lm=lm)   # the files (downloaded / sampled when needed)
    rows = list_cached()                  # complete cache entries (sidecar key + size)

Modules: ``choice`` (which corpus; imports no torch), ``corpus`` (files -> token sequences),
``sampled`` (the corpus sampled from the model), ``collect`` (the early-stopping accumulation
loop), ``cache`` (on-disk entries, checkpoints, locks, memo), ``moment`` (the entry point).
Names are imported on first use, so ``factedit.stats.choice`` stays light for the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from factedit.lazy import LazyImports

if TYPE_CHECKING:
    from factedit.stats.cache import clear_memo, list_cached
    from factedit.stats.choice import choose_corpus
    from factedit.stats.corpus import resolve_corpus
    from factedit.stats.moment import moments_and_counts, second_moment, stats_key

_EXPORTS = {
    "clear_memo": "factedit.stats.cache",
    "list_cached": "factedit.stats.cache",
    "choose_corpus": "factedit.stats.choice",
    "resolve_corpus": "factedit.stats.corpus",
    "moments_and_counts": "factedit.stats.moment",
    "second_moment": "factedit.stats.moment",
    "stats_key": "factedit.stats.moment",
}
__all__ = [
    "choose_corpus",
    "clear_memo",
    "list_cached",
    "moments_and_counts",
    "resolve_corpus",
    "second_moment",
    "stats_key",
]


__getattr__ = LazyImports(globals(), _EXPORTS).getattr
