"""Second-moment statistics C = E[k kᵀ] of the MLP down-projection's inputs (SPEC §4).

    C = second_moment(lm, layer, corpus=None, n_tokens=100_000)   # [d_in, d_in] float32, CPU
    paths = resolve_corpus(None)          # explicit > $FACTEDIT_CORPUS > ../shared/data WikiText
    rows = list_cached()                  # complete cache entries (sidecar key + size)

Modules: ``corpus`` (files -> token sequences), ``collect`` (the early-stopping accumulation
loop), ``cache`` (on-disk entries, checkpoints, locks, memo), ``moment`` (the entry point).
"""

from factedit.stats.cache import clear_memo, list_cached
from factedit.stats.corpus import resolve_corpus
from factedit.stats.moment import second_moment, stats_key

__all__ = ["clear_memo", "list_cached", "resolve_corpus", "second_moment", "stats_key"]
