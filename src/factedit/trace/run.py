"""One ``factedit trace`` run as a library call: check, load, trace, write the outputs.

    outcome = run_trace(TraceJob(prompt="The Eiffel Tower is in", subject="The Eiffel Tower"))
    outcome.result      # TraceResult (one prompt) or AggregateResult (with ``facts``)
    outcome.files       # trace.{png,svg,json} (or aggregate.{png,svg,json}) under job.out
    outcome.json_text   # the JSON that was written (for ``--json -``)

:func:`check_trace_job` does every check that needs no model (the options, whether the
subject occurs in the prompt), so a mistake costs a second, not a model load. With ``facts``
the run averages over the known facts the model predicts (:func:`aggregate_trace`), keeps
each fact's trace in ``out/facts/`` so that a rerun resumes, and caches the aggregate for
``layers: auto``. Progress and what was resumed or cached go to stderr (:func:`info`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factedit.console import info
from factedit.errors import FactEditError
from factedit.figures import write_figure
from factedit.models import load_model
from factedit.models.loading import LoadedModel
from factedit.paths import atomic_write_text
from factedit.tokens import subject_char_span
from factedit.trace.aggregate import AggregateResult, aggregate_trace, load_known_facts
from factedit.trace.fact import trace_fact
from factedit.trace.noise import parse_noise
from factedit.trace.patching import KINDS
from factedit.trace.recommend import save_aggregate
from factedit.trace.render import aggregate_figure, trace_figure
from factedit.trace.result import TraceResult

#: ``load(reference, device=..., dtype=..., trust_remote_code=...)``: how a run gets its model.
Loader = Callable[..., LoadedModel]


@dataclass(frozen=True)
class TraceJob:
    """What to trace and how (the options of ``factedit trace``).

    Either ``prompt`` and ``subject`` (one fact) or ``facts`` (a known-facts JSON file).
    ``kinds`` is comma-separated text, as given to ``--kind``; ``json_copy`` is a second
    place to write the JSON (the ``--json`` path).
    """

    prompt: str | None = None
    subject: str | None = None
    target: str | None = None
    kinds: str = "hidden,mlp,attn"
    samples: int = 10
    noise: str = "3x"
    window: int = 10
    seed: int = 0
    model: str | None = None
    device: str = "auto"
    dtype: str = "float32"
    trust_remote_code: bool = False
    #: accelerate placement (:mod:`factedit.models.placement`); None: one device
    device_map: Any = None
    max_memory: Any = None
    out: Path = Path("out/trace")
    facts: Path | None = None
    limit: int | None = None
    json_copy: Path | None = None
    engine: str = "fast"


@dataclass
class TraceOutcome:
    """What a run produced: the trace (or aggregate), the files written, and the JSON text."""

    result: TraceResult | AggregateResult
    files: list[Path]
    json_text: str


def parse_kinds(text: str) -> tuple[str, ...]:
    """``"hidden,mlp"`` -> ``("hidden", "mlp")``; an unknown or empty list is a FactEditError."""
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise FactEditError(f"--kind {text}: choose from {','.join(KINDS)} (comma-separated)")
    return kinds


def check_trace_job(job: TraceJob) -> tuple[str, ...]:
    """Every check that needs no model; returns the parsed kinds. Raises FactEditError."""
    kinds = parse_kinds(job.kinds)
    parse_noise(job.noise)
    if job.samples < 1 or job.window < 1:
        raise FactEditError("--samples and --window must be at least 1")
    if job.facts is not None and (job.prompt is not None or job.subject is not None):
        raise FactEditError("give either PROMPT --subject S or --facts FILE, not both")
    if job.facts is None:
        if job.prompt is None or job.subject is None:
            raise FactEditError("give a PROMPT and its --subject (or --facts FILE)")
        subject_char_span(job.prompt, job.subject)  # a missing subject fails before loading
    if job.limit is not None and job.limit < 1:
        raise FactEditError("--limit must be at least 1")
    return kinds


def run_trace(job: TraceJob, *, load: Loader = load_model) -> TraceOutcome:
    """Check ``job``, load the model with ``load``, trace, and write figures and JSON."""
    kinds = check_trace_job(job)
    settings = {
        "kinds": kinds,
        "samples": job.samples,
        "noise": job.noise,
        "window": job.window,
        "seed": job.seed,
    }
    if job.facts is not None:
        return _run_aggregate(job, job.facts, settings, load)
    return _run_single(job, settings, load)


def _load(job: TraceJob, load: Loader) -> LoadedModel:
    placement = {}
    if job.device_map is not None:
        placement = {"device_map": job.device_map, "max_memory": job.max_memory}
    return load(
        job.model,
        device=job.device,
        dtype=job.dtype,
        trust_remote_code=job.trust_remote_code,
        **placement,
    )


def _write_json(data: dict[str, Any], out_file: Path, copy: Path | None) -> str:
    """Write ``data`` as indented JSON to ``out_file`` (and ``copy``); returns the text."""
    text = json.dumps(data, indent=1) + "\n"
    atomic_write_text(out_file, text)
    if copy is not None:
        atomic_write_text(copy, text)
    return text


def _run_single(job: TraceJob, settings: dict[str, Any], load: Loader) -> TraceOutcome:
    """Trace ``job.prompt`` for ``job.subject``: writes ``trace.{png,svg,json}``."""
    assert job.prompt is not None and job.subject is not None  # check_trace_job made sure
    lm = _load(job, load)
    result = trace_fact(lm, job.prompt, job.subject, job.target, engine_name=job.engine, **settings)
    files = write_figure(trace_figure(result), job.out / "trace")
    text = _write_json(result.to_json(), job.out / "trace.json", job.json_copy)
    return TraceOutcome(result, [*files, job.out / "trace.json"], text)


def _run_aggregate(
    job: TraceJob, facts: Path, settings: dict[str, Any], load: Loader
) -> TraceOutcome:
    """Average over the known facts in ``facts``: writes ``aggregate.{png,svg,json}``, keeps
    each fact's trace in ``out/facts/`` and caches the aggregate for ``layers: auto``."""
    known = load_known_facts(facts)
    lm = _load(job, load)

    def progress_line(i: int, n: int, result: TraceResult) -> None:
        info(f"traced {i + 1}/{n}: {result.prompt!r} -> {result.answer.strip()!r}")

    checkpoints = job.out / "facts"
    agg = aggregate_trace(
        lm,
        known,
        limit=job.limit,
        engine_name=job.engine,
        on_fact=progress_line,
        checkpoint_dir=checkpoints,
        **settings,
    )
    if agg.settings["resumed"]:
        info(f"{agg.settings['resumed']} of those facts were read back from {checkpoints}")
    info(
        f"the model predicts {len(agg.facts)} of the {agg.scanned} facts scanned; "
        f"averaged over those {len(agg.facts)}"
    )
    agg.settings["facts_file"] = str(facts)
    if (cached := save_aggregate(lm, agg)) is not None:
        info(f"cached for layers: auto at {cached}")
    files = write_figure(aggregate_figure(agg), job.out / "aggregate")
    text = _write_json(agg.to_json(), job.out / "aggregate.json", job.json_copy)
    return TraceOutcome(agg, [*files, job.out / "aggregate.json"], text)
