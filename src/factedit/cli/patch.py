"""``factedit patch``: show, apply, revert, merge and export edit patches.

A patch is the file ``factedit edit apply SPEC --patch FILE`` writes: the low-rank deltas of a
set of edits with the fingerprint of the model they were made on (:mod:`factedit.patch`).
Every command checks the file (checksum) and the model (fingerprint) before it changes or
writes anything; a problem is one ``error:`` line and exit 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from factedit.cli.common import DeviceOpt, DtypeOpt, TrustOpt, cli_errors, load_model
from factedit.console import info
from factedit.errors import FactEditError
from factedit.lazy import LazyImports

if TYPE_CHECKING:
    from factedit.patch import Patch
    from factedit.patch.compose import compose_states, merge
    from factedit.patch.model_dir import write_model_dir
    from factedit.patch.peft_export import export_peft

_heavy = LazyImports(
    globals(),
    {
        "Patch": "factedit.patch",
        "compose_states": "factedit.patch.compose",
        "merge": "factedit.patch.compose",
        "write_model_dir": "factedit.patch.model_dir",
        "export_peft": "factedit.patch.peft_export",
    },
)
__getattr__ = _heavy.getattr

patch_app = typer.Typer(
    help="Show, apply, revert, merge and export edit patches.", no_args_is_help=True
)
out = Console(highlight=False, soft_wrap=True)

PatchArg = Annotated[Path, typer.Argument(help="A patch file (edit apply --patch FILE).")]
PatchesArg = Annotated[list[Path], typer.Argument(help="Patch files, applied in this order.")]
ModelArg = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Preset, hub id, model directory or .gguf (default: the model the patch names).",
    ),
]
OutArg = Annotated[Path, typer.Option("--out", help="Where to write the result.")]
OverwriteOpt = Annotated[bool, typer.Option(help="Replace an existing --out.")]
ForceOpt = Annotated[
    bool,
    typer.Option(help="Go on (with a warning) when the model is not the one the patch fits."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]


def _free(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FactEditError(f"--out {path} already exists; pass --overwrite to replace it")


def patch_summary(patch: Patch, path: Path) -> dict[str, Any]:
    """What ``patch show`` prints: provenance, edits, and per weight rank and norms."""
    info_ = patch.info
    weights = []
    for name in patch.params:
        deltas = [d for d in patch.deltas if d.param == name]
        total = sum(d.dense() for d in deltas)
        weight_norm = patch.info["base"]["tensors"][name].get("norm")
        delta_norm = float(total.norm())
        weights.append(
            {
                "weight": name,
                "layer": deltas[0].meta.get("layer"),
                "rank": sum(d.rank for d in deltas),
                "delta_norm": delta_norm,
                "weight_norm": weight_norm,
                "relative_norm": None if not weight_norm else delta_norm / weight_norm,
            }
        )
    base = info_["base"]
    state = patch.state[1] if patch.state is not None else None
    return {
        "file": str(path),
        "bytes": path.stat().st_size,
        "model": info_.get("model"),
        "base_identity": info_.get("base_identity"),
        "model_type": base.get("model_type"),
        "config_sha256": base.get("config_sha256"),
        "method": info_.get("method"),
        "layers": info_.get("layers"),
        "created": info_.get("created"),
        "factedit": info_.get("factedit"),
        "keep_original": info_.get("keep_original"),
        "edits": info_.get("edits", []),
        "weights": weights,
        "sequential_state": state,
        "evaluation": info_.get("evaluation"),
    }


@patch_app.command("show")
@cli_errors
def show_command(path: PatchArg, as_json: JsonOpt = False) -> None:
    """What a patch changes: edits, layers, ranks, ‖ΔW‖/‖W‖ per weight, and its base model."""
    _heavy.load()
    summary = patch_summary(Patch.load(path), path)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    out.print(
        f"[bold]{path}[/bold] · {summary['bytes']:,} bytes · {summary['method']} · layers "
        f"{', '.join(map(str, summary['layers'] or []))} · {len(summary['edits'])} edit(s)"
    )
    out.print(
        f"base: {summary['model']} ({summary['model_type']}, config "
        f"{summary['config_sha256'][:12]}, identity {summary['base_identity']}) · made "
        f"{summary['created']} with factedit {summary['factedit']}"
        + (" · keeps the original weights" if summary["keep_original"] else "")
    )
    table = Table(title="weights", title_justify="left")
    for column in ("weight", "rank", "‖ΔW‖", "‖W‖", "‖ΔW‖/‖W‖"):
        table.add_column(column, justify="left" if column == "weight" else "right")
    for w in summary["weights"]:
        norm = "—" if w["weight_norm"] is None else f"{w['weight_norm']:.2f}"
        rel = "—" if w["relative_norm"] is None else f"{w['relative_norm']:.4f}"
        table.add_row(escape(w["weight"]), str(w["rank"]), f"{w['delta_norm']:.4f}", norm, rel)
    out.print(table)
    for edit in summary["edits"][:10]:
        prompt = edit.get("prompt", "").replace("{}", edit.get("subject", ""))
        true = f"{edit['target_true']} → " if edit.get("target_true") else ""
        out.print(escape(f"  {prompt} {true}{edit.get('target_new')}"))
    if len(summary["edits"]) > 10:
        out.print(f"  … and {len(summary['edits']) - 10} more (--json lists them all)")
    if summary["sequential_state"]:
        state = summary["sequential_state"]
        out.print(f"sequential state: {state['method']}, keys of {state['n_edits']} edits")


@patch_app.command("apply")
@cli_errors
def apply_command(
    paths: PatchesArg,
    out_dir: OutArg,
    model: ModelArg = None,
    force: ForceOpt = False,
    overwrite: OverwriteOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    trust_remote_code: TrustOpt = False,
) -> None:
    """Apply patches in order to a model and write the patched model directory."""
    _heavy.load()
    _free(out_dir, overwrite)
    patches = [Patch.load(p) for p in paths]  # every file checked before the model loads
    lm = load_model(
        model or patches[0].info.get("model"),
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )
    state = compose_states([p.state for p in patches])
    before = {k: v.detach().clone() for k, v in lm.model.named_parameters()}
    for path, patch in zip(paths, patches, strict=True):
        patch.apply(lm, force=force)
        out.print(f"applied {path} ({len(patch.info.get('edits', []))} edit(s), checked)")
    deltas = [d for p in patches for d in p.deltas]
    touched = {d.param for d in deltas}
    record = Patch.from_deltas(
        lm,
        deltas,
        {k: v for k, v in before.items() if k in touched},
        state=state,
        model=lm.name,
        base_identity=lm.base_identity,
        method=_joined(p.info.get("method") for p in patches),
        layers=sorted({layer for p in patches for layer in p.info.get("layers", [])}),
        edits=[e for p in patches for e in p.info.get("edits", [])],
        merged_from=[str(p) for p in paths],
    )
    write_model_dir(lm, out_dir, record, overwrite=overwrite)
    out.print(f"wrote the patched model to {out_dir}")


def _joined(methods: Any) -> str:
    return "+".join(dict.fromkeys(str(m) for m in methods))


@patch_app.command("revert")
@cli_errors
def revert_command(
    path: PatchArg,
    out_dir: OutArg,
    model: ModelArg = None,
    force: ForceOpt = False,
    overwrite: OverwriteOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
) -> None:
    """Undo a patch on a model that carries it and write the result.

    Bit for bit with a patch made with --keep-original; otherwise within float rounding,
    checked against the recorded hash and reported."""
    _heavy.load()
    _free(out_dir, overwrite)
    patch = Patch.load(path)
    lm = load_model(model or patch.info.get("model"), device=device, dtype=dtype)
    exact = patch.revert(lm, force=force)
    empty = Patch.from_deltas(lm, [], {}, model=lm.name, base_identity=lm.base_identity)
    lm.source_dir = None  # the reverted weights are the base again: no patch to carry on
    write_model_dir(lm, out_dir, empty, overwrite=overwrite)
    how = "bit for bit" if exact else "within float rounding (not bit for bit)"
    out.print(f"reverted {path} {how}; wrote {out_dir}")


@patch_app.command("merge")
@cli_errors
def merge_command(paths: PatchesArg, out_path: OutArg, overwrite: OverwriteOpt = False) -> None:
    """Merge patches into one that applies as them in order (each made on the one before)."""
    _heavy.load()
    _free(out_path, overwrite)
    merged = merge([Patch.load(p) for p in paths])
    size = merged.save(out_path)
    out.print(f"wrote {out_path}: {len(merged.deltas)} deltas, {size:,} bytes")


@patch_app.command("export")
@cli_errors
def export_command(
    path: PatchArg,
    out_dir: OutArg,
    format_: Annotated[str, typer.Option("--format", help="Export format: peft.")] = "peft",
    overwrite: OverwriteOpt = False,
) -> None:
    """Export a patch as a PEFT LoRA adapter directory (PeftModel.from_pretrained loads it)."""
    if format_ != "peft":
        raise FactEditError(f"--format {format_}: the only export format is peft")
    _heavy.load()
    _free(out_dir, overwrite)
    config = export_peft(Patch.load(path), out_dir, overwrite=overwrite)
    size = sum(f.stat().st_size for f in out_dir.iterdir())
    info(f"LoRA rank {config['r']} on {len(config['target_modules'])} module(s)")
    out.print(f"wrote the PEFT adapter to {out_dir} ({size:,} bytes)")
