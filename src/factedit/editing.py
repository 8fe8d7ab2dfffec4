"""The editor: turns edit requests into weight deltas with one method, model untouched.

    editor = Editor(lm, method="rome", layers=(4,), hparams={}, corpus=None, seed=0)
    deltas = editor.compute(request)        # list[WeightDelta]
    applied = apply_deltas(lm.model, deltas)

Statistics (per model and layer) and context templates are computed once and cached.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from factedit.delta import WeightDelta
from factedit.errors import FactEditError, NumericalError
from factedit.methods.rome import RomeHParams, compute_rome
from factedit.methods.templates import context_templates
from factedit.models.loading import LoadedModel
from factedit.spec import EditRequest
from factedit.stats.choice import effective_corpus
from factedit.stats.moment import second_moment

#: An update with ‖ΔW‖/‖W‖ above this is refused unless explicitly allowed (the signature
#: of a "disabling edit"); see the README's "what can go wrong".
LARGE_UPDATE_RATIO = 1.0


class Editor:
    """Computes deltas for edit requests at resolved layers with one method."""

    def __init__(
        self,
        lm: LoadedModel,
        *,
        method: str = "rome",
        layers: Sequence[int] | str = "auto",
        hparams: Mapping[str, Any] | None = None,
        corpus: Sequence[str | Path] | None = None,
        seed: int = 0,
        requests: Sequence[EditRequest] = (),
        allow_large_updates: bool = False,
    ) -> None:
        if method != "rome":
            raise FactEditError(f'method "{method}" is not supported yet (supported: rome)')
        self.lm = lm
        self.method = method
        self.hparams = RomeHParams.from_overrides(hparams)
        self.corpus = effective_corpus(corpus, {"corpus": self.hparams.corpus})
        #: None lets the statistics pick the corpus kind's default count (fewer tokens for a
        #: corpus sampled from the model); an explicit hparams.mom2_n_tokens always wins
        self.n_tokens = self.hparams.mom2_n_tokens if "mom2_n_tokens" in (hparams or {}) else None
        self.seed = seed
        self.allow_large_updates = allow_large_updates
        self.layers, self.layer_reason = resolve_layers(lm, layers, requests)
        if len(self.layers) != 1:
            raise FactEditError(
                f"ROME edits exactly one layer; got layers {list(self.layers)} "
                "(several layers is MEMIT, not supported yet)"
            )
        self._templates: list[str] | None = None
        self._statistics: dict[int, torch.Tensor] = {}

    @property
    def layer(self) -> int:
        return self.layers[0]

    def templates(self) -> list[str]:
        if self._templates is None:
            hp = self.hparams
            self._templates = context_templates(
                self.lm,
                hp.context_template_lengths,
                hp.context_templates_per_length,
                seed=self.seed,
            )
        return self._templates

    def statistics(self, layer: int) -> torch.Tensor:
        """C = E[k kᵀ] for ``layer`` (cached on disk per model, layer and corpus).

        The corpus: ``corpus`` / ``hparams.corpus`` (files or ``"model"``), else the fallback
        order of :func:`factedit.stats.choice.choose_corpus`, decided once per editor (the
        corpus is not looked for again at every edit).
        """
        if layer not in self._statistics:
            self._statistics[layer] = second_moment(
                self.lm,
                layer,
                corpus=self.corpus,
                n_tokens=self.n_tokens,
                dtype=self.hparams.mom2_dtype,
            )
        return self._statistics[layer]

    def compute(self, request: EditRequest) -> list[WeightDelta]:
        """Deltas realising ``request`` on the model as it is now (the model is not changed)."""
        C = self.statistics(self.layer)
        templates = self.templates()
        torch.manual_seed(self.seed)
        result = compute_rome(self.lm, request, self.layer, C, templates, self.hparams)
        delta = result.delta
        delta.check_finite()
        ratio = delta.meta["relative_norm"]
        if ratio > LARGE_UPDATE_RATIO and not self.allow_large_updates:
            raise NumericalError(
                f'the update for subject "{request.subject}" has ‖ΔW‖/‖W‖ = {ratio:.2f} '
                f"(> {LARGE_UPDATE_RATIO}), the signature of a model-disabling edit; the model "
                "was not changed (pass --allow-large-updates to apply it anyway)"
            )
        return [delta]


def resolve_layers(
    lm: LoadedModel, layers: Sequence[int] | str, requests: Sequence[EditRequest]
) -> tuple[tuple[int, ...], str]:
    """Concrete layers and a one-line reason.

    ``"auto"`` takes, in order: the preset's recorded layer (chosen from its aggregate trace
    and the selectivity of its keys, see the README); else this model's cached aggregate
    trace (``factedit trace --facts``, the MLP peak at the last subject token); else a causal
    trace of the requests themselves.
    """
    if layers != "auto":
        chosen = tuple(int(x) for x in layers)
        for layer in chosen:
            lm.arch.layer_name(layer)  # validates the index
        return chosen, "given in the spec / on the command line"
    from factedit.trace.recommend import recommend_layer

    if lm.default_layer is not None:
        layer = lm.default_layer
        owner = f" by preset {lm.preset}" if lm.preset else ""
        reason = (
            f"layers: auto -> layer {layer}, recorded for these weights{owner} (among the "
            "layers where causal tracing finds the MLP effect at the last subject token within "
            "15% of its peak, the one whose keys leak least into other subjects)"
        )
    else:
        layer, reason = recommend_layer(lm, requests)
        reason = f"layers: auto -> {reason}"
    return (layer,), reason
