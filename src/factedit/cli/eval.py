"""``factedit eval SOURCE``: edit, measure and report (CounterFact / zsRE metrics, GE), with a gate.

SOURCE is an edit spec (YAML/JSON), a CounterFact JSON file or a zsRE JSON file. Everything
is parsed and validated before a model is loaded. Exit codes: 0 ok, 1 ``--fail-under`` gate
failed, 2 usage or input error.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from factedit.cli.common import (
    METRIC_KEYS,
    CorpusOpt,
    DeviceOpt,
    DtypeOpt,
    LayersOpt,
    ModelOpt,
    TrustOpt,
    announce_corpus,
    cli_errors,
    fail,
    load_spec_model,
    parse_layers,
)
from factedit.console import info, progress
from factedit.lazy import LazyImports
from factedit.paths import atomic_write_text
from factedit.spec import SUPPORTED_METHODS, EditSpec, load_spec

if TYPE_CHECKING:
    from factedit.apply import check_prompt_lengths
    from factedit.evaluate.gate import GateError, check_gate, parse_thresholds
    from factedit.evaluate.probe import report_probe
    from factedit.evaluate.runner import EvalOptions, run_edited, run_independent, run_sequential
    from factedit.report import (
        build_report,
        per_edit_table,
        render_markdown,
        report_title,
        summary_table,
        write_json,
    )

# The names above, imported when `eval` runs: they import torch (`eval --help` must not).
_heavy = LazyImports(
    globals(),
    {
        "check_prompt_lengths": "factedit.apply",
        "GateError": "factedit.evaluate.gate",
        "check_gate": "factedit.evaluate.gate",
        "parse_thresholds": "factedit.evaluate.gate",
        "report_probe": "factedit.evaluate.probe",
        "EvalOptions": "factedit.evaluate.runner",
        "run_edited": "factedit.evaluate.runner",
        "run_independent": "factedit.evaluate.runner",
        "run_sequential": "factedit.evaluate.runner",
        "build_report": "factedit.report",
        "per_edit_table": "factedit.report",
        "render_markdown": "factedit.report",
        "report_title": "factedit.report",
        "summary_table": "factedit.report",
        "write_json": "factedit.report",
    },
)
__getattr__ = _heavy.getattr

_GENERATION_METRICS = ("ge", "mention_new", "mention_true")
_PROBABILITY_METRICS = ("es", "em", "ps", "pm", "s", "mention_true")


def _check_gate_metrics(thresholds: dict[str, float], spec: EditSpec, generation: bool) -> None:
    """Gated metrics that this run cannot produce are a usage error, before any model loads."""
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


def _run(lm, spec: EditSpec, *, mode: str, edited_lm, editor, options: EvalOptions):
    with progress() as bar:
        task = bar.add_task("evaluating edits", total=len(spec.edits))

        def step(_: int) -> None:
            bar.advance(task)

        if mode == "edited":
            return run_edited(
                lm, edited_lm, spec.edits, kind=spec.kind, options=options, on_edit=step
            )
        if mode == "independent":
            return run_independent(
                lm, spec.edits, editor, kind=spec.kind, options=options, on_edit=step
            )
        return run_sequential(
            lm, spec.edits, editor, kind=spec.kind, options=options, on_edit=step, probe=True
        )


@cli_errors
def eval_command(
    source: Annotated[
        Path, typer.Argument(help="Edit spec (YAML/JSON), CounterFact JSON or zsRE JSON.")
    ],
    method: Annotated[
        str | None, typer.Option("--method", help="Editing method (default: the spec's, rome).")
    ] = None,
    layers: LayersOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Use N edits.")] = None,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip the first K edits.")] = 0,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    trust_remote_code: TrustOpt = False,
    independent: Annotated[
        bool | None,
        typer.Option(
            "--independent/--sequential",
            help="Each edit alone on the unedited model, undone after measuring (default for "
            "CounterFact/zsRE files), or edits accumulating (default for specs).",
        ),
    ] = None,
    edited: Annotated[
        Path | None,
        typer.Option(
            "--edited",
            help="Evaluate this already-edited model (directory / any --model reference) "
            "against the unedited --model; no editing.",
        ),
    ] = None,
    corpus: CorpusOpt = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the full report (factedit.eval/1).")
    ] = None,
    markdown_path: Annotated[
        Path | None, typer.Option("--markdown", help="Write a Markdown summary (PR comments).")
    ] = None,
    per_edit: Annotated[bool, typer.Option("--per-edit", help="Show one row per edit.")] = False,
    fail_under: Annotated[
        str | None,
        typer.Option(
            "--fail-under",
            help="Gate on edited metrics, e.g. es=95,ps=80,ns=70: exit 1 if any falls short. "
            f"Metrics: {', '.join(METRIC_KEYS)}.",
        ),
    ] = None,
    generation: Annotated[
        bool,
        typer.Option("--generation/--no-generation", help="Sample texts for GE and mentions."),
    ] = True,
    allow_large_updates: Annotated[
        bool,
        typer.Option("--allow-large-updates", help="Apply edits with ‖ΔW‖/‖W‖ above the limit."),
    ] = False,
) -> None:
    """Edit each fact, measure efficacy, generalisation, specificity and fluency, and report."""
    _heavy.load()
    thresholds = parse_thresholds(fail_under) if fail_under is not None else {}
    layer_choice = parse_layers(layers)
    spec = load_spec(source, limit=limit, offset=offset)
    method = (method or spec.method).lower()
    if edited is None and method not in SUPPORTED_METHODS:
        raise fail(f'unknown method "{method}"; supported: {", ".join(SUPPORTED_METHODS)}')
    if edited is not None and not edited.exists():
        raise fail(f"--edited {edited}: no such file or directory")
    _check_gate_metrics(thresholds, spec, generation)
    if edited is not None:
        mode = "edited"
    elif independent is None:
        mode = "sequential" if spec.kind == "spec" else "independent"
    else:
        mode = "independent" if independent else "sequential"
    resolved_layers = layer_choice if layer_choice is not None else spec.layers
    corpus_choice = announce_corpus(corpus, spec.hparams) if mode != "edited" else None
    lm = load_spec_model(
        model, spec, device=device, dtype=dtype, trust_remote_code=trust_remote_code
    )
    check_prompt_lengths(lm, spec, offset=offset)
    edited_lm, editor = None, None
    if mode == "edited":
        edited_lm = load_spec_model(
            str(edited), spec, device=device, dtype=dtype, trust_remote_code=trust_remote_code
        )
    else:
        from factedit.editing import Editor

        editor = Editor(
            lm,
            method=method,
            layers=resolved_layers,
            hparams=spec.hparams,
            corpus=corpus or None,
            seed=spec.seed,
            requests=spec.edits,
            allow_large_updates=allow_large_updates,
        )
        info(editor.layer_reason)
    options = EvalOptions(generation=generation, seed=spec.seed)
    n = len(spec.edits)
    info(f"evaluating {n} edit{'' if n == 1 else 's'} ({mode}) on {lm.name}")
    result = _run(lm, spec, mode=mode, edited_lm=edited_lm, editor=editor, options=options)
    if result.fluency_probe is not None:
        report_probe(result.fluency_probe)

    settings: dict[str, Any] = {
        "method": None if mode == "edited" else method,
        "layers": list(editor.layers) if editor is not None else None,
        "layers_requested": resolved_layers
        if isinstance(resolved_layers, str)
        else list(resolved_layers),
        "hparams": {k: list(v) if isinstance(v, tuple) else v for k, v in spec.hparams.items()},
        "corpus": [str(c) for c in corpus] if corpus else None,
        "corpus_used": corpus_choice.describe() if corpus_choice else None,
        "limit": limit,
        "offset": offset,
        "thresholds": thresholds or None,
    }
    report = build_report(
        result, model=lm, edited_model=edited_lm, source=source, settings=settings
    )
    shortfalls = check_gate(report["metrics"]["edited"], thresholds) if thresholds else []
    report["gate"] = (
        None
        if not thresholds
        else {
            "thresholds": thresholds,
            "passed": not shortfalls,
            "shortfalls": [
                {"metric": s.metric, "value": s.value, "minimum": s.minimum, "short_by": s.short_by}
                for s in shortfalls
            ],
        }
    )
    if json_path is not None:
        write_json(json_path, report)
        info(f"wrote {json_path}")
    if markdown_path is not None:
        text = render_markdown(
            report, per_edit=per_edit, shortfalls=shortfalls, thresholds=thresholds or None
        )
        atomic_write_text(markdown_path, text)
        info(f"wrote {markdown_path}")
    out = Console()
    out.print(f"[bold]{escape(report_title(report))}[/bold]", soft_wrap=True)
    out.print(summary_table(report))
    if per_edit:
        out.print(per_edit_table(report))
    if shortfalls:
        failed = "; ".join(s.describe() for s in shortfalls)
        raise fail(f"quality gate failed: {failed}", 1)
    if thresholds:
        info("quality gate passed: " + ", ".join(f"{k} ≥ {v:g}" for k, v in thresholds.items()))
