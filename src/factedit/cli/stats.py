"""``factedit stats``: collect and list the cached second-moment statistics C = E[k kᵀ]."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from factedit.cli.common import (
    CorpusOpt,
    DeviceOpt,
    DtypeOpt,
    ModelOpt,
    TrustOpt,
    announce_corpus,
    cli_errors,
)
from factedit.errors import StatsError

stats_app = typer.Typer(
    # "\\[" keeps rich markup from reading "[k kᵀ]" as a style tag and dropping it.
    help="Second-moment statistics C = E\\[k kᵀ] of the edited MLP weight's inputs (cached).",
    no_args_is_help=True,
)
out = Console(highlight=False)

LayerOpt = Annotated[
    list[int] | None,
    typer.Option("--layer", "-l", help="Layer to collect (repeatable; default: the preset's)."),
]
TokensOpt = Annotated[
    int | None,
    typer.Option(
        "--tokens",
        help="Token vectors to average over (default: 100000; 50000 for a corpus sampled "
        "from the model).",
    ),
]
StatsDtypeOpt = Annotated[
    str, typer.Option("--dtype-stats", help="Accumulation and storage dtype: float32 or float64.")
]


@stats_app.command("collect")
@cli_errors
def collect(
    model: ModelOpt = None,
    layer: LayerOpt = None,
    corpus: CorpusOpt = None,
    tokens: TokensOpt = None,
    dtype_stats: StatsDtypeOpt = "float32",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    trust_remote_code: TrustOpt = False,
) -> None:
    """Compute C for each layer (or read it from the cache) and show where it is stored;
    the layers not cached yet are collected together, in one pass over the corpus."""
    from factedit.models import load_model  # imports torch
    from factedit.stats import moments_and_counts

    announce_corpus(corpus)
    lm = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    layers = layer or ([lm.default_layer] if lm.default_layer is not None else [])
    if not layers:
        raise StatsError(f"{lm.name} has no default edit layer; choose one with --layer")
    stats = moments_and_counts(lm, layers, corpus=corpus, n_tokens=tokens, dtype=dtype_stats)
    table = Table("layer", "module", "shape", "tr(C)", "mean diag")
    for number in dict.fromkeys(layers):
        c, _ = stats[number]
        table.add_row(
            str(number),
            lm.arch.down_proj_name(number),
            "×".join(map(str, c.shape)),
            f"{c.trace().item():.4g}",
            f"{c.diagonal().mean().item():.4g}",
        )
    out.print(table)


@stats_app.command("list")
@cli_errors
def list_() -> None:
    """List the statistics in the cache ($FACTEDIT_HOME/stats)."""
    from factedit.stats import list_cached  # imports torch (safetensors)

    rows = list_cached()
    if not rows:
        out.print("no statistics cached yet (run `factedit stats collect`)")
        return
    table = Table("model", "layer", "module", "tokens", "dtype", "size", "file")
    for row in rows:
        table.add_row(
            str(row.get("model_name") or row.get("model")),
            str(row.get("layer")),
            str(row.get("module")),
            str(row.get("n_tokens")),
            str(row.get("dtype")),
            f"{row['bytes'] / 2**20:.1f} MiB",
            Path(row["file"]).name[:16],
        )
    out.print(table)
