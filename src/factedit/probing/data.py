"""Probing examples: a text, a character span in it (the thing probed) and a label.

    examples = read_jsonl("task.jsonl")       # one {"text", "span", "label"} object a line
    check_task(examples, "task.jsonl")        # at least two labels
    data_hash(examples)                       # what the activations depend on

``span`` is a substring of ``text`` (its *first* occurrence is used) or ``[start, end]``
character offsets (``text[start:end]``). Labels are compared as strings (``1`` and ``"1"``
are one label). Every problem is a one-line :class:`~factedit.errors.ProbeDataError` naming
the file and the line, before any model is loaded. Blank lines are skipped.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factedit.errors import ProbeDataError


@dataclass(frozen=True)
class ProbeExample:
    """One example: ``text``, the span ``[start, end)`` (character offsets) and its label.

    ``group`` is the span's string, the unit of the train / test split (no span string on
    both sides) and of the control task.
    """

    text: str
    start: int
    end: int
    label: str

    @property
    def group(self) -> str:
        return self.text[self.start : self.end]


def _span(where: str, text: str, span: Any) -> tuple[int, int]:
    """The character span of ``span`` (a substring or ``[start, end]``) in ``text``."""
    if isinstance(span, str):
        start = text.find(span) if span else -1
        if start < 0:
            raise ProbeDataError(f"{where}: span {json.dumps(span)} does not occur in its text")
        return start, start + len(span)
    ok = (
        isinstance(span, list)
        and len(span) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) for x in span)
    )
    if not ok:
        raise ProbeDataError(
            f'{where}: "span" must be a substring of the text or [start, end] character '
            f"offsets, not {json.dumps(span)}"
        )
    start, end = span
    if not 0 <= start < end <= len(text):
        raise ProbeDataError(
            f"{where}: span [{start}, {end}] is not inside its text ({len(text)} characters)"
        )
    return start, end


def parse_example(where: str, line: str) -> ProbeExample:
    """One JSONL line -> a :class:`ProbeExample`; ``where`` (``FILE:N``) prefixes errors."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ProbeDataError(
            f"{where}: not a JSON object ({exc.msg} at column {exc.colno}); the file must be "
            'JSONL, one {"text": ..., "span": ..., "label": ...} object a line'
        ) from None
    if not isinstance(record, dict):
        raise ProbeDataError(f"{where}: expected a JSON object, not {type(record).__name__}")
    for key in ("text", "span", "label"):
        if key not in record:
            raise ProbeDataError(f'{where}: missing field "{key}"')
    text, label = record["text"], record["label"]
    if not isinstance(text, str) or not text:
        raise ProbeDataError(f'{where}: "text" must be a non-empty string')
    if isinstance(label, bool) or not isinstance(label, str | int) or str(label) == "":
        raise ProbeDataError(f'{where}: "label" must be a non-empty string or an integer')
    start, end = _span(where, text, record["span"])
    return ProbeExample(text, start, end, str(label))


def read_jsonl(path: str | Path) -> list[ProbeExample]:
    """Every example of a JSONL file (see the module docstring); checks each line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ProbeDataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProbeDataError(f"{path}: cannot read it ({exc})") from None
    examples = [
        parse_example(f"{path}:{n}", line) for n, line in enumerate(lines, 1) if line.strip()
    ]
    if not examples:
        raise ProbeDataError(f"{path}: no examples (the file is empty)")
    return examples


def check_task(examples: Sequence[ProbeExample], source: str) -> None:
    """A probe needs two labels and two span strings; a one-line error naming ``source``."""
    labels = Counter(e.label for e in examples)
    if len(labels) < 2:
        (only,) = labels
        raise ProbeDataError(
            f'{source}: all {len(examples)} examples have the label "{only}"; a probe needs '
            "at least two labels"
        )
    if len({e.group for e in examples}) < 2:
        raise ProbeDataError(
            f"{source}: every example has the same span string; the split by span string "
            "needs at least two"
        )


def data_hash(examples: Sequence[ProbeExample]) -> str:
    """sha256 of the texts and spans (not the labels: activations do not depend on them, so
    relabelling a task reuses its cached activations)."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.text, e.start, e.end]).encode())
        h.update(b"\n")
    return h.hexdigest()


def label_counts(examples: Sequence[ProbeExample]) -> dict[str, int]:
    """Label -> number of examples, most frequent first."""
    return dict(Counter(e.label for e in examples).most_common())
