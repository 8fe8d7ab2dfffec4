"""``factedit probe``: linear probes at every layer, on a split by span string.

    factedit probe task.jsonl --model gemma-3-270m --out out/probe
    factedit probe --facts ../shared/data/counterfact-dev.json --list-relations
    factedit probe --facts ../shared/data/counterfact-dev.json --relation P103 --lens
    factedit probe --facts cf.json --relation P103 --patch edits.patch.safetensors

DATA is JSONL, one ``{"text": ..., "span": ..., "label": ...}`` a line (``span``: a substring
of the text, its first occurrence, or ``[start, end]`` character offsets). Writes
``probe.{json,png,svg}`` under ``--out`` and prints a compact table per layer. The run itself
is :func:`factedit.probing.run.run_probe`; this module parses the options and renders.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from factedit.cli.common import DeviceOpt, DtypeOpt, ModelOpt, TrustOpt, cli_errors
from factedit.errors import FactEditError
from factedit.lazy import LazyImports

if TYPE_CHECKING:
    from factedit.models import load_model
    from factedit.probing.report import terminal_view
    from factedit.probing.run import ProbeJob, run_probe

# Imported when `probe` runs: torch, scikit-learn, matplotlib (`probe --help` must not).
_heavy = LazyImports(
    globals(),
    {
        "load_model": "factedit.models",
        "terminal_view": "factedit.probing.report",
        "ProbeJob": "factedit.probing.run",
        "run_probe": "factedit.probing.run",
    },
)
__getattr__ = _heavy.getattr

#: factedit.probing.tasks.MIN_LABEL_COUNT (copied: that module is imported lazily)
MIN_LABEL_COUNT = 5

DataArg = Annotated[
    Path | None,
    typer.Argument(help='JSONL examples {"text", "span", "label"} (omit with --facts).'),
]
FactsOpt = Annotated[
    Path | None,
    typer.Option(
        "--facts",
        help="Build the task from a CounterFact file (ROME or flattened layout) or a "
        "known-facts file: which attribute the subject of --relation has.",
    ),
]
RelationOpt = Annotated[
    str | None,
    typer.Option(
        "--relation",
        "-r",
        help="With --facts: the relation (a relation_id, or for flattened CounterFact its "
        "prompt template; the slug --list-relations shows works too).",
    ),
]
ListOpt = Annotated[
    bool, typer.Option("--list-relations", help="With --facts: list the relations and exit.")
]
MinCountOpt = Annotated[
    int,
    typer.Option("--min-count", help="With --facts: drop labels with fewer subjects than this."),
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Directory for probe.{json,png,svg}.")]
SiteOpt = Annotated[
    str, typer.Option("--site", help="residual (layer output), mlp or attn (module output).")
]
TokenOpt = Annotated[str, typer.Option("--token", help="The span's last token, or the mean.")]
SeedsOpt = Annotated[int, typer.Option("--seeds", help="Random splits (mean and std over them).")]
TestSizeOpt = Annotated[
    float, typer.Option("--test-size", help="Fraction of the span strings held out.")
]
LensOpt = Annotated[
    bool,
    typer.Option("--lens", help="Add the logit lens: rank of the label's first token per layer."),
]
PatchOpt = Annotated[
    Path | None,
    typer.Option(
        "--patch",
        help="Apply the probes trained on the model to it with this patch applied, at the "
        "edited subjects.",
    ),
]
EditedOpt = Annotated[
    Path | None,
    typer.Option("--edited", help="As --patch, with an edited model directory (edit apply --out)."),
]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Texts per forward pass.")]
NoMixOpt = Annotated[
    bool, typer.Option("--no-mix", help="Skip the scalar mix and the cumulative gain.")
]
NoCacheOpt = Annotated[
    bool, typer.Option("--no-cache", help="Neither read nor write cached activations.")
]
JsonOpt = Annotated[
    str | None, typer.Option("--json", help="Also write the JSON here ('-' for stdout).")
]


def _list_relations(facts: Path, min_count: int) -> None:
    """One line per relation (long prompt templates are never cut): usable subjects, kept
    labels of all labels, subjects, the name, its slug when it differs, frequent labels."""
    from factedit.probing.tasks import read_facts, relations  # torch-free

    kind, facts_read = read_facts(facts)
    rows = relations(facts_read, min_count)
    con = Console(highlight=False, soft_wrap=True)
    con.print(f"[bold]{'usable':>6}  {'labels':>8}  {'subjects':>8}  relation[/bold]")
    for r in rows:
        labels = f"{r.kept_labels} of {r.labels}"
        name = escape(r.name) + (f"  [dim]({r.slug})[/dim]" if r.slug != r.name.lower() else "")
        top = escape(", ".join(f"{label} {n}" for label, n in r.top))
        con.print(f"{r.usable:>6}  {labels:>8}  {r.subjects:>8}  {name}  [dim]· {top}[/dim]")
    con.print(
        f"{len(rows)} relations ({kind} format); usable: the subjects whose label has at least "
        f"{min_count} subjects (--min-count), what --relation NAME (or its slug) would probe"
    )


@cli_errors
def probe_command(
    data: DataArg = None,
    facts: FactsOpt = None,
    relation: RelationOpt = None,
    list_relations: ListOpt = False,
    min_count: MinCountOpt = MIN_LABEL_COUNT,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    trust_remote_code: TrustOpt = False,
    out: OutOpt = Path("out/probe"),
    site: SiteOpt = "residual",
    token: TokenOpt = "last",
    seeds: SeedsOpt = 5,
    test_size: TestSizeOpt = 0.25,
    lens: LensOpt = False,
    patch: PatchOpt = None,
    edited: EditedOpt = None,
    batch_size: BatchOpt = 16,
    no_mix: NoMixOpt = False,
    no_cache: NoCacheOpt = False,
    json_out: JsonOpt = None,
) -> None:
    """Linear probes per layer: accuracy, control task, selectivity, scalar mix, logit lens."""
    if list_relations:
        if facts is None:
            raise FactEditError("--list-relations needs --facts FILE")
        _list_relations(facts, min_count)
        return
    _heavy.load()
    job = ProbeJob(
        data=data, facts=facts, relation=relation, min_count=min_count, model=model,
        device=device, dtype=dtype, trust_remote_code=trust_remote_code, out=out, site=site,
        token=token, seeds=seeds, test_size=test_size, lens=lens, patch=patch, edited=edited,
        batch_size=batch_size, mix=not no_mix, cache=not no_cache,
        json_copy=Path(json_out) if json_out and json_out != "-" else None,
    )  # fmt: skip
    outcome = run_probe(job, load=load_model)
    if json_out == "-":
        sys.stdout.write(outcome.json_text)
    con = Console(stderr=json_out == "-", highlight=False)
    con.print(terminal_view(outcome.data))
    con.print("wrote " + ", ".join(str(f) for f in outcome.files))
