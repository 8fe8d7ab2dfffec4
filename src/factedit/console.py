"""Human-facing progress output: always on stderr, so stdout stays clean for machines."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

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
#: Seconds between two plain progress lines (logs, CI).
PLAIN_INTERVAL = 30.0


def info(message: str) -> None:
    """One line of progress information for a person (suppressed by FACTEDIT_QUIET=1)."""
    if os.environ.get("FACTEDIT_QUIET") != "1":
        err_console.print(f"[dim]·[/dim] {message}")


def warn(message: str) -> None:
    """One ``warning:`` line on stderr (never suppressed; ``message`` is plain text)."""
    err_console.print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True)


@dataclass
class _Task:
    name: str
    total: float | None
    done: float
    start: float
    said: float

    def line(self, now: float) -> str:
        """``name: done/total (pct), elapsed, ~left`` (what is known of it)."""
        elapsed = now - self.start
        if self.total is None:
            return f"{self.name}: {self.done:g}, {_clock(elapsed)} elapsed"
        text = f"{self.name}: {self.done:g}/{self.total:g}"
        if self.total > 0:
            text += f" ({100 * self.done / self.total:.0f}%)"
        text += f", {_clock(elapsed)} elapsed"
        rate = (self.done - self.base) / elapsed if elapsed > 0 else 0.0
        if rate > 0 and self.done < self.total:
            text += f", ~{_clock((self.total - self.done) / rate)} left"
        return text

    def __post_init__(self) -> None:
        self.base = self.done  # a resumed task's rate counts only this run's work


class PlainProgress:
    """Progress for logs and CI (stderr is not a terminal): plain lines such as

        · C model.layers.2.mlp.down_proj: 40000/100000 (40%), 0:01:10 elapsed, ~0:01:45 left

    when a task starts, then at most every ``interval`` seconds, and when it completes. The
    subset of :class:`rich.progress.Progress` that factedit uses: ``add_task``, ``update``,
    ``advance``, ``disable``, and use as a context manager.
    """

    def __init__(self, interval: float = PLAIN_INTERVAL) -> None:
        self.interval = interval
        self.disable = False
        self._tasks: list[_Task] = []

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, completed: float = 0) -> int:
        now = time.monotonic()
        self._tasks.append(_Task(description, total, completed, now, now))
        self._say(self._tasks[-1], now)
        return len(self._tasks) - 1

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(
        self, task_id: int, *, completed: float | None = None, advance: float | None = None
    ) -> None:
        task = self._tasks[task_id]
        task.done = completed if completed is not None else task.done + (advance or 0)
        now = time.monotonic()
        finished = task.total is not None and task.done >= task.total
        if finished or now - task.said >= self.interval:
            self._say(task, now)

    def _say(self, task: _Task, now: float) -> None:
        task.said = now
        if not self.disable:
            err_console.print(f"[dim]·[/dim] {escape(task.line(now))}", soft_wrap=True)


def _clock(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def progress(transient: bool = True) -> Progress | PlainProgress:
    """Progress on stderr: a rich bar on a terminal, plain lines (:class:`PlainProgress`)
    otherwise, nothing with ``FACTEDIT_QUIET=1``."""
    quiet = os.environ.get("FACTEDIT_QUIET") == "1"
    if not quiet and not sys.stderr.isatty():
        return PlainProgress()
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
        disable=quiet,
    )
