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
    the layers not cached yet are collected together, in one pass over the corpus.

    Under `torchrun --nproc-per-node K -m factedit stats collect ...` the K processes share
    the corpus (each sums its batches; the sums are combined in a fixed order) and rank 0
    alone reads and writes the cache. Each process uses torch's threads (OMP_NUM_THREADS)."""
    from factedit.models import load_model  # imports torch
    from factedit.stats import moments_and_counts
    from factedit.stats.distributed import join_from_env

    ranks = join_from_env(device)
    announce_corpus(corpus)
    lm = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    layers = layer or ([lm.default_layer] if lm.default_layer is not None else [])
    if not layers:
        raise StatsError(f"{lm.name} has no default edit layer; choose one with --layer")
    stats = moments_and_counts(lm, layers, corpus=corpus, n_tokens=tokens, dtype=dtype_stats)
    if not ranks.main:
        return
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
    """List the statistics in the cache ($FACTEDIT_HOME/stats): model, layer, corpus, token
    count, conditioning (condition number of C) and size; `stats show ID` shows one."""
    from factedit.stats import list_cached  # imports torch (safetensors)

    rows = list_cached()
    if not rows:
        out.print("no statistics cached yet (run `factedit stats collect`)")
        return
    table = Table("id", "model", "layer", "corpus", "tokens", "dtype", "condition", "size")
    for row in rows:
        condition = row.get("condition")
        table.add_row(
            Path(row["file"]).name[:12],
            str(row.get("model_name") or row.get("model")),
            str(row.get("layer")),
            ", ".join(row.get("corpus_files") or []) or str(row.get("corpus_kind") or "?"),
            str(row.get("n_tokens")),
            str(row.get("dtype")),
            "?" if condition is None else f"{condition:.3g}",
            f"{row['bytes'] / 2**20:.1f} MiB",
        )
    out.print(table)


IdArg = Annotated[
    str, typer.Argument(help="An entry's id (a prefix of it), as `stats list` shows.")
]


@stats_app.command("show")
@cli_errors
def show(entry_id: IdArg) -> None:
    """Everything recorded about one cached statistic: its key (model identity, layer,
    module, corpus digest, token count, sequence length, dtype), who computed it, when, how
    long it took, and C's eigenvalue range and condition number."""
    from factedit.stats import list_cached

    rows = [r for r in list_cached() if Path(r["file"]).name.startswith(entry_id)]
    if len(rows) != 1:
        what = "no cached statistic" if not rows else f"{len(rows)} cached statistics"
        raise StatsError(f"{what} with an id starting {entry_id!r} (see `factedit stats list`)")
    table = Table("field", "value", show_header=False)
    for key, value in rows[0].items():
        table.add_row(key, str(value))
    out.print(table)
