"""One ``factedit probe`` run as a library call: check, load, read activations, probe, write.

    outcome = run_probe(ProbeJob(data=Path("task.jsonl"), model="gemma-3-270m"))
    outcome.data        # the factedit.probe/1 JSON (see factedit.probing.report)
    outcome.files       # probe.json, probe.png, probe.svg under job.out

:func:`load_task` reads and checks the data (a JSONL file, or a relation of a facts file)
and :func:`check_job` the options, before any model loads: bad data costs a second. The
activations come from :func:`~factedit.probing.activations.read_activations` (one forward
pass per batch for all layers, cached); everything after them is CPU work on [N, L, d].
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from factedit.console import info
from factedit.errors import ProbeDataError
from factedit.figures import write_figure
from factedit.models.loading import LoadedModel
from factedit.paths import atomic_write_text
from factedit.probing.activations import SITES, TOKENS, read_activations
from factedit.probing.data import ProbeExample, check_task, label_counts, read_jsonl
from factedit.probing.edited import (
    EditShift,
    EditTarget,
    edit_shift,
    final_probes,
    model_dir_edits,
    patch_edits,
    training_rows,
)
from factedit.probing.lens import label_token_ids, lens_summary, logit_lens
from factedit.probing.mix import EPOCHS, cumulative_scores, scalar_mix
from factedit.probing.plot import probe_figure
from factedit.probing.report import probe_json
from factedit.probing.tasks import MIN_LABEL_COUNT, build_task, find_relation, read_facts
from factedit.probing.train import grouped_splits, probe_layers

Loader = Callable[..., LoadedModel]


@dataclass(frozen=True)
class ProbeJob:
    """The options of ``factedit probe``: ``data`` (JSONL) or ``facts`` + ``relation``."""

    data: Path | None = None
    facts: Path | None = None
    relation: str | None = None
    min_count: int = MIN_LABEL_COUNT
    model: str | None = None
    device: str = "auto"
    dtype: str = "float32"
    trust_remote_code: bool = False
    out: Path = Path("out/probe")
    site: str = "residual"
    token: str = "last"
    seeds: int = 5
    test_size: float = 0.25
    lens: bool = False
    patch: Path | None = None
    edited: Path | None = None
    batch_size: int = 16
    mix: bool = True
    mix_epochs: int = EPOCHS
    cache: bool = True
    json_copy: Path | None = None


@dataclass
class ProbeTask:
    """The examples to probe and where they came from."""

    examples: list[ProbeExample]
    source: str
    kind: str
    relation: str | None = None
    dropped: dict[str, int] = field(default_factory=dict)

    def describe(self, min_count: int) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "kind": self.kind}
        if self.relation is not None:
            out.update(relation=self.relation, min_count=min_count, dropped_labels=self.dropped)
        out.update(
            examples=len(self.examples),
            spans=len({e.group for e in self.examples}),
            labels=label_counts(self.examples),
        )
        return out


@dataclass
class ProbeOutcome:
    data: dict[str, Any]
    files: list[Path]
    json_text: str


def load_task(job: ProbeJob) -> ProbeTask:
    """The examples of ``job`` (JSONL, or a relation of a facts file), checked."""
    if (job.data is None) == (job.facts is None):
        raise ProbeDataError("give either DATA (a JSONL file) or --facts FILE --relation R")
    if job.data is not None:
        task = ProbeTask(read_jsonl(job.data), str(job.data), "jsonl")
    else:
        if not job.relation:
            raise ProbeDataError("--facts needs --relation R (--list-relations shows them)")
        kind, facts = read_facts(job.facts)
        name = find_relation(facts, job.relation)
        examples, dropped = build_task(facts, name, job.min_count)
        task = ProbeTask(examples, str(job.facts), kind, name, dropped)
    check_task(task.examples, task.source)
    return task


def check_job(job: ProbeJob) -> ProbeTask:
    """Every check that needs no model; returns the task."""
    if job.site not in SITES:
        raise ProbeDataError(f"--site {job.site}: choose one of {', '.join(SITES)}")
    if job.token not in TOKENS:
        raise ProbeDataError(f"--token {job.token}: choose one of {', '.join(TOKENS)}")
    if job.seeds < 1 or job.batch_size < 1 or job.min_count < 1 or job.mix_epochs < 1:
        raise ProbeDataError("--seeds, --batch-size, --min-count and --mix-epochs must be ≥ 1")
    if not 0 < job.test_size < 1:
        raise ProbeDataError("--test-size must be a fraction between 0 and 1")
    if job.patch is not None and job.edited is not None:
        raise ProbeDataError("give --patch FILE or --edited DIR, not both")
    return load_task(job)


def _load(job: ProbeJob, load: Loader, ref: str | None) -> LoadedModel:
    return load(ref, device=job.device, dtype=job.dtype, trust_remote_code=job.trust_remote_code)


def _edit_source(job: ProbeJob) -> tuple[Any, list[EditTarget]] | None:
    """(the patch or None, the edits) of ``--patch`` / ``--edited``; read before loading."""
    if job.patch is not None:
        from factedit.patch.core import Patch

        patch = Patch.load(job.patch)
        return patch, patch_edits(patch.info, str(job.patch))
    if job.edited is not None:
        return None, model_dir_edits(job.edited)
    return None


def probe_edit(
    lm: LoadedModel,
    job: ProbeJob,
    task: ProbeTask,
    x: np.ndarray,
    source: tuple[Any, list[EditTarget]],
    load: Loader,
) -> EditShift:
    """Probes fitted on the unedited model, applied at the edited subjects after the edit."""
    patch, edits = source
    labels = [e.label for e in task.examples]
    probes = final_probes(x, labels, training_rows(task.examples, edits))
    examples = [e.example() for e in edits]

    def read(model: LoadedModel) -> np.ndarray:
        acts = read_activations(
            model, examples, job.site, job.token, batch_size=job.batch_size, cache=job.cache
        )
        return acts.values.numpy()

    before = read(lm)
    if patch is not None:
        with patch.applied(lm):
            after = read(lm)
    else:
        after = read(_load(job, load, str(job.edited)))
    return edit_shift(probes, before, after, edits)


def _lens(lm: LoadedModel, job: ProbeJob, task: ProbeTask, residual: Any) -> list[dict]:
    """The logit lens per layer on the residual representation of the span."""
    if job.site != "residual":
        residual = read_activations(
            lm, task.examples, "residual", job.token, batch_size=job.batch_size, cache=job.cache
        ).values
    ids = label_token_ids(lm.tokenizer, [e.label for e in task.examples])
    return lens_summary(*logit_lens(lm, residual, ids))


def _settings(job: ProbeJob) -> dict[str, Any]:
    return {
        "site": job.site,
        "token": job.token,
        "seeds": job.seeds,
        "test_size": job.test_size,
        "split": "by span string (GroupShuffleSplit)",
        "probe": "logistic regression on standardised features (C=1, max_iter=1000)",
        "mix_epochs": job.mix_epochs if job.mix else None,
        "lens": job.lens,
    }


def run_probe(job: ProbeJob, *, load: Loader | None = None) -> ProbeOutcome:
    """Check ``job``, load the model, probe every layer, write JSON, PNG and SVG."""
    if load is None:
        from factedit.models.loading import load_model as load
    task = check_job(job)
    source = _edit_source(job)
    lm = _load(job, load, job.model)
    clock = {"start": time.monotonic()}
    acts = read_activations(
        lm, task.examples, job.site, job.token, batch_size=job.batch_size, cache=job.cache
    )
    clock["activations"] = time.monotonic()
    info(
        f"activations {'read from the cache' if acts.cached else 'computed and cached'}: "
        f"{len(task.examples)} examples x {acts.values.shape[1]} layers ({job.site}, "
        f"{job.token} token); training probes ({job.seeds} seeds)"
    )
    x = acts.values.numpy()
    labels = [e.label for e in task.examples]
    groups = [e.group for e in task.examples]
    splits = grouped_splits(groups, job.seeds, job.test_size)
    scores = probe_layers(x, labels, groups, splits)
    mix = scalar_mix(x, labels, splits, epochs=job.mix_epochs) if job.mix else None
    cum = (
        cumulative_scores(x, labels, splits, scores.majority, epochs=job.mix_epochs)
        if job.mix
        else None
    )
    clock["probes"] = time.monotonic()
    lens = _lens(lm, job, task, acts.values) if job.lens else None
    shift = probe_edit(lm, job, task, x, source, load) if source is not None else None
    clock["end"] = time.monotonic()
    meta = _meta(job, task, lm, acts, clock)
    data = probe_json(meta, scores, labels=labels, mix=mix, cumulative=cum, lens=lens, shift=shift)
    return _write(job, data)


def _meta(job: ProbeJob, task: ProbeTask, lm: LoadedModel, acts: Any, clock: dict) -> dict:
    meta: dict[str, Any] = {
        "task": task.describe(job.min_count),
        "model": {"name": lm.name, "identity": lm.identity, "layers": lm.arch.num_layers},
        "settings": _settings(job),
        "cache": {"key": acts.key, "hit": acts.cached},
        "seconds": {
            "activations": round(clock["activations"] - clock["start"], 2),
            "probes": round(clock["probes"] - clock["activations"], 2),
            "total": round(clock["end"] - clock["start"], 2),
        },
    }
    if job.patch is not None or job.edited is not None:
        meta["edit"] = {"source": str(job.patch or job.edited)}
    return meta


def _write(job: ProbeJob, data: dict[str, Any]) -> ProbeOutcome:
    text = json.dumps(data, indent=1) + "\n"
    files = [job.out / "probe.json"]
    atomic_write_text(files[0], text)
    if job.json_copy is not None:
        atomic_write_text(job.json_copy, text)
    files += write_figure(probe_figure(data), job.out / "probe")
    return ProbeOutcome(data, files, text)
