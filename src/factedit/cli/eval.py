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
    ANSWER_TOKENS,
    HELDOUT_TOKENS,
    METRIC_KEYS,
    CorpusOpt,
    DeviceMapOpt,
    DeviceOpt,
    DtypeOpt,
    LayersOpt,
    MaxMemoryOpt,
    MethodOpt,
    ModelOpt,
    TrustOpt,
    cli_errors,
    fail,
    parse_layers,
    parse_placement,
)
from factedit.console import info
from factedit.lazy import LazyImports
from factedit.paths import atomic_write_text

if TYPE_CHECKING:
    from factedit.evaluate.gate import parse_thresholds
    from factedit.evaluate.job import EvalJob, EvalOutcome, plan_eval, run_eval
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


SourceArg = Annotated[
    Path,
    typer.Argument(
        help="Edit spec (YAML/JSON), CounterFact JSON or zsRE JSON, or a named benchmark: "
        "counterfact, zsre or counterfact-mass (downloaded once, cached and checked)."
    ),
]
DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="A local copy of the named benchmark (no download), e.g. on a machine offline.",
    ),
]
LimitOpt = Annotated[int | None, typer.Option("--limit", min=1, help="Use N edits.")]
OffsetOpt = Annotated[int, typer.Option("--offset", min=0, help="Skip the first K edits.")]
IndependentOpt = Annotated[
    bool | None,
    typer.Option(
        "--independent/--sequential",
        help="Each edit alone on the unedited model, undone after measuring (default for "
        "CounterFact/zsRE files), or edits accumulating (default for specs).",
    ),
]
EditedOpt = Annotated[
    Path | None,
    typer.Option(
        "--edited",
        help="Evaluate this already-edited model (directory / any --model reference) "
        "against the unedited --model; no editing.",
    ),
]
JsonReportOpt = Annotated[
    Path | None, typer.Option("--json", help="Write the full report (factedit.eval/1).")
]
MarkdownOpt = Annotated[
    Path | None, typer.Option("--markdown", help="Write a Markdown summary (PR comments).")
]
PerEditOpt = Annotated[bool, typer.Option("--per-edit", help="Show one row per edit.")]
FailUnderOpt = Annotated[
    str | None,
    typer.Option(
        "--fail-under",
        help="Gate on edited metrics, e.g. es=95,ps=80,ns=70: exit 1 if any falls short. "
        f"Metrics: {', '.join(METRIC_KEYS)}.",
    ),
]
GenerationOpt = Annotated[
    bool,
    typer.Option("--generation/--no-generation", help="Sample texts for GE and mentions."),
]
AnswerTokensOpt = Annotated[
    int,
    typer.Option(
        "--answer-tokens",
        min=0,
        help="Greedy tokens per prompt for the generation-based protocol (Gen-ES/PS/NS: does "
        "the continuation state the answer?); 0 skips it.",
    ),
]
HeldoutTokensOpt = Annotated[
    int,
    typer.Option(
        "--heldout-tokens",
        min=0,
        help="Tokens of held-out corpus text (the slice after the tokens C is collected on) "
        "whose perplexity is measured unedited and after each edit (or batch); 0 skips it.",
    ),
]
BatchSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        min=1,
        help="With --sequential: edits per batch (MEMIT/AlphaEdit solve each batch together), "
        "and a point of the stream curve after each batch in the JSON report.",
    ),
]
StreamSampleOpt = Annotated[
    int,
    typer.Option(
        "--stream-sample",
        min=1,
        help="Edits measured per curve point: all so far up to N, then a fixed random N.",
    ),
]
PlotOpt = Annotated[
    Path | None,
    typer.Option("--plot", help="Draw the stream curve to FILE.png and FILE.svg."),
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume/--no-resume",
        help="Reuse the outcomes an interrupted independent run with the same settings kept "
        "under $FACTEDIT_HOME/eval (default), or measure every edit again.",
    ),
]
AllowLargeUpdatesOpt = Annotated[
    bool,
    typer.Option("--allow-large-updates", help="Apply edits with ‖ΔW‖/‖W‖ above the limit."),
]


@cli_errors
def eval_command(
    source: SourceArg,
    method: MethodOpt = None,
    layers: LayersOpt = None,
    limit: LimitOpt = None,
    offset: OffsetOpt = 0,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    trust_remote_code: TrustOpt = False,
    independent: IndependentOpt = None,
    edited: EditedOpt = None,
    corpus: CorpusOpt = None,
    json_path: JsonReportOpt = None,
    markdown_path: MarkdownOpt = None,
    per_edit: PerEditOpt = False,
    fail_under: FailUnderOpt = None,
    generation: GenerationOpt = True,
    answer_tokens: AnswerTokensOpt = ANSWER_TOKENS,
    heldout_tokens: HeldoutTokensOpt = HELDOUT_TOKENS,
    allow_large_updates: AllowLargeUpdatesOpt = False,
    batch_size: BatchSizeOpt = None,
    stream_sample: StreamSampleOpt = 100,
    plot: PlotOpt = None,
    data: DataOpt = None,
    device_map: DeviceMapOpt = None,
    max_memory: MaxMemoryOpt = None,
    resume: ResumeOpt = True,
) -> None:
    """Edit each fact, measure efficacy, generalisation, specificity and fluency, and report."""
    from factedit.evaluate.benchmarks import resolve_source

    source = resolve_source(source, data)
    placement = parse_placement(device_map, max_memory)
    _heavy.load()
    job = EvalJob(
        source=source, method=method, layers=parse_layers(layers), limit=limit, offset=offset,
        model=model, device=device, dtype=dtype, device_map=placement[0],
        max_memory=placement[1], trust_remote_code=trust_remote_code, independent=independent,
        edited=edited, corpus=corpus or None, generation=generation,
        answer_tokens=answer_tokens, heldout_tokens=heldout_tokens,
        allow_large_updates=allow_large_updates,
        thresholds=parse_thresholds(fail_under) if fail_under is not None else {},
        batch_size=batch_size, stream_sample=stream_sample, plot=plot, resume=resume,
    )  # fmt: skip
    plan = plan_eval(job)
    if plan.corpus is not None:
        info(plan.corpus.describe())
    outcome = run_eval(plan)
    _write_reports(outcome, job.thresholds, json_path, markdown_path, per_edit=per_edit)
    _render(outcome, job.thresholds, per_edit=per_edit)


def _write_reports(
    outcome: EvalOutcome,
    thresholds: dict[str, float],
    json_path: Path | None,
    markdown_path: Path | None,
    *,
    per_edit: bool,
) -> None:
    """Write the report as JSON (``--json``) and as a Markdown summary (``--markdown``)."""
    if json_path is not None:
        write_json(json_path, outcome.report)
        info(f"wrote {json_path}")
    if markdown_path is not None:
        text = render_markdown(
            outcome.report,
            per_edit=per_edit,
            shortfalls=outcome.shortfalls,
            thresholds=thresholds or None,
        )
        atomic_write_text(markdown_path, text)
        info(f"wrote {markdown_path}")


def _render(outcome: EvalOutcome, thresholds: dict[str, float], *, per_edit: bool) -> None:
    """Print the title and summary (and per-edit) tables; exit 1 when the gate failed."""
    report, shortfalls = outcome.report, outcome.shortfalls
    out = Console()
    out.print(f"[bold]{escape(report_title(report))}[/bold]", soft_wrap=True)
    out.print(summary_table(report))
    if per_edit:
        out.print(per_edit_table(report))
    if shortfalls:
        raise fail(f"quality gate failed: {'; '.join(s.describe() for s in shortfalls)}", 1)
    if thresholds:
        info("quality gate passed: " + ", ".join(f"{k} ≥ {v:g}" for k, v in thresholds.items()))


ReportsArg = Annotated[
    list[Path],
    typer.Argument(help="Reports of `factedit eval --sequential --batch-size N --json`."),
]
PlotOutOpt = Annotated[Path, typer.Option("--out", help="Picture to write: FILE.png and FILE.svg.")]


@cli_errors
def plot_command(reports: ReportsArg, out_path: PlotOutOpt) -> None:
    """Draw sequential-editing curves (one panel per metric, one line per report)."""
    from factedit.evaluate.plot import load_reports, plot_stream

    for path in plot_stream(load_reports(reports), out_path):
        info(f"wrote {path}")
