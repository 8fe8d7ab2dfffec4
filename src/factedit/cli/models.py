"""``factedit models``: list the presets and what is cached; fetch one ahead of time."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from factedit.cli.common import cli_errors
from factedit.errors import ModelLoadError
from factedit.models.presets import DEFAULT_MODEL, IDENTITY_FILE, get_preset, list_presets
from factedit.paths import home

models_app = typer.Typer(
    help="Model presets: list them, fetch one ahead of time.", no_args_is_help=True
)
out = Console(highlight=False)


@models_app.command("list")
@cli_errors
def list_command() -> None:
    """Presets, whether their GGUF is fetched and whether the dequantised copy is cached."""
    # Reads the cache directory and the preset YAML files only: no torch, it answers at once.
    table = Table("preset", "description", "fetched", "converted", title=f"cache: {home()}")
    for name, preset in list_presets().items():
        converted = any(
            (d / IDENTITY_FILE).is_file() and preset.gguf_name in (d / IDENTITY_FILE).read_text()
            for d in (home() / "models").glob("gguf-*")
        )
        label = f"{name} (default)" if name == DEFAULT_MODEL else name
        table.add_row(label, preset.description, _yes(preset.is_fetched()), _yes(converted))
    out.print(table)


@models_app.command("fetch")
@cli_errors
def fetch_command(
    name: Annotated[str, typer.Argument(help="Preset name (see `factedit models list`).")],
) -> None:
    """Fetch a preset's weights (network) and dequantise them into the cache."""
    preset = get_preset(name)
    if preset is None:
        raise ModelLoadError(f'unknown preset "{name}"; presets: {", ".join(list_presets())}')
    from factedit.models.loading import ensure_preset  # imports torch and transformers

    path = ensure_preset(preset)
    out.print(f"{name}: ready in {path}")


def _yes(flag: bool) -> str:
    return "[green]yes[/green]" if flag else "no"
