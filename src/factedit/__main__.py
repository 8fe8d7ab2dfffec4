"""``python -m factedit``: the CLI (also what ``torchrun -m factedit ...`` starts per rank)."""

from factedit.cli.main import app

app(prog_name="factedit")
