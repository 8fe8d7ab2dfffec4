"""``factedit eval SOURCE``: edit, measure and report (CounterFact / zsRE metrics, GE), with a gate.

SOURCE is an edit spec (YAML/JSON), a CounterFact JSON file or a zsRE JSON file. Everything
is parsed and validated before a model is loaded. Exit codes: 0 ok, 1 ``--fail-under`` gate
failed, 2 usage or input error.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
    cli_errors,
    fail,
    parse_layers,
)
from factedit.console import info
from factedit.lazy import LazyImports
from factedit.paths import atomic_write_text

if TYPE_CHECKING:
    from factedit.evaluate.gate import parse_thresholds
    from factedit.evaluate.job import EvalJob, plan_eval, run_eval
    from factedit.report import (
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
        "parse_thresholds": "factedit.evaluate.gate",
        "EvalJob": "factedit.evaluate.job",
        "plan_eval": "factedit.evaluate.job",
        "run_eval": "factedit.evaluate.job",
        "per_edit_table": "factedit.report",
        "render_markdown": "factedit.report",
        "report_title": "factedit.report",
        "summary_table": "factedit.report",
        "write_json": "factedit.report",
    },
)
__getattr__ = _heavy.getattr


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
    job = EvalJob(
        source=source,
        method=method,
        layers=parse_layers(layers),
        limit=limit,
        offset=offset,
        model=model,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        independent=independent,
        edited=edited,
        corpus=corpus or None,
        generation=generation,
        allow_large_updates=allow_large_updates,
        thresholds=parse_thresholds(fail_under) if fail_under is not None else {},
    )
    plan = plan_eval(job)
    if plan.corpus is not None:
        info(plan.corpus.describe())
    outcome = run_eval(plan)
    report, shortfalls = outcome.report, outcome.shortfalls
    if json_path is not None:
        write_json(json_path, report)
        info(f"wrote {json_path}")
    if markdown_path is not None:
        text = render_markdown(
            report, per_edit=per_edit, shortfalls=shortfalls, thresholds=job.thresholds or None
        )
        atomic_write_text(markdown_path, text)
        info(f"wrote {markdown_path}")
    out = Console()
    out.print(f"[bold]{escape(report_title(report))}[/bold]", soft_wrap=True)
    out.print(summary_table(report))
    if per_edit:
        out.print(per_edit_table(report))
    if shortfalls:
        raise fail(f"quality gate failed: {'; '.join(s.describe() for s in shortfalls)}", 1)
    if job.thresholds:
        info("quality gate passed: " + ", ".join(f"{k} ≥ {v:g}" for k, v in job.thresholds.items()))
