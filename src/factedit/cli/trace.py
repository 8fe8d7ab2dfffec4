"""``factedit trace``: causal tracing of one prompt, or averaged over a known-facts file.

    factedit trace "The Eiffel Tower is located in the city of" --subject "The Eiffel Tower"
    factedit trace --facts ../shared/data/known-facts.json --limit 50

Writes ``trace.{png,svg,json}`` (or ``aggregate.{png,svg,json}``) under ``--out``, prints a
compact heatmap and the recommended edit layer. The human report goes to stdout, or to
stderr when ``--json -`` puts the JSON on stdout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from factedit.cli.common import DeviceOpt, DtypeOpt, ModelOpt, TrustOpt, cli_errors
from factedit.console import info
from factedit.errors import FactEditError
from factedit.lazy import LazyImports
from factedit.paths import atomic_write_text

if TYPE_CHECKING:
    from factedit.models import load_model
    from factedit.tokens import subject_char_span
    from factedit.trace import aggregate_trace, load_known_facts, save_aggregate, trace_fact
    from factedit.trace.aggregate import AggregateResult
    from factedit.trace.noise import parse_noise
    from factedit.trace.patching import KINDS
    from factedit.trace.render import (
        aggregate_figure,
        terminal_aggregate,
        terminal_heatmap,
        trace_figure,
        write_figure,
    )
    from factedit.trace.result import TraceResult

# The names above, imported when `trace` runs: they import torch, transformers and
# matplotlib (`factedit trace --help` must not).
_heavy = LazyImports(
    globals(),
    {
        "load_model": "factedit.models",
        "subject_char_span": "factedit.tokens",
        "aggregate_trace": "factedit.trace",
        "load_known_facts": "factedit.trace",
        "save_aggregate": "factedit.trace",
        "trace_fact": "factedit.trace",
        "parse_noise": "factedit.trace.noise",
        "KINDS": "factedit.trace.patching",
        "aggregate_figure": "factedit.trace.render",
        "terminal_aggregate": "factedit.trace.render",
        "terminal_heatmap": "factedit.trace.render",
        "trace_figure": "factedit.trace.render",
        "write_figure": "factedit.trace.render",
    },
)
__getattr__ = _heavy.getattr


def _parse_kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise FactEditError(f"--kind {text}: choose from {','.join(KINDS)} (comma-separated)")
    return kinds


def _write_json(data: dict, out_file: Path, json_opt: str | None) -> None:
    text = json.dumps(data, indent=1)
    atomic_write_text(out_file, text + "\n")
    if json_opt == "-":
        sys.stdout.write(text + "\n")
    elif json_opt:
        atomic_write_text(json_opt, text + "\n")


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
    prompt: Annotated[
        str | None, typer.Argument(help="Prompt that contains the subject (omit with --facts).")
    ] = None,
    subject: Annotated[
        str | None, typer.Option("--subject", "-s", help="The subject, as it occurs in PROMPT.")
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            "-t",
            help="Answer to trace (default: the model's own greedy next token). For a "
            "multi-token answer the probability of its first token is traced.",
        ),
    ] = None,
    kind: Annotated[
        str, typer.Option("--kind", help="Sites to restore, comma-separated: hidden,mlp,attn.")
    ] = "hidden,mlp,attn",
    samples: Annotated[int, typer.Option("--samples", help="Noise samples per site.")] = 10,
    noise: Annotated[
        str,
        typer.Option(
            "--noise", help="Noise std: a multiple of the embedding std (3x) or a number."
        ),
    ] = "3x",
    window: Annotated[
        int, typer.Option("--window", help="MLP / attention layers restored around each layer.")
    ] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the noise generator.")] = 0,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    trust_remote_code: TrustOpt = False,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Directory for the PNG, SVG and JSON files.")
    ] = Path("out/trace"),
    facts: Annotated[
        Path | None,
        typer.Option(
            "--facts",
            help="Known-facts JSON: average over the facts the model predicts. Each fact's "
            "trace is kept in OUT/facts/, and a rerun with the same settings resumes from it.",
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", help="With --facts: stop after N facts the model predicts (default: all)."
        ),
    ] = None,
    json_out: Annotated[
        str | None, typer.Option("--json", help="Also write the JSON here ('-' for stdout).")
    ] = None,
    engine: Annotated[
        str, typer.Option("--engine", hidden=True, help="fast or reference (slow, for checks).")
    ] = "fast",
) -> None:
    """Causal tracing: which hidden states, MLPs and attentions carry a fact."""
    _heavy.load()
    kinds = _parse_kinds(kind)
    parse_noise(noise)
    if samples < 1 or window < 1:
        raise FactEditError("--samples and --window must be at least 1")
    if facts is not None and (prompt is not None or subject is not None):
        raise FactEditError("give either PROMPT --subject S or --facts FILE, not both")
    if facts is None:
        if prompt is None or subject is None:
            raise FactEditError("give a PROMPT and its --subject (or --facts FILE)")
        subject_char_span(prompt, subject)  # a missing subject fails before loading the model
    if limit is not None and limit < 1:
        raise FactEditError("--limit must be at least 1")
    con = Console(stderr=json_out == "-", highlight=False)
    settings = dict(kinds=kinds, samples=samples, noise=noise, window=window, seed=seed)
    if facts is not None:
        known = load_known_facts(facts)
        lm = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)

        def progress_line(i: int, n: int, result: TraceResult) -> None:
            info(f"traced {i + 1}/{n}: {result.prompt!r} -> {result.answer.strip()!r}")

        agg = aggregate_trace(
            lm,
            known,
            limit=limit,
            engine_name=engine,
            on_fact=progress_line,
            checkpoint_dir=out / "facts",
            **settings,
        )
        if agg.settings["resumed"]:
            info(f"{agg.settings['resumed']} of those facts were read back from {out / 'facts'}")
        info(
            f"the model predicts {len(agg.facts)} of the {agg.scanned} facts scanned; "
            f"averaged over those {len(agg.facts)}"
        )
        agg.settings["facts_file"] = str(facts)
        if (cached := save_aggregate(lm, agg)) is not None:
            info(f"cached for layers: auto at {cached}")
        files = write_figure(aggregate_figure(agg), out / "aggregate")
        _write_json(agg.to_json(), out / "aggregate.json", json_out)
        _report_aggregate(con, agg, [*files, out / "aggregate.json"])
        return
    lm = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    result = trace_fact(lm, prompt, subject, target, engine_name=engine, **settings)
    files = write_figure(trace_figure(result), out / "trace")
    _write_json(result.to_json(), out / "trace.json", json_out)
    _report_single(con, result, [*files, out / "trace.json"])
