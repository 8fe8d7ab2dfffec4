"""Probing an edit: probes trained on the unedited model, applied to the edited one.

    edits = patch_edits(patch.info, "eiffel.patch.safetensors")   # EditTarget per edit
    probes = final_probes(x, labels, keep)           # one probe per layer, all kept rows
    shift = edit_shift(probes, before, after, edits)  # before / after: [E, L, d]
    shift.moved      # [L] fraction of eligible edits whose prediction went true -> new

An edit's example is its prompt up to the end of its subject (as the tasks built from facts,
:mod:`factedit.probing.tasks`). The probes are fitted on every example of the task except
those whose span string is an edited subject (the probe must not have memorised them). An
edit is *eligible* when its ``target_new`` is one of the probe's labels (otherwise no probe
can predict it); ``moved`` counts the eligible edits whose prediction on the unedited model
is ``target_true`` and on the edited model ``target_new``; ``to_new`` those predicted
``target_new`` after the edit, ``was_true`` those predicted ``target_true`` before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from factedit.errors import ProbeDataError
from factedit.probing.data import ProbeExample
from factedit.probing.train import DEFAULT_C, MAX_ITER, fit_probe


@dataclass(frozen=True)
class EditTarget:
    """One edit of a patch: ``template`` is its prompt with "{}" for the subject."""

    subject: str
    template: str
    target_true: str | None
    target_new: str

    def example(self) -> ProbeExample:
        """The prompt up to the end of the subject, the subject as the span."""
        start = self.template.index("{}")
        text = self.template[:start] + self.subject
        return ProbeExample(text, start, len(text), self.target_true or self.target_new)


def patch_edits(info: Mapping[str, Any], source: str) -> list[EditTarget]:
    """The edits a patch's provenance lists (``info["edits"]``); an error when it has none."""
    edits = []
    for i, entry in enumerate(info.get("edits") or []):
        subject, prompt = entry.get("subject"), entry.get("prompt")
        new = entry.get("target_new")
        if not (isinstance(subject, str) and isinstance(prompt, str) and isinstance(new, str)):
            raise ProbeDataError(f"{source}: edit #{i} lacks its subject, prompt or target_new")
        if "{}" not in prompt:
            prompt = prompt.replace(subject, "{}", 1) if subject in prompt else prompt
        if "{}" not in prompt:
            raise ProbeDataError(f'{source}: edit #{i}: the prompt has no "{{}}" for the subject')
        true = entry.get("target_true")
        edits.append(EditTarget(subject, prompt, true.strip() if true else None, new.strip()))
    if not edits:
        raise ProbeDataError(f"{source}: the patch lists no edits to probe")
    return edits


def model_dir_edits(directory: str | Path) -> list[EditTarget]:
    """The edits of a model directory written by factedit (``edit apply --out DIR``)."""
    from factedit.patch.core import PATCH_FILE, Patch

    path = Path(directory) / PATCH_FILE
    if not path.is_file():
        raise ProbeDataError(
            f"{directory}: no {PATCH_FILE}; --edited needs a directory written by "
            "`factedit edit apply --out` or `factedit patch apply`"
        )
    return patch_edits(Patch.load(path).info, str(path))


def training_rows(examples: Sequence[ProbeExample], edits: Sequence[EditTarget]) -> np.ndarray:
    """Indices of the examples whose span string is no edited subject."""
    edited = {e.subject for e in edits}
    return np.array([i for i, e in enumerate(examples) if e.group not in edited], dtype=int)


def final_probes(
    x: np.ndarray, labels: Sequence[str], rows: np.ndarray, *, c: float = DEFAULT_C
) -> list:
    """One probe per layer of ``x`` [N, L, d], fitted on ``rows``."""
    y = np.asarray(labels, dtype=object)[rows]
    return [fit_probe(x[rows, layer], y, c, MAX_ITER) for layer in range(x.shape[1])]


@dataclass
class EditShift:
    """Per layer [L]: ``moved``, ``to_new``, ``was_true`` over the ``eligible`` edits."""

    edits: int
    eligible: list[int]
    moved: np.ndarray
    to_new: np.ndarray
    was_true: np.ndarray


def edit_shift(
    probes: Sequence, before: np.ndarray, after: np.ndarray, edits: Sequence[EditTarget]
) -> EditShift:
    """Apply the per-layer ``probes`` to the edited subjects' representations before and
    after the edit (each [E, L, d]); fractions over the eligible edits (0 when none)."""
    labels = _probe_labels(probes)
    eligible = [i for i, e in enumerate(edits) if e.target_new in labels]
    n_layers = len(probes)
    moved, to_new, was_true = (np.zeros(n_layers) for _ in range(3))
    if eligible:
        new = np.array([edits[i].target_new for i in eligible], dtype=object)
        true = np.array([edits[i].target_true or "" for i in eligible], dtype=object)
        for layer, probe in enumerate(probes):
            pred_before = probe.predict(before[eligible, layer]).astype(object)
            pred_after = probe.predict(after[eligible, layer]).astype(object)
            moved[layer] = np.mean((pred_before == true) & (pred_after == new))
            to_new[layer] = np.mean(pred_after == new)
            was_true[layer] = np.mean(pred_before == true)
    return EditShift(len(edits), eligible, moved, to_new, was_true)


def _probe_labels(probes: Sequence) -> set[str]:
    """Every label any of the probes can predict."""
    labels: set[str] = set()
    for probe in probes:
        classes = getattr(probe, "classes_", None)
        labels |= {str(c) for c in classes} if classes is not None else {probe.label}
    return labels
