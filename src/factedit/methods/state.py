"""Per-session state a method reads: hyper-parameters, context templates, per layer the second
moment C = E[k kᵀ] of W's inputs and its null-space projector, and the keys of earlier edits.

    state = MethodState(RomeHParams(), corpus=None, n_tokens=None, seed=0)
    C = state.second_moment(lm, layer)     # [d_in, d_in], memoised per layer, cached on disk
    Cs = state.second_moments(lm, layers)  # every missing layer in one forward pass
    templates = state.templates(lm)        # ["{}", "<prefix>. {}", ...], sampled once
    weights = state.template_weights()     # [len(templates)]: how a key averages them
    P, why = state.projector(lm, layer)    # AlphaEdit: projector onto C's null space
    state.edit_gram(layer)                 # Σ K_p K_pᵀ over every earlier edit [d_in, d_in]

C and the templates are computed on the model as it is at first use and then kept for the
session, like the reference implementations (they come from the unedited model when the first
edit asks for them). Both disk caches are keyed by the model's *current* identity, so C
collected on an edited model never lands under the unedited model's key.

The earlier edits' keys are what sequential editing carries from one batch to the next
(:class:`SequentialState`); a method *stages* the keys of a batch it computed, and the session
commits them only when it applies exactly those deltas.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from factedit.methods.hparams import ValueHParams
from factedit.methods.templates import context_templates, template_weights
from factedit.models.loading import LoadedModel
from factedit.stats.conditioning import Conditioning, check_conditioning
from factedit.stats.moment import moments_and_counts


@dataclass
class SequentialState:
    """The keys of every edit applied so far, per layer: ``grams[l]`` = Σ K_p K_pᵀ
    [d_in, d_in] float64 on CPU, over ``n_edits`` facts (AlphaEdit's ``cache_c``)."""

    grams: dict[int, torch.Tensor] = field(default_factory=dict)
    n_edits: int = 0

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"gram.{layer}": g for layer, g in sorted(self.grams.items())}

    def meta(self) -> dict[str, Any]:
        return {"n_edits": self.n_edits, "layers": sorted(self.grams)}

    @classmethod
    def from_saved(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> SequentialState:
        grams = {int(name.split(".", 1)[1]): t.double() for name, t in tensors.items()}
        return cls(grams, int(meta.get("n_edits", 0)))


@dataclass
class _Staged:
    digests: list[str]
    grams: dict[int, torch.Tensor]
    n_facts: int


@dataclass
class MethodState:
    """What a method needs besides the model and the requests (see the module docstring).

    ``corpus``: files or ``["model"]`` for C, None for the default choice
    (:func:`factedit.stats.choice.choose_corpus`); ``n_tokens`` None lets that choice pick.
    """

    hparams: ValueHParams
    corpus: Sequence[str | Path] | None = None
    n_tokens: int | None = None
    seed: int = 0
    statistics: dict[int, torch.Tensor] = field(default_factory=dict)
    #: per layer: C's token count and eigenvalue range (reported in every delta's metadata)
    conditioning: dict[int, Conditioning] = field(default_factory=dict)
    sequential: SequentialState = field(default_factory=SequentialState)
    _templates: list[str] | None = None
    _projectors: dict[int, tuple[torch.Tensor, dict[str, Any]]] = field(default_factory=dict)
    _staged: _Staged | None = None
    _start: SequentialState = field(default_factory=SequentialState)

    def second_moments(self, lm: LoadedModel, layers: Sequence[int]) -> list[torch.Tensor]:
        """C for each of ``layers`` [d_in, d_in]; the missing ones are collected together in
        one forward pass. An ill-conditioned C raises
        :class:`~factedit.stats.conditioning.IllConditionedStatistics` (never used)."""
        missing = [layer for layer in dict.fromkeys(layers) if layer not in self.statistics]
        if missing:
            found = moments_and_counts(
                lm,
                missing,
                corpus=self.corpus,
                n_tokens=self.n_tokens,
                dtype=self.hparams.mom2_dtype,
            )
            for layer in missing:
                C, n_tokens = found[layer]
                self.conditioning[layer] = check_conditioning(C, layer, n_tokens)
                self.statistics[layer] = C
        return [self.statistics[layer] for layer in layers]

    def second_moment(self, lm: LoadedModel, layer: int) -> torch.Tensor:
        """C for one layer (see :meth:`second_moments`)."""
        return self.second_moments(lm, [layer])[0]

    def templates(self, lm: LoadedModel) -> list[str]:
        """The context templates, sampled from the model once (seeded by ``seed``)."""
        if self._templates is None:
            hp = self.hparams
            self._templates = context_templates(
                lm, hp.context_template_lengths, hp.context_templates_per_length, seed=self.seed
            )
        return self._templates

    def template_weights(self) -> torch.Tensor:
        """[len(templates)] float32, summing to 1: how a key averages its templates' keys
        (``hparams.key_template_mean``; see :func:`template_weights`)."""
        hp = self.hparams
        return template_weights(
            hp.context_template_lengths, hp.context_templates_per_length, hp.key_template_mean
        )

    def projector(self, lm: LoadedModel, layer: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """P = Û Ûᵀ [d_in, d_in] float64, Û the eigenvectors of C with the smallest eigenvalues
        whose sum is at most ``hparams.nullspace_energy`` × trace(C) (a scale-free rule), and
        what was chosen (``null_dim``, the energy share it carries, the rule)."""
        if layer not in self._projectors:
            share = float(self.hparams.nullspace_energy)
            self._projectors[layer] = null_space_projector(self.second_moment(lm, layer), share)
        return self._projectors[layer]

    def edit_gram(self, layer: int, width: int) -> torch.Tensor:
        """Σ K_p K_pᵀ of the earlier edits at ``layer`` [width, width] float64 (zeros if none)."""
        gram = self.sequential.grams.get(layer)
        return torch.zeros(width, width, dtype=torch.float64) if gram is None else gram

    def stage_edit_keys(
        self, deltas: Sequence[Any], grams: dict[int, torch.Tensor], n_facts: int
    ) -> None:
        """Hold a batch's key Gram matrices until its ``deltas`` are applied (:meth:`commit`)."""
        self._staged = _Staged([d.digest() for d in deltas], grams, n_facts)

    def mark_sequential_start(self) -> None:
        """Remember the sequential state as it is now (a session's starting point)."""
        self._start = SequentialState(dict(self.sequential.grams), self.sequential.n_edits)

    @property
    def sequential_start(self) -> SequentialState:
        """The sequential state the session started from."""
        return self._start

    def reset_sequential(self) -> None:
        """Back to the state :meth:`mark_sequential_start` remembered (every edit reverted)."""
        self.sequential = SequentialState(dict(self._start.grams), self._start.n_edits)
        self._staged = None

    def commit(self, deltas: Sequence[Any]) -> None:
        """The session applied ``deltas``: if they are the staged batch, keep its keys."""
        staged, self._staged = self._staged, None
        if staged is None or staged.digests != [d.digest() for d in deltas]:
            return
        for layer, gram in staged.grams.items():
            before = self.sequential.grams.get(layer)
            self.sequential.grams[layer] = gram if before is None else before + gram
        self.sequential.n_edits += staged.n_facts


def null_space_projector(C: torch.Tensor, share: float) -> tuple[torch.Tensor, dict[str, Any]]:
    """The projector onto the eigen-directions of ``C`` [d, d] carrying the last ``share`` of
    its trace (smallest eigenvalues first) -> (P [d, d] float64, description)."""
    eigvals, eigvecs = torch.linalg.eigh(C.double())
    eigvals = eigvals.clamp_min(0.0)
    energy = eigvals.cumsum(0) / eigvals.sum()
    null_dim = int((energy <= share).sum())
    basis = eigvecs[:, :null_dim]
    info = {
        "null_dim": null_dim,
        "null_energy": float(energy[null_dim - 1]) if null_dim else 0.0,
        "null_rule": f"eigenvectors of C carrying at most {share:g} of trace(C), smallest first",
    }
    return basis @ basis.T, info
