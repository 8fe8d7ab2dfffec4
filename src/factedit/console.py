"""Human-facing progress output: always on stderr, so stdout stays clean for machines."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

err_console = Console(stderr=True, highlight=False)


def info(message: str) -> None:
    """One line of progress information for a person (suppressed by FACTEDIT_QUIET=1)."""
    if os.environ.get("FACTEDIT_QUIET") != "1":
        err_console.print(f"[dim]·[/dim] {message}")


def warn(message: str) -> None:
    """One ``warning:`` line on stderr (never suppressed; ``message`` is plain text)."""
    err_console.print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True)


def progress(transient: bool = True) -> Progress:
    """A rich progress bar on stderr; disabled when stderr is not a terminal or quiet."""
    disable = os.environ.get("FACTEDIT_QUIET") == "1" or not sys.stderr.isatty()
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
        disable=disable,
    )
