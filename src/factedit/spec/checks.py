"""Checks on converted edits that every reader shares: content, uniqueness, selection.

Each reader (YAML edits, CounterFact, zsRE and flattened CounterFact records) turns one item
into the fields of an :class:`EditRequest`, then :func:`_check_request` checks their content
(the prompt's "{}", target_new vs target_true, the subject in each paraphrase) under the
reader's own field names. :func:`_collect_edits` converts the items chosen by
:func:`_select` (``offset`` / ``limit``) one by one and then checks that no two edits share
subject and prompt, collecting every problem.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from factedit.spec.problems import _BAD, FieldNamer, _Problems, _quote, _Where
from factedit.spec.requests import EditRequest


def _check_prompt(where: _Where, prompt: str, key: str) -> None:
    """The prompt holds "{}" exactly once, where the subject goes."""
    count = prompt.count("{}")
    if count != 1:
        raise where.error(
            key, f'must contain "{{}}" exactly once where the subject goes (found {count})'
        )


def _check_request(where: _Where, fields: Mapping[str, Any], names: FieldNamer) -> None:
    """Content checks shared by every reader, on the fields of one :class:`EditRequest`
    (named by ``names``); a check that needs a field that failed (_BAD) is skipped."""
    problems = _Problems()
    subject, prompt = fields["subject"], fields["prompt"]
    target_new, target_true = fields["target_new"], fields.get("target_true")
    if prompt is not _BAD:
        problems.check(_check_prompt, where, prompt, names("prompt", None))
    if target_true not in (None, _BAD) and target_new is not _BAD and target_new == target_true:
        problems.add(
            where.error(
                names("target_new", None),
                f"equals target_true ({_quote(target_true)}); an edit must change the answer",
            )
        )
    paraphrases = fields["paraphrases"]
    for i, paraphrase in enumerate(() if _BAD in (subject, paraphrases) else paraphrases):
        if subject not in paraphrase:
            problems.add(
                where.error(
                    names("paraphrases", i),
                    f"does not contain the subject {_quote(subject)} (case-sensitive); "
                    "write the subject (or {}) into it",
                )
            )
    problems.raise_any(where.file)


def _check_unique(file: str, edits: Sequence[EditRequest], labels: Sequence[str]) -> None:
    """No two edits share subject and prompt (duplicates or conflicting targets); every
    repeat is a problem of its own."""
    problems = _Problems()
    seen: dict[tuple[str, str], int] = {}
    for i, edit in enumerate(edits):
        key = (edit.subject, edit.prompt)
        if key not in seen:
            seen[key] = i
            continue
        first = seen[key]
        where = _Where(file, labels[i])
        if edits[first].target_new == edit.target_new:
            problems.add(
                where.error(
                    None,
                    f"duplicates {labels[first]} (same subject, prompt and target_new); remove one",
                )
            )
            continue
        problems.add(
            where.error(
                "target_new",
                f"conflicts with {labels[first]}: same subject and prompt but target_new "
                f"{_quote(edit.target_new)} vs {_quote(edits[first].target_new)}; keep one",
            )
        )
    problems.raise_any(file)


def _collect_edits(
    file: str,
    items: Sequence[Any],
    indices: range,
    convert: Callable[[str, object, int], EditRequest],
    label: Callable[[EditRequest, object, int], str],
) -> tuple[EditRequest, ...]:
    """Convert each chosen edit / record on its own, then check uniqueness among the valid
    ones; one SpecError lists the problems of all of them."""
    problems = _Problems()
    converted = [(i, problems.check(convert, file, items[i], i)) for i in indices]
    valid = [(i, edit) for i, edit in converted if edit is not _BAD]
    labels = [label(edit, items[i], i) for i, edit in valid]
    problems.check(_check_unique, file, [edit for _, edit in valid], labels)
    problems.raise_any(file)
    return tuple(edit for _, edit in converted)


def _select(where: _Where, items: Sequence[Any], limit: int | None, offset: int) -> range:
    """Indices of the records chosen by ``offset`` / ``limit``."""
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise where.error(None, f"offset must be a non-negative integer, not {offset!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise where.error(None, f"limit must be a positive integer or None, not {limit!r}")
    if offset >= len(items):
        raise where.error(None, f"offset {offset} selects nothing: only {len(items)} edits")
    stop = len(items) if limit is None else min(len(items), offset + limit)
    return range(offset, stop)
