"""``factedit generate``: greedy continuations of prompts, with patches applied in memory.

    factedit generate --patch eiffel.patch.safetensors "The Eiffel Tower is in" --compare

No model directory is written: the patches are checked against the model, applied for the
generation and reverted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from factedit.cli.common import DeviceOpt, DtypeOpt, TrustOpt, cli_errors, load_model

out = Console(highlight=False)


@cli_errors
def generate_command(
    prompts: Annotated[list[str], typer.Argument(help="Prompts to continue.")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Preset, hub id, model directory or .gguf (default: the first patch's model, "
            "else gemma-3-270m).",
        ),
    ] = None,
    patch: Annotated[
        list[Path] | None,
        typer.Option("--patch", help="Patch file to apply first (repeatable, in order)."),
    ] = None,
    compare: Annotated[
        bool, typer.Option(help="Print the unpatched continuation beside the patched one.")
    ] = False,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate per prompt.")] = 20,
    force: Annotated[bool, typer.Option(help="Apply a patch that does not fit (warns).")] = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    trust_remote_code: TrustOpt = False,
) -> None:
    """Greedy continuations of PROMPTS, with --patch files applied in memory."""
    from factedit.evaluate import generate_text
    from factedit.patch import Patch

    patches = [Patch.load(p) for p in patch or []]  # checked before the model loads
    named = patches[0].info.get("model") if patches else None
    lm = load_model(model or named, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    before = generate_text(lm, prompts, max_new_tokens=max_new_tokens) if compare else None
    for p in patches:
        p.apply(lm, force=force)
    try:
        after = generate_text(lm, prompts, max_new_tokens=max_new_tokens)
    finally:
        for p in reversed(patches):
            p.revert(lm)
    if before is None:
        for prompt, text in zip(prompts, after, strict=True):
            out.print(f"{escape(prompt)}[bold]{escape(text)}[/bold]")
        return
    table = Table(show_lines=True)
    table.add_column("prompt", overflow="fold")
    table.add_column("without the patch" + ("es" if len(patches) > 1 else ""), overflow="fold")
    table.add_column("with " + ", ".join(p.name for p in patch or []), overflow="fold")
    for prompt, b, a in zip(prompts, before, after, strict=True):
        table.add_row(escape(prompt), escape(b), escape(a))
    out.print(table)
