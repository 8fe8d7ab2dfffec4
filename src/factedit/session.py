"""An edit session: one object owns the loaded model, the method and its per-layer state, and
the deltas applied so far.

    session = EditSession(lm, method="rome", layers="auto", hparams={}, corpus=None, seed=0)
    deltas = session.compute([request])     # list[WeightDelta]; the model is not changed
    session.apply(deltas)                   # W += ΔW; session.deltas lists what is applied
    session.revert()                        # every weight back, bit for bit
    session.save("edits.patch.safetensors")  # a factedit.patch.Patch; session.load(path)

Sequential methods (AlphaEdit) keep the keys of every applied edit in ``session.state``;
:meth:`EditSession.save` writes that state beside the deltas, :meth:`EditSession.load`
restores it, and a session on a model directory written by ``factedit edit apply --out``
continues from the state saved there (:data:`PATCH_FILE`).

:meth:`EditSession.compute` runs the method's guards: an update that is not finite or whose
‖ΔW‖/‖W‖ exceeds :data:`LARGE_UPDATE_RATIO` raises :class:`~factedit.errors.RefusedEdit`
(the model is untouched), which every report counts as refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from factedit.console import info
from factedit.delta import AppliedDeltas, WeightDelta, apply_deltas
from factedit.errors import FactEditError, PatchError, RefusedEdit
from factedit.methods.registry import load_method, method_info
from factedit.methods.state import MethodState, SequentialState
from factedit.models.loading import LoadedModel
from factedit.patch.core import PATCH_FILE, Patch, SavedState
from factedit.spec import EditRequest
from factedit.stats.choice import effective_corpus
from factedit.trace.recommend import resolve_layers

#: An update with ‖ΔW‖/‖W‖ above this is refused unless explicitly allowed (the signature
#: of a "disabling edit"; Gupta et al. 2024); see the README's "what can go wrong".
LARGE_UPDATE_RATIO = 1.0


class EditSession:
    """The model being edited, the method that computes deltas, and what is applied."""

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
        self.info = method_info(method)
        self.lm = lm
        self.method = self.info.name
        saved = self._saved_state(lm)
        # the spec's hparams over the saved stream's (an edited copy keeps its settings) over
        # the preset's recorded ones
        inherited = saved[1].get("hparams", {}) if saved is not None else {}
        hparams = {**self._recorded_hparams(lm), **inherited, **(hparams or {})}
        hp = self.info.hparams.from_overrides(hparams)
        #: None lets the statistics pick the corpus kind's default count (fewer tokens for a
        #: corpus sampled from the model); an explicit hparams.mom2_n_tokens always wins
        n_tokens = hp.mom2_n_tokens if "mom2_n_tokens" in (hparams or {}) else None
        corpus_used = effective_corpus(corpus, {"corpus": hp.corpus})
        self.state = MethodState(hp, corpus=corpus_used, n_tokens=n_tokens, seed=seed)
        self.seed = seed
        self.allow_large_updates = allow_large_updates
        if saved is not None and layers == "auto":
            layers = saved[1]["layers"]
        self.layers, self.layer_reason = resolve_layers(
            lm, layers, requests, window=self.info.n_layers is None
        )
        if saved is not None:
            self.restore_state(saved)
            self.layer_reason += f"; continuing the sequential state in {lm.source_dir}"
        self._check_layer_count()
        self._impl = load_method(self.method)
        self.applied = AppliedDeltas(lm.model)
        #: the requests whose deltas are applied, in order (what a saved patch lists)
        self.edits: list[EditRequest] = []
        self._computed: tuple[list[str], list[EditRequest]] | None = None

    def _recorded_hparams(self, lm: LoadedModel) -> dict[str, Any]:
        """The preset's recorded hyper-parameters for the multi-layer methods (else none)."""
        if self.info.n_layers is not None or not lm.default_memit_hparams:
            return {}
        return dict(lm.default_memit_hparams)

    def _saved_state(self, lm: LoadedModel) -> SavedState | None:
        """The sequential state saved in the model directory, if it is this method's."""
        patch = lm.source_dir / PATCH_FILE if lm.source_dir is not None else None
        if patch is None or not patch.is_file():
            return None
        try:
            saved = Patch.load(patch).state
        except PatchError as exc:
            raise FactEditError(f"{lm.source_dir} carries an unusable edit state: {exc}") from None
        if saved is None or saved[1].get("method") != self.method:
            return None
        info(f"{self.method}: {saved[1].get('n_edits', 0)} earlier edits' keys from {patch}")
        return saved

    def _check_layer_count(self) -> None:
        wanted = self.info.n_layers
        if wanted is not None and len(self.layers) != wanted:
            raise FactEditError(
                f"{self.method} edits exactly {wanted} layer{'s' if wanted > 1 else ''}; got "
                f"layers {list(self.layers)}"
            )
        offloaded = [
            layer
            for layer in self.layers
            if self.lm.arch.down_proj_weight(layer).device.type == "meta"
        ]
        if offloaded:
            raise FactEditError(
                f"layer{'s' if len(offloaded) > 1 else ''} {', '.join(map(str, offloaded))} "
                "of the edit sit offloaded (to the CPU or the disk) by the device map, where "
                "their weights cannot be changed: give --max-memory so that the edited layers "
                "fit on a device, or a device map that places them on one"
            )

    def default_batch_size(self, n_requests: int) -> int:
        """Requests per :meth:`compute` when the caller does not say: all of them for the
        batched methods (MEMIT, AlphaEdit, EMMET), one for ROME."""
        return max(1, n_requests) if self.info.batched else 1

    @property
    def hparams(self) -> Any:
        return self.state.hparams

    @property
    def deltas(self) -> list[WeightDelta]:
        """The deltas applied now, in order."""
        return list(self.applied.deltas)

    def compute(self, requests: Sequence[EditRequest]) -> list[WeightDelta]:
        """Deltas realising ``requests`` on the model as it is now (the model is unchanged).

        Raises :class:`RefusedEdit` when a guard refuses one of them.
        """
        deltas = self._impl.compute(self.lm, list(requests), self.layers, self.state)
        subjects = ", ".join(f'"{r.subject}"' for r in requests)
        for delta in deltas:
            self._guard(delta, subjects)
        self._computed = ([d.digest() for d in deltas], list(requests))
        return deltas

    def _guard(self, delta: WeightDelta, subjects: str) -> None:
        delta.check_finite()
        ratio = delta.meta.get("relative_norm", 0.0)
        if ratio > LARGE_UPDATE_RATIO and not self.allow_large_updates:
            raise RefusedEdit(
                f"the update for subject {subjects} has ‖ΔW‖/‖W‖ = {ratio:.2f} "
                f"(> {LARGE_UPDATE_RATIO}), the signature of a model-disabling edit; the model "
                "was not changed (pass --allow-large-updates to apply it anyway)"
            )

    def apply(self, deltas: Sequence[WeightDelta]) -> None:
        """W += ΔW for each delta, in order (all checked for NaN/Inf first), all or none:
        an error or Ctrl-C part-way leaves the weights as they were. A sequential method's
        staged keys for exactly these deltas join the session state."""
        batch = AppliedDeltas(self.lm.model)
        try:
            apply_deltas(self.lm.model, deltas, into=batch)
        except BaseException:
            batch.revert()
            raise
        self.applied.absorb(batch)
        self.state.commit(deltas)
        computed, self._computed = self._computed, None
        if computed is not None and computed[0] == [d.digest() for d in deltas]:
            self.edits.extend(computed[1])

    def edit(self, requests: Sequence[EditRequest]) -> list[WeightDelta]:
        """Compute and apply: the model carries ``requests`` afterwards."""
        deltas = self.compute(requests)
        self.apply(deltas)
        return deltas

    def revert(self) -> None:
        """Undo every applied delta (the weights are restored bit for bit) and forget their
        keys (the sequential state is back to where the session started)."""
        self.applied.revert()
        self.state.reset_sequential()
        self.edits.clear()

    def saved_state(self) -> SavedState | None:
        """The sequential state to save with the deltas (None when the method keeps none)."""
        seq = self.state.sequential
        if not seq.grams:
            return None
        meta = {**seq.meta(), "method": self.method, "layers": list(self.layers)}
        meta["n_edits_before"] = self.state.sequential_start.n_edits
        meta["base_identity"] = self.lm.base_identity
        defaults = type(self.hparams)().to_dict()  # keep what differs: the stream's settings
        meta["hparams"] = {k: v for k, v in self.hparams.to_dict().items() if v != defaults[k]}
        return seq.tensors(), meta

    def restore_state(self, saved: SavedState) -> None:
        """Continue from a saved sequential state (same method and layers, else an error)."""
        tensors, meta = saved
        if meta.get("method") != self.method or list(meta.get("layers", [])) != list(self.layers):
            raise FactEditError(
                f"the saved edit state is for {meta.get('method')} on layers {meta.get('layers')}, "
                f"this session is {self.method} on layers {list(self.layers)}"
            )
        self.state.sequential = SequentialState.from_saved(tensors, meta)
        self.state.mark_sequential_start()

    def patch(self, **options: Any) -> Patch:
        """The applied deltas, their edits and the sequential state as a patch
        (``options``: :meth:`factedit.patch.Patch.from_session`'s)."""
        return Patch.from_session(self, **options)

    def save(self, path: str | Path, **options: Any) -> Patch:
        """Write :meth:`patch` to ``path``, atomically."""
        patch = self.patch(**options)
        patch.save(path)
        return patch

    def load(self, path: str | Path) -> list[WeightDelta]:
        """Apply a patch saved by :meth:`save` (checked against this model first) and
        continue its sequential state."""
        patch = Patch.load(path)
        problems = patch.problems(self.lm.model)
        if problems:
            raise PatchError(f"{path} does not fit this model: {problems[0]}")
        self.apply(patch.deltas)
        self.edits.extend(EditRequest(**entry) for entry in patch.info.get("edits", []))
        if patch.state is not None:
            self.restore_state(patch.state)
        return patch.deltas
