"""Progress in logs and CI: plain lines with the step, the count, elapsed and time left."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.progress import Progress

import factedit.console as console


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(console.time, "monotonic", lambda: now[0])
    return now


@pytest.fixture
def captured(monkeypatch):
    buffer = io.StringIO()
    monkeypatch.setattr(console, "err_console", Console(file=buffer, width=200))
    return buffer


def test_plain_lines_at_start_every_interval_and_at_the_end(clock, captured):
    bar = console.PlainProgress(interval=30)
    with bar:
        task = bar.add_task("C layer 2", total=100_000)
        clock[0] += 10
        bar.update(task, completed=20_000)  # 10 s since the last line: silent
        clock[0] += 30
        bar.update(task, completed=40_000)  # 40 s in, 40 %: ~60 s left at this rate
        clock[0] += 60
        bar.update(task, completed=100_000)
    lines = captured.getvalue().splitlines()
    assert lines == [
        "· C layer 2: 0/100000 (0%), 0:00:00 elapsed",
        "· C layer 2: 40000/100000 (40%), 0:00:40 elapsed, ~0:01:00 left",
        "· C layer 2: 100000/100000 (100%), 0:01:40 elapsed",
    ]


def test_a_resumed_task_estimates_from_this_runs_rate(clock, captured):
    bar = console.PlainProgress(interval=0)
    task = bar.add_task("C", total=100, completed=50)
    clock[0] += 10
    bar.advance(task, 10)  # 10 per 10 s: 40 left -> 40 s
    assert (
        captured.getvalue().splitlines()[-1] == "· C: 60/100 (60%), 0:00:10 elapsed, ~0:00:40 left"
    )


def test_progress_picks_plain_lines_off_a_terminal_and_nothing_when_quiet(monkeypatch):
    monkeypatch.delenv("FACTEDIT_QUIET", raising=False)
    monkeypatch.setattr(console.sys.stderr, "isatty", lambda: False, raising=False)
    assert isinstance(console.progress(), console.PlainProgress)
    monkeypatch.setattr(console.sys.stderr, "isatty", lambda: True, raising=False)
    assert isinstance(console.progress(), Progress)
    monkeypatch.setenv("FACTEDIT_QUIET", "1")
    quiet = console.progress()
    assert isinstance(quiet, Progress) and quiet.disable
