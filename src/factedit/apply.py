"""Apply a spec's edits to a model one after another, measuring each before and after.

run = apply_spec(lm, spec, session)     # model now edited; session.revert() undoes it
save_edited_model(lm, out_dir, run)     # HF directory (safetensors) + spec + patch, atomic

The loop is :func:`factedit.edit_loop.apply_in_order` (the one ``eval --sequential`` uses):
every edit is measured on the unedited model and again on the model carrying all of them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from factedit import __version__
from factedit.console import progress
from factedit.delta import WeightDelta
from factedit.edit_loop import EditStep, apply_in_order
from factedit.errors import SpecError
from factedit.evaluate import RequestMeasurement, generate_text, measure_requests, request_metrics
from factedit.evaluate.metrics import summarize
from factedit.evaluate.probe import FluencyProbe, probe_entropy
from factedit.evaluate.verdict import Verdict, edit_verdict
from factedit.models.loading import LoadedModel
from factedit.patch.model_dir import write_model_dir
from factedit.session import EditSession
from factedit.spec import EditRequest, EditSpec
from factedit.tokens import prompt_token_ids

GENERATION_TOKENS = 20


@dataclass
class Observation:
    """A request measured on one model state, with a greedy generation of its prompt."""

    measurement: RequestMeasurement
    generation: str


@dataclass
class EditRecord:
    """One edit: measurements and a greedy generation before and after, and its deltas.

    ``status`` "applied" or "refused" (``reason`` says why; nothing was changed).
    """

    request: EditRequest
    before: RequestMeasurement
    after: RequestMeasurement
    generation_before: str
    generation_after: str
    deltas: list[WeightDelta]
    seconds: float
    status: str = "applied"
    reason: str | None = None
    batch: int = 0

    @classmethod
    def from_step(cls, step: EditStep, before: Observation, after: Observation) -> EditRecord:
        return cls(
            step.request,
            before.measurement,
            after.measurement,
            before.generation,
            after.generation,
            step.deltas,
            step.seconds,
            step.status,
            step.reason,
            step.batch,
        )

    @property
    def verdict(self) -> Verdict:
        """Rewrite / paraphrases passed and neighbours kept, and the neighbours it changed."""
        return edit_verdict(self.before, self.after)

    def to_dict(self) -> dict[str, Any]:
        return {
            "request": self.request.to_dict(),
            "status": self.status,
            "reason": self.reason,
            "batch": self.batch,
            "verdict": self.verdict.to_dict(),
            "metrics": {
                "before": request_metrics(self.before),
                "after": request_metrics(self.after),
            },
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "generation": {"before": self.generation_before, "after": self.generation_after},
            "deltas": [d.meta for d in self.deltas],
            "seconds": self.seconds,
        }


@dataclass
class EditRun:
    spec: EditSpec
    session: EditSession
    records: list[EditRecord] = field(default_factory=list)
    fluency_probe: FluencyProbe | None = None

    @property
    def deltas(self) -> list[WeightDelta]:
        return [d for r in self.records for d in r.deltas]

    @property
    def refused(self) -> list[EditRecord]:
        return [r for r in self.records if r.status == "refused"]

    def evaluation_summary(self) -> dict[str, Any]:
        """What a patch records of this run: mean metrics (×100) of the applied edits on the
        unedited model and with the edits, the verdict totals and the fluency probe."""
        applied = [r for r in self.records if r.status != "refused"]
        return {
            "protocol": "factedit edit apply: teacher-forced probabilities of each edit's "
            "prompts, before any edit and after all of them",
            "edits": len(applied),
            "refused": len(self.refused),
            "before": summarize([request_metrics(r.before) for r in applied]),
            "after": summarize([request_metrics(r.after) for r in applied]),
            "verdict": verdict_totals(self.records),
            "fluency_probe": None if self.fluency_probe is None else self.fluency_probe.to_dict(),
        }

    def to_dict(self, lm: LoadedModel) -> dict[str, Any]:
        return {
            "schema": "factedit.edit/1",
            "factedit": __version__,
            "model": {
                "name": lm.name,
                "identity": lm.base_identity,
                "edited_identity": lm.identity,
            },
            "method": self.session.method,
            "layers": list(self.session.layers),
            "layer_reason": self.session.layer_reason,
            "hparams": self.session.hparams.to_dict(),
            "seed": self.session.seed,
            "refused": len(self.refused),
            "edits": [r.to_dict() for r in self.records],
            "fluency_probe": None if self.fluency_probe is None else self.fluency_probe.to_dict(),
        }


def verdict_totals(records: Sequence[EditRecord]) -> dict[str, list[int]]:
    """[passed, of] per verdict group (rewrite, paraphrases, neighbours_kept), summed over the
    records that were applied."""
    verdicts = [r.verdict for r in records if r.status != "refused"]
    return {
        name: [
            sum(getattr(v, name)[0] for v in verdicts),
            sum(getattr(v, name)[1] for v in verdicts),
        ]
        for name in ("rewrite", "paraphrases", "neighbours_kept")
    }


#: Tokens kept free after the longest prompt: the target, and the context-template prefix that
#: ROME puts in front of the rewrite prompt.
PROMPT_RESERVE = 32


def _prompt_fields(req: EditRequest) -> list[tuple[str, str]]:
    """(field name, prompt) for every prompt of ``req`` a model will read."""
    fields = [("prompt", req.rewrite_prompt)]
    for name in ("paraphrases", "neighborhood", "generation_prompts"):
        fields += [(f"{name}[{j}]", p) for j, p in enumerate(getattr(req, name))]
    return fields


def check_prompt_lengths(lm: LoadedModel, spec: EditSpec, *, offset: int = 0) -> None:
    """Every prompt must fit the model's context with :data:`PROMPT_RESERVE` tokens to spare.

    Raises :class:`SpecError` naming the file, the edit (numbered from the start of the file,
    hence ``offset``) and the field, before any model work.
    """
    limit = lm.max_length
    file = spec.source.name if spec.source else "<spec>"
    for i, req in enumerate(spec.edits):
        for field_name, prompt in _prompt_fields(req):
            n = len(prompt_token_ids(lm.tokenizer, prompt))
            if n + PROMPT_RESERVE > limit:
                raise SpecError(
                    f'{file}: {req.label(offset + i)}, field "{field_name}": prompt is {n} '
                    f"tokens, the model's context is {limit} (with {PROMPT_RESERVE} kept for "
                    "the target); shorten it"
                )


def _observe(lm: LoadedModel, requests: Sequence[EditRequest]) -> list[Observation]:
    """Scores and the greedy continuation of each rewrite prompt, the requests pooled."""
    prompts = [r.rewrite_prompt for r in requests]
    greedy = generate_text(lm, prompts, max_new_tokens=GENERATION_TOKENS)
    return [Observation(m, g) for m, g in zip(measure_requests(lm, requests), greedy, strict=True)]


def apply_spec(
    lm: LoadedModel, spec: EditSpec, session: EditSession, *, probe: bool = True
) -> EditRun:
    """Compute and apply every edit in order; on error, everything applied is reverted.

    A refused edit is recorded (``status`` "refused") and the others go on. With ``probe``,
    the fluency probe (:mod:`factedit.evaluate.probe`) runs before the first edit and after
    the last; its result is ``run.fluency_probe`` (the caller reports it).
    """
    run = EditRun(spec=spec, session=session)
    try:
        before = probe_entropy(lm) if probe else None
        with progress() as bar:
            task = bar.add_task("editing", total=len(spec.edits))
            ordered = apply_in_order(
                session,
                spec.edits,
                lambda _, requests: _observe(lm, requests),
                on_edit=lambda index: bar.update(task, completed=index + 1),
            )
        if before is not None:
            run.fluency_probe = FluencyProbe(before, probe_entropy(lm))
    except BaseException:
        session.revert()
        raise
    run.records = [
        EditRecord.from_step(step, b, a)
        for step, b, a in zip(ordered.steps, ordered.before, ordered.after, strict=True)
    ]
    return run


def save_edited_model(lm: LoadedModel, out: Path, run: EditRun, *, overwrite: bool) -> None:
    """Write the edited model as a Hugging Face directory, atomically
    (:func:`factedit.patch.model_dir.write_model_dir`), with ``factedit-spec.yaml`` (the
    resolved spec) and ``factedit-report.json`` beside the patch of the run's edits."""
    resolved = run.spec.to_dict()
    resolved["model"] = lm.name
    resolved["layers"] = list(run.session.layers)
    resolved["resolved"] = {
        "identity": lm.base_identity,
        "edited_identity": lm.identity,
        "layer_reason": run.session.layer_reason,
        "factedit": __version__,
    }
    write_model_dir(
        lm,
        out,
        run.session.patch(evaluation=run.evaluation_summary()),
        {
            "factedit-spec.yaml": yaml.safe_dump(resolved, sort_keys=False),
            "factedit-report.json": json.dumps(run.to_dict(lm), indent=2),
        },
        overwrite=overwrite,
    )
