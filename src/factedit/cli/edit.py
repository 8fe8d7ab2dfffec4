"""``factedit edit``: validate a spec, or apply its edits and show before/after."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from factedit.cli.common import (
    CorpusOpt,
    DeviceMapOpt,
    DeviceOpt,
    DtypeOpt,
    LayersOpt,
    MaxMemoryOpt,
    MethodOpt,
    ModelOpt,
    TrustOpt,
    announce_corpus,
    cli_errors,
    fail,
    load_spec_model,
    parse_layers,
)
from factedit.console import warn
from factedit.errors import SpecError
from factedit.lazy import LazyImports
from factedit.paths import atomic_write_text
from factedit.spec import load_spec

if TYPE_CHECKING:
    from factedit.apply import (
        EditRecord,
        EditRun,
        apply_spec,
        check_prompt_lengths,
        save_edited_model,
        verdict_totals,
    )
    from factedit.evaluate.probe import report_probe
    from factedit.models.loading import LoadedModel
    from factedit.patch.model_dir import model_bytes
    from factedit.report import method_variant
    from factedit.session import EditSession
    from factedit.spec import EditSpec

# The names above, imported when `edit apply` runs: they import torch (validate must not).
_heavy = LazyImports(
    globals(),
    {
        "apply_spec": "factedit.apply",
        "check_prompt_lengths": "factedit.apply",
        "save_edited_model": "factedit.apply",
        "verdict_totals": "factedit.apply",
        "report_probe": "factedit.evaluate.probe",
        "method_variant": "factedit.report",
        "model_bytes": "factedit.patch.model_dir",
        "EditSession": "factedit.session",
    },
)
__getattr__ = _heavy.getattr

edit_app = typer.Typer(
    help="Apply the edits of a YAML spec (or CounterFact file).", no_args_is_help=True
)
out = Console(highlight=False)

SpecArg = Annotated[Path, typer.Argument(help="Edit spec (.yaml) or CounterFact/zsRE .json.")]
# The options of `edit apply`; typer derives each option's name from its parameter's.
LimitOpt = Annotated[int | None, typer.Option(help="Use at most N edits/records.")]
OffsetOpt = Annotated[int, typer.Option(help="Skip the first K edits/records.")]
OutDirOpt = Annotated[
    Path | None, typer.Option("--out", help="Write the edited model here (HF directory).")
]
OverwriteOpt = Annotated[bool, typer.Option(help="Replace an existing --out directory.")]
JsonOpt = Annotated[
    Path | None, typer.Option("--json", help="Write the before/after numbers as JSON.")
]
PatchOpt = Annotated[
    Path | None,
    typer.Option(
        "--patch", help="Write the edits as a patch file (deltas + provenance, KB for ROME)."
    ),
]
KeepOriginalOpt = Annotated[
    bool,
    typer.Option(help="Store the edited weights' originals in the patch (bit-exact revert)."),
]
AllowLargeUpdatesOpt = Annotated[
    bool, typer.Option(help="Apply updates whose norm looks like a disabling edit.")
]


@edit_app.command("validate")
@cli_errors
def validate_command(spec_path: SpecArg) -> None:
    """Check a spec without loading any model."""
    spec = load_spec(spec_path)
    out.print(f"[green]ok[/green] {spec_path}: {_edits(len(spec.edits))}, method {spec.method}")


def _edits(n: int) -> str:
    return f"{n} edit{'' if n == 1 else 's'}"


@edit_app.command("apply")
@cli_errors
def apply_command(
    spec_path: SpecArg,
    model: ModelOpt = None,
    method: MethodOpt = None,
    layers: LayersOpt = None,
    corpus: CorpusOpt = None,
    limit: LimitOpt = None,
    offset: OffsetOpt = 0,
    out_dir: OutDirOpt = None,
    overwrite: OverwriteOpt = False,
    json_path: JsonOpt = None,
    patch_path: PatchOpt = None,
    keep_original: KeepOriginalOpt = False,
    allow_large_updates: AllowLargeUpdatesOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    trust_remote_code: TrustOpt = False,
    device_map: DeviceMapOpt = None,
    max_memory: MaxMemoryOpt = None,
) -> None:
    """Edit the model: compute the updates (ROME, or one batch for MEMIT / AlphaEdit /
    EMMET), apply them, show before/after.

    Under `torchrun --nproc-per-node K -m factedit edit apply ...` the K processes share the
    statistics and MEMIT's z optimisation; rank 0 alone reports and writes."""
    from factedit.stats.distributed import join_from_env

    _heavy.load()
    spec = load_spec(spec_path, limit=limit, offset=offset)
    ranks = join_from_env(device)
    if out_dir is not None and out_dir.exists() and not overwrite:
        raise SpecError(f"--out {out_dir} already exists; pass --overwrite to replace it")
    announce_corpus(corpus, spec.hparams)
    lm = load_spec_model(
        model, spec, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
        device_map=device_map, max_memory=max_memory,
    )  # fmt: skip
    check_prompt_lengths(lm, spec, offset=offset)
    session = open_session(
        lm, spec, method, parse_layers(layers) or spec.layers, corpus, allow_large_updates
    )
    if ranks.main:
        out.print(
            f"model [bold]{lm.name}[/bold] · {method_label(session)} · layer "
            f"{', '.join(map(str, session.layers))} ({session.layer_reason})"
        )
    run = apply_spec(lm, spec, session)
    if not ranks.main:
        return  # every rank holds the same edits; rank 0 reports and writes them
    render_run(run)
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(run.to_dict(lm), indent=2))
        out.print(f"wrote {json_path}")
    if run.refused:
        raise refused_failure(run, [p for p in (out_dir, patch_path) if p is not None])
    if patch_path is not None:
        write_patch(run, patch_path, keep_original=keep_original)
    if out_dir is not None:
        save_edited_model(lm, out_dir, run, overwrite=overwrite)
        out.print(f"wrote the edited model to {out_dir}")


def refused_failure(run: EditRun, unwritten: Sequence[Path]) -> typer.Exit:
    """The exit (after an ``error:`` line) of a run with refused edits: nothing is written."""
    first = run.refused[0]
    verb = "was" if len(unwritten) == 1 else "were"
    names = " and ".join(map(str, unwritten))
    written = f"; {names} {verb} not written" if unwritten else ""
    return fail(
        f"refused: {len(run.refused)} of {len(run.records)} edits were not applied{written} "
        f"(first: {first.reason})"
    )


def render_run(run: EditRun) -> None:
    """Each edit's before/after (up to :data:`SHOWN_EDITS`), the verdicts, the fluency probe."""
    if len(run.records) <= SHOWN_EDITS:
        for index, record in enumerate(run.records):
            render_record(index, record)
    render_verdicts(run.records)
    if run.fluency_probe is not None:
        report_probe(run.fluency_probe)


def write_patch(run: EditRun, path: Path, *, keep_original: bool) -> None:
    """``--patch``: the run's deltas, edits and evaluation summary as a patch file."""
    patch = run.session.patch(evaluation=run.evaluation_summary(), keep_original=keep_original)
    size = patch.save(path)
    weights = model_bytes(run.session.lm)
    out.print(
        f"wrote the patch to {path}: {size:,} bytes (the model's weights are {weights:,} bytes)"
    )


def open_session(
    lm: LoadedModel,
    spec: EditSpec,
    method: str | None,
    layers: Sequence[int] | str,
    corpus: list[str] | None,
    allow_large_updates: bool,
) -> EditSession:
    """The edit session of ``edit apply``: ``--method`` over the spec's ``method:``."""
    return EditSession(
        lm,
        method=method or spec.method,
        layers=layers,
        hparams=spec.hparams,
        corpus=corpus,
        seed=spec.seed,
        requests=spec.edits,
        allow_large_updates=allow_large_updates,
    )


def method_label(session: EditSession) -> str:
    """``method rome (value_scale: norm)``: the method and the setting that names its variant."""
    settings = {"method": session.method, "hparams_resolved": session.hparams.to_dict()}
    return "method " + method_variant(settings)


#: Up to this many edits, ``edit apply`` prints each one's table and verdict line; beyond
#: it, the totals (the JSON report has every edit).
SHOWN_EDITS = 10


def render_verdicts(records: Sequence[EditRecord]) -> None:
    """One verdict line per edit, then a warning for each neighbour an edit changed (for
    more than :data:`SHOWN_EDITS` edits, the totals over all of them)."""
    out.print("[bold]verdict[/bold]")
    if len(records) > SHOWN_EDITS:
        _render_totals(records)
        return
    for index, record in enumerate(records):
        req = record.request
        line = f"REFUSED ({record.reason})" if record.status == "refused" else record.verdict.line()
        out.print(f"  edit #{index} {req.subject} → {req.target_new}: {line}")
    for index, record in enumerate(records):
        req = record.request
        if record.status == "refused":
            continue
        for changed in record.verdict.changed:
            warn(
                f"edit #{index} ({req.subject} → {req.target_new}) changed a neighbour: "
                f'"{changed.prompt}" now prefers {changed.now} over {changed.answer}'
            )


def _render_totals(records: Sequence[EditRecord]) -> None:
    """Passed / total over every edit, per group (many edits at once)."""
    totals = verdict_totals(records)
    parts = [f"{name.replace('_', ' ')} {done}/{of}" for name, (done, of) in totals.items() if of]
    refused = sum(r.status == "refused" for r in records)
    out.print(
        f"  {len(records)} edits: " + ", ".join(parts) + (f"; refused {refused}" if refused else "")
    )


def _pct(p: float | None) -> str:
    return "—" if p is None else f"{100 * p:5.1f}%"


def render_record(index: int, record: EditRecord) -> None:
    """A before/after table for one edit, then the greedy generations."""
    req = record.request
    if record.deltas:
        meta = record.deltas[0].meta
        how = f"layer {meta['layer']}, ‖ΔW‖/‖W‖ {meta['relative_norm']:.3f}"
    else:
        how = "refused, not applied"
    title = (
        f"edit #{index}: {req.subject} · {req.target_true or '?'} → {req.target_new}"
        f"  ({how}, {record.seconds:.1f}s)"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("group")
    table.add_column("prompt", overflow="fold", max_width=60)
    table.add_column("P(true) before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("P(new) before", justify="right")
    table.add_column("after", justify="right")
    for b, a in zip(record.before.prompts, record.after.prompts, strict=True):
        expected_b, expected_a = b.expected, a.expected
        label = b.group if b.answer_text is None else f"{b.group} ({b.answer_text})"
        table.add_row(
            label,
            b.prompt,
            _pct(expected_b.prob if expected_b else None),
            _pct(expected_a.prob if expected_a else None),
            _pct(b.new.prob),
            _pct(a.new.prob),
        )
    out.print(table)
    out.print(
        Panel(
            f"[dim]before:[/dim] {req.rewrite_prompt}{record.generation_before}\n"
            f"[dim]after: [/dim] {req.rewrite_prompt}{record.generation_after}",
            title="greedy generation",
            title_align="left",
        )
    )
