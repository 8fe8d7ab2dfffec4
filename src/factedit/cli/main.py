"""``factedit``: trace where a fact is stored, edit it, evaluate the edit."""

from __future__ import annotations

import typer

from factedit import __version__
from factedit.cli.edit import edit_app
from factedit.cli.eval import eval_command, plot_command
from factedit.cli.generate import generate_command
from factedit.cli.models import models_app
from factedit.cli.patch import patch_app
from factedit.cli.probe import probe_command
from factedit.cli.stats import stats_app
from factedit.cli.trace import trace_command

app = typer.Typer(
    name="factedit",
    help="Locate and rewrite facts in transformer language models: causal tracing, ROME, "
    "MEMIT, AlphaEdit and EMMET editing, evaluation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(edit_app, name="edit")
app.add_typer(models_app, name="models")
app.add_typer(patch_app, name="patch")
app.add_typer(stats_app, name="stats")
app.command("trace")(trace_command)
app.command("probe")(probe_command)
app.command("eval")(eval_command)
app.command("plot")(plot_command)
app.command("generate")(generate_command)


def _version(flag: bool) -> None:
    if flag:
        typer.echo(f"factedit {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Locate and rewrite facts in transformer language models."""


if __name__ == "__main__":
    app()
