"""One ``factedit eval`` run as a library call: plan it, run it, get the report.

    plan = plan_eval(EvalJob(source=Path("facts.yaml"), thresholds={"es": 95}))
    outcome = run_eval(plan)              # loads the model, edits, measures
    outcome.report, outcome.shortfalls    # factedit.eval/1 dict, the gate's shortfalls

:func:`plan_eval` does every check that needs no model (the spec, the method, the gate's
metrics, ``--edited``), so a mistake costs a second, not a model load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from factedit.console import info, progress
from factedit.errors import FactEditError
from factedit.evaluate.gate import GateError, RefusedShortfall, Shortfall, check_gate
from factedit.evaluate.greedy import ANSWER_TOKENS
from factedit.evaluate.journal import EvalJournal
from factedit.evaluate.perplexity import HELDOUT_TOKENS, HeldOut, heldout_text
from factedit.evaluate.probe import report_probe
from factedit.evaluate.runner import (
    EvalOptions,
    EvalResult,
    run_edited,
    run_independent,
    run_sequential,
)
from factedit.methods.registry import method_info
from factedit.models.loading import LoadedModel, load_for_spec
from factedit.report import build_report
from factedit.spec import EditSpec, load_spec
from factedit.stats.choice import CorpusChoice, check_corpus, default_n_tokens
from factedit.stats.corpus import stream_tokens_used
from factedit.stats.moment import SEQ_LEN as C_SEQ_LEN

if TYPE_CHECKING:
    from factedit.session import EditSession

_GENERATION_METRICS = ("ge", "mention_new", "mention_true")
_PROBABILITY_METRICS = ("es", "em", "ps", "pm", "s", "mention_true")


@dataclass(frozen=True)
class EvalJob:
    """What to evaluate and how (the options of ``factedit eval``)."""

    source: Path
    method: str | None = None
    layers: tuple[int, ...] | str | None = None
    limit: int | None = None
    offset: int = 0
    model: str | None = None
    device: str = "auto"
    dtype: str = "float32"
    #: accelerate placement (:mod:`factedit.models.placement`; None: the spec's, else one device)
    device_map: str | dict[str, Any] | None = None
    max_memory: dict[Any, Any] | None = None
    trust_remote_code: bool = False
    independent: bool | None = None
    edited: Path | None = None
    corpus: list[str] | None = None
    generation: bool = True
    #: greedy tokens per prompt for the generation-based protocol (0: not measured)
    answer_tokens: int = ANSWER_TOKENS
    #: tokens of held-out text whose perplexity is measured before and after (0: not measured)
    heldout_tokens: int = HELDOUT_TOKENS
    allow_large_updates: bool = False
    thresholds: dict[str, float] = field(default_factory=dict)
    #: edits per batch of a sequential run, with the stream curve measured after each
    batch_size: int | None = None
    stream_sample: int = 100
    plot: Path | None = None
    #: independent runs: reuse the outcomes an interrupted run with the same settings kept
    #: (:mod:`factedit.evaluate.journal`); False measures every edit again
    resume: bool = True


@dataclass
class EvalPlan:
    """A checked job: the spec, the method, the mode and the corpus for C."""

    job: EvalJob
    spec: EditSpec
    method: str
    mode: str
    layers: tuple[int, ...] | str
    corpus: CorpusChoice | None


@dataclass
class EvalOutcome:
    report: dict[str, Any]
    shortfalls: list[Shortfall]


def plan_eval(job: EvalJob) -> EvalPlan:
    """Every check that needs no model; raises FactEditError / GateError naming the fix."""
    spec = load_spec(job.source, limit=job.limit, offset=job.offset)
    method = (job.method or spec.method).lower()
    if job.edited is None:
        method_info(method)
    elif not job.edited.exists():
        raise FactEditError(f"--edited {job.edited}: no such file or directory")
    _check_gate_metrics(job.thresholds, spec, job.generation, job.answer_tokens)
    if job.edited is not None:
        mode = "edited"
    elif job.independent is None:
        mode = "sequential" if spec.kind == "spec" else "independent"
    else:
        mode = "independent" if job.independent else "sequential"
    if (job.batch_size is not None or job.plot is not None) and mode != "sequential":
        raise FactEditError(
            f"--batch-size and --plot measure a sequential stream; this run is {mode} "
            "(add --sequential)"
        )
    if job.plot is not None and job.batch_size is None:
        raise FactEditError("--plot draws the stream curve: give --batch-size N as well")
    layers = job.layers if job.layers is not None else spec.layers
    corpus = check_corpus(job.corpus, spec.hparams) if mode != "edited" else None
    return EvalPlan(job, spec, method, mode, layers, corpus)


def _check_gate_metrics(
    thresholds: dict[str, float], spec: EditSpec, generation: bool, answer_tokens: int
) -> None:
    """Gated metrics that this run cannot produce are a usage error, before any model loads."""
    greedy = [m for m in thresholds if m.startswith("gen_")]
    if greedy and answer_tokens <= 0:
        raise GateError(f"--fail-under {', '.join(greedy)} needs --answer-tokens above 0")
    if not generation:
        missing = [m for m in thresholds if m in _GENERATION_METRICS]
        if missing:
            raise GateError(
                f"--fail-under {', '.join(missing)} needs generation (drop --no-generation)"
            )
    if spec.kind == "zsre":
        missing = [m for m in thresholds if m in _PROBABILITY_METRICS]
        if missing:
            raise GateError(
                f"--fail-under {', '.join(missing)}: zsRE has no target_true; gate on "
                "efficacy, paraphrase or specificity"
            )


def _load(plan: EvalPlan, reference: str | None) -> LoadedModel:
    job = plan.job
    return load_for_spec(
        reference, plan.spec, device=job.device, dtype=job.dtype, trust=job.trust_remote_code,
        device_map=job.device_map, max_memory=job.max_memory,
    )  # fmt: skip


def _session(plan: EvalPlan, lm: LoadedModel) -> EditSession:
    from factedit import session as sessions  # looked up at run time (tests replace it)

    job = plan.job
    session = sessions.EditSession(
        lm,
        method=plan.method,
        layers=plan.layers,
        hparams=plan.spec.hparams,
        corpus=job.corpus or None,
        seed=plan.spec.seed,
        requests=plan.spec.edits,
        allow_large_updates=job.allow_large_updates,
    )
    info(session.layer_reason)
    return session


def _execute(
    plan: EvalPlan, lm: LoadedModel, edited_lm: LoadedModel | None, session: EditSession | None
) -> EvalResult:
    spec, job = plan.spec, plan.job
    options = EvalOptions(
        generation=job.generation,
        seed=spec.seed,
        answer_tokens=job.answer_tokens,
        heldout=_heldout(plan, lm, session),
    )
    journal = None
    if plan.mode == "independent" and session is not None:
        journal = EvalJournal.for_run(lm, session, options, spec.kind, reuse=job.resume)
    with progress() as bar:
        task = bar.add_task("evaluating edits", total=len(spec.edits))

        def step(index: int) -> None:
            bar.update(task, completed=index + 1)

        common = {"kind": spec.kind, "options": options, "on_edit": step}
        if plan.mode == "edited":
            result = run_edited(lm, edited_lm, spec.edits, **common)
        elif plan.mode == "independent":
            result = run_independent(lm, spec.edits, session, journal=journal, **common)
        else:
            result = run_sequential(
                lm,
                spec.edits,
                session,
                probe=True,
                batch_size=plan.job.batch_size,
                stream_sample=plan.job.stream_sample,
                **common,
            )
    resumed = int(result.timing.get("resumed_edits", 0))
    if journal is not None and resumed:
        info(f"resumed {resumed} of {len(result.outcomes)} edits from {journal.directory}")
    return result


def _heldout(plan: EvalPlan, lm: LoadedModel, session: EditSession | None) -> HeldOut | None:
    """The held-out slice of the statistics corpus (after the tokens C is collected on), or
    None (with an info line) when there is none: no edits here, ``heldout_tokens`` 0, a
    corpus sampled from the model, or one too short."""
    choice, n = plan.corpus, plan.job.heldout_tokens
    if session is None or choice is None or n <= 0:
        return None
    paths = [p for p in choice.paths if p.is_file()]
    if choice.kind == "model" or not paths:
        info("held-out perplexity: not measured (no corpus file to hold text out of)")
        return None
    c_tokens = session.state.n_tokens or default_n_tokens(choice)
    skip = stream_tokens_used(lm.tokenizer, c_tokens, min(C_SEQ_LEN, lm.max_length))
    heldout = heldout_text(lm.tokenizer, paths, skip, n)
    if heldout is None:
        info(f"held-out perplexity: not measured (the corpus has under {skip + n} tokens)")
    return heldout


def run_eval(plan: EvalPlan) -> EvalOutcome:
    """Load the model(s), run the plan's mode, build the report and check the gate."""
    from factedit.apply import check_prompt_lengths

    job = plan.job
    lm = _load(plan, job.model)
    check_prompt_lengths(lm, plan.spec, offset=job.offset)
    edited_lm = _load(plan, str(job.edited)) if plan.mode == "edited" else None
    session = _session(plan, lm) if plan.mode != "edited" else None
    n = len(plan.spec.edits)
    info(f"evaluating {n} edit{'' if n == 1 else 's'} ({plan.mode}) on {lm.name}")
    result = _execute(plan, lm, edited_lm, session)
    if result.fluency_probe is not None:
        report_probe(result.fluency_probe)
    report = build_report(
        result,
        model=lm,
        edited_model=edited_lm,
        source=job.source,
        settings=_settings(plan, session),
    )
    shortfalls = _gate(report, result, job.thresholds)
    if job.plot is not None:
        from factedit.evaluate.plot import plot_stream

        for path in plot_stream([report], job.plot):
            info(f"wrote {path}")
    return EvalOutcome(report, shortfalls)


def _settings(plan: EvalPlan, session: EditSession | None) -> dict[str, Any]:
    job, spec = plan.job, plan.spec
    return {
        "method": None if session is None else session.method,
        "hparams_resolved": None if session is None else session.hparams.to_dict(),
        "layers": None if session is None else list(session.layers),
        "layers_requested": plan.layers if isinstance(plan.layers, str) else list(plan.layers),
        "hparams": {k: list(v) if isinstance(v, tuple) else v for k, v in spec.hparams.items()},
        "corpus": list(job.corpus) if job.corpus else None,
        "corpus_used": plan.corpus.describe() if plan.corpus else None,
        "limit": job.limit,
        "offset": job.offset,
        "thresholds": job.thresholds or None,
    }


def _gate(
    report: dict[str, Any], result: EvalResult, thresholds: dict[str, float]
) -> list[Shortfall]:
    """Shortfalls of the edited metrics; a refused edit fails a gate too (it did not happen)."""
    if not thresholds:
        report["gate"] = None
        return []
    shortfalls = check_gate(report["metrics"]["edited"], thresholds)
    if result.refused:
        shortfalls.append(RefusedShortfall("refused", float(len(result.refused)), 0.0))
    report["gate"] = {
        "thresholds": thresholds,
        "passed": not shortfalls,
        "shortfalls": [
            {"metric": s.metric, "value": s.value, "minimum": s.minimum, "short_by": s.short_by}
            for s in shortfalls
        ],
    }
    return shortfalls
