"""Per-session state a method reads: hyper-parameters, context templates, and per layer the
second moment C = E[k kᵀ] of W's inputs (next: null-space projectors, earlier edits' keys).

    state = MethodState(RomeHParams(), corpus=None, n_tokens=None, seed=0)
    C = state.second_moment(lm, layer)     # [d_in, d_in], memoised per layer, cached on disk
    templates = state.templates(lm)        # ["{}", "<prefix>. {}", ...], sampled once

Both are computed on the model as it is at first use and then kept for the session, like
the reference implementations (C and the templates come from the unedited model when the
first edit asks for them). Both disk caches are keyed by the model's *current* identity, so
C collected on an edited model never lands under the unedited model's key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from factedit.methods.hparams import RomeHParams
from factedit.methods.templates import context_templates
from factedit.models.loading import LoadedModel
from factedit.stats.conditioning import Conditioning, check_conditioning
from factedit.stats.moment import moment_and_count


@dataclass
class MethodState:
    """What a method needs besides the model and the requests (see the module docstring).

    ``corpus``: files or ``["model"]`` for C, None for the default choice
    (:func:`factedit.stats.choice.choose_corpus`); ``n_tokens`` None lets that choice pick.
    """

    hparams: RomeHParams
    corpus: Sequence[str | Path] | None = None
    n_tokens: int | None = None
    seed: int = 0
    statistics: dict[int, torch.Tensor] = field(default_factory=dict)
    #: per layer: C's token count and eigenvalue range (reported in every delta's metadata)
    conditioning: dict[int, Conditioning] = field(default_factory=dict)
    _templates: list[str] | None = None

    def second_moment(self, lm: LoadedModel, layer: int) -> torch.Tensor:
        """C for ``layer`` [d_in, d_in]; an ill-conditioned C raises
        :class:`~factedit.stats.conditioning.IllConditionedStatistics` (never used)."""
        if layer not in self.statistics:
            C, n_tokens = moment_and_count(
                lm, layer, corpus=self.corpus, n_tokens=self.n_tokens, dtype=self.hparams.mom2_dtype
            )
            self.conditioning[layer] = check_conditioning(C, layer, n_tokens)
            self.statistics[layer] = C
        return self.statistics[layer]

    def templates(self, lm: LoadedModel) -> list[str]:
        """The context templates, sampled from the model once (seeded by ``seed``)."""
        if self._templates is None:
            hp = self.hparams
            self._templates = context_templates(
                lm, hp.context_template_lengths, hp.context_templates_per_length, seed=self.seed
            )
        return self._templates
