"""``factedit trace``: causal tracing of one prompt, or averaged over a known-facts file.

    factedit trace "The Eiffel Tower is located in the city of" --subject "The Eiffel Tower"
    factedit trace --facts ../shared/data/known-facts.json --limit 50

Writes ``trace.{png,svg,json}`` (or ``aggregate.{png,svg,json}``) under ``--out``, prints a
compact heatmap and the recommended edit layer. The human report goes to stdout, or to
stderr when ``--json -`` puts the JSON on stdout. The run itself is
:func:`factedit.trace.run.run_trace`; this module parses the options and renders.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from factedit.cli.common import (
    DeviceMapOpt,
    DeviceOpt,
    DtypeOpt,
    MaxMemoryOpt,
    ModelOpt,
    TrustOpt,
    cli_errors,
    parse_placement,
)
from factedit.lazy import LazyImports

if TYPE_CHECKING:
    from factedit.models import load_model
    from factedit.trace.aggregate import AggregateResult
    from factedit.trace.render import terminal_aggregate, terminal_heatmap
    from factedit.trace.result import TraceResult
    from factedit.trace.run import TraceJob, run_trace

# The names above, imported when `trace` runs: they import torch, transformers and
# matplotlib (`factedit trace --help` must not).
_heavy = LazyImports(
    globals(),
    {
        "load_model": "factedit.models",
        "AggregateResult": "factedit.trace.aggregate",
        "terminal_aggregate": "factedit.trace.render",
        "terminal_heatmap": "factedit.trace.render",
        "TraceJob": "factedit.trace.run",
        "run_trace": "factedit.trace.run",
    },
)
__getattr__ = _heavy.getattr

PromptArg = Annotated[
    str | None, typer.Argument(help="Prompt that contains the subject (omit with --facts).")
]
SubjectOpt = Annotated[
    str | None, typer.Option("--subject", "-s", help="The subject, as it occurs in PROMPT.")
]
TargetOpt = Annotated[
    str | None,
    typer.Option(
        "--target",
        "-t",
        help="Answer to trace (default: the model's own greedy next token). For a "
        "multi-token answer the probability of its first token is traced.",
    ),
]
KindOpt = Annotated[
    str, typer.Option("--kind", help="Sites to restore, comma-separated: hidden,mlp,attn.")
]
SamplesOpt = Annotated[int, typer.Option("--samples", help="Noise samples per site.")]
NoiseOpt = Annotated[
    str,
    typer.Option("--noise", help="Noise std: a multiple of the embedding std (3x) or a number."),
]
WindowOpt = Annotated[
    int, typer.Option("--window", help="MLP / attention layers restored around each layer.")
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the noise generator.")]
OutOpt = Annotated[
    Path, typer.Option("--out", "-o", help="Directory for the PNG, SVG and JSON files.")
]
FactsOpt = Annotated[
    Path | None,
    typer.Option(
        "--facts",
        help="Known-facts JSON: average over the facts the model predicts. Each fact's "
        "trace is kept in OUT/facts/, and a rerun with the same settings resumes from it.",
    ),
]
LimitOpt = Annotated[
    int | None,
    typer.Option(
        "--limit", help="With --facts: stop after N facts the model predicts (default: all)."
    ),
]
JsonOpt = Annotated[
    str | None, typer.Option("--json", help="Also write the JSON here ('-' for stdout).")
]
EngineOpt = Annotated[
    str, typer.Option("--engine", hidden=True, help="fast or reference (slow, for checks).")
]


def _report_single(con: Console, result: TraceResult, files: list[Path]) -> None:
    con.print(terminal_heatmap(result))
    con.print(
        f'answer "{result.answer.strip()}": p_clean={result.p_clean:.4f}  '
        f"p_corrupt={result.p_corrupt:.4f}  (noise std {result.settings['noise_std']:.3g}, "
        f"{result.settings['samples']} samples)"
    )
    rec = result.recommended_layer()
    if rec is not None:
        token = result.tokens[result.last_subject_index].strip()
        con.print(
            f"[bold]recommended edit layer: {rec[0]}[/bold] (MLP indirect effect at the last "
            f'subject token "{token}": {rec[1]:+.4f})'
        )
        t, layer, effect = result.subject_peak("mlp")
        if t != result.last_subject_index:
            con.print(
                f'  note: the MLP effect is strongest at subject token "{result.tokens[t].strip()}"'
                f" (layer {layer}, {effect:+.4f}), not at the last subject token"
            )
    con.print("wrote " + ", ".join(str(f) for f in files))


def _report_aggregate(con: Console, agg: AggregateResult, files: list[Path]) -> None:
    con.print(terminal_aggregate(agg))
    con.print(
        f"{len(agg.facts)} known facts (of {agg.scanned} scanned): mean p_clean={agg.p_clean:.4f}"
        f"  p_corrupt={agg.p_corrupt:.4f}"
    )
    peaks = agg.peaks()
    for kind in agg.effects:
        at_subject = peaks[kind]["last subject token"]
        at_last = peaks[kind]["last token"]
        con.print(
            f"{kind:>6}: peak at last subject token: layer {at_subject['layer']} "
            f"({at_subject['effect']:+.4f}); at last token: layer {at_last['layer']} "
            f"({at_last['effect']:+.4f})"
        )
    rec = agg.recommended_layer()
    if rec is not None:
        con.print(
            f"[bold]recommended edit layer: {rec[0]}[/bold] (mean MLP indirect effect at the "
            f"last subject token: {rec[1]:+.4f})"
        )
    con.print("wrote " + ", ".join(str(f) for f in files))


@cli_errors
def trace_command(
    prompt: PromptArg = None,
    subject: SubjectOpt = None,
    target: TargetOpt = None,
    kind: KindOpt = "hidden,mlp,attn",
    samples: SamplesOpt = 10,
    noise: NoiseOpt = "3x",
    window: WindowOpt = 10,
    seed: SeedOpt = 0,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    trust_remote_code: TrustOpt = False,
    out: OutOpt = Path("out/trace"),
    facts: FactsOpt = None,
    limit: LimitOpt = None,
    json_out: JsonOpt = None,
    engine: EngineOpt = "fast",
    device_map: DeviceMapOpt = None,
    max_memory: MaxMemoryOpt = None,
) -> None:
    """Causal tracing: which hidden states, MLPs and attentions carry a fact."""
    placement = parse_placement(device_map, max_memory)
    _heavy.load()
    job = TraceJob(
        prompt=prompt,
        subject=subject,
        target=target,
        kinds=kind,
        samples=samples,
        noise=noise,
        window=window,
        seed=seed,
        model=model,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        device_map=placement[0],
        max_memory=placement[1],
        out=out,
        facts=facts,
        limit=limit,
        json_copy=Path(json_out) if json_out and json_out != "-" else None,
        engine=engine,
    )
    outcome = run_trace(job, load=load_model)
    if json_out == "-":
        sys.stdout.write(outcome.json_text)
    con = Console(stderr=json_out == "-", highlight=False)
    if isinstance(outcome.result, AggregateResult):
        _report_aggregate(con, outcome.result, outcome.files)
    else:
        _report_single(con, outcome.result, outcome.files)
