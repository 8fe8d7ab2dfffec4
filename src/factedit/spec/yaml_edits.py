"""One item of a YAML spec's ``edits`` list -> :class:`EditRequest`.

Reads each field on its own (:func:`_yaml_fields`), including the neighbourhood, whose items
are prompts or ``{prompt, answer}`` mappings: when any item gives an explicit answer,
``neighborhood_answers`` holds one answer per prompt (plain strings get ``target_true``);
otherwise it stays empty. Field problems name the key as written (``paraphrases[1]``,
``neighborhood[0].answer``); unknown keys are named by their path (``edits[2].targt_new``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from factedit.spec.checks import _check_request
from factedit.spec.problems import (
    _BAD,
    _check_keys,
    _misspelt,
    _nonempty,
    _opt_id,
    _opt_text,
    _Problems,
    _prompt_text,
    _quote,
    _required,
    _str_list,
    _subject_text,
    _type_name,
    _Where,
)
from factedit.spec.requests import EditRequest

_EDIT_KEYS = (
    "subject",
    "prompt",
    "target_new",
    "target_true",
    "paraphrases",
    "neighborhood",
    "generation_prompts",
    "attribute_prompts",
    "case_id",
    "relation_id",
)
_NEIGHBOR_KEYS = ("prompt", "answer")


def _yaml_field(name: str, index: int | None) -> str:
    """A YAML edit's fields are named as the keys they are written under."""
    return name if index is None else f"{name}[{index}]"


def _raw_label(raw: object, index: int) -> str:
    """``edit #N (subject "...")``, or ``edit #N`` when the subject is unusable."""
    subject = raw.get("subject") if isinstance(raw, Mapping) else None
    if isinstance(subject, str) and subject.strip():
        return f"edit #{index} (subject {_quote(subject.strip())})"
    return f"edit #{index}"


def _yaml_edit(file: str, raw: object, index: int) -> EditRequest:
    """Edit ``index`` of a spec, every field checked; one SpecError lists its problems."""
    where = _Where(file, _raw_label(raw, index))
    if not isinstance(raw, Mapping):
        raise where.error(
            None, f"must be a mapping with subject, prompt and target_new, not {_type_name(raw)}"
        )
    problems = _Problems()
    problems.check(_check_keys, where, raw, _EDIT_KEYS, f"edits[{index}]")
    fields = _yaml_fields(problems, where, raw)
    problems.check(_check_request, where, fields, _yaml_field)
    problems.raise_any(file)
    return EditRequest(**fields)


def _yaml_fields(problems: _Problems, where: _Where, raw: Mapping[Any, Any]) -> dict[str, Any]:
    """The fields of one YAML edit, each read on its own (_BAD where it has a problem)."""

    misspelt = _misspelt(raw, _EDIT_KEYS)

    def required(key: str, reader: Callable[[_Where, str, object], Any] = _nonempty) -> Any:
        if key in misspelt:  # already reported as the unknown key
            return _BAD
        return problems.check(lambda: reader(where, key, _required(where, raw, key)))

    def optional(key: str, reader: Callable[[_Where, str, object], Any] = _str_list) -> Any:
        return problems.check(reader, where, key, raw.get(key))

    subject = required("subject", _subject_text)
    prompt = required("prompt", _prompt_text)
    target_new = required("target_new")
    target_true = optional("target_true", _opt_text)
    paraphrases = optional("paraphrases")
    neighborhood = problems.check(_neighborhood, where, raw.get("neighborhood"), target_true)
    neighbors, answers = (_BAD, _BAD) if neighborhood is _BAD else neighborhood
    return {
        "subject": subject,
        "prompt": prompt,
        "target_new": target_new,
        "target_true": target_true,
        "paraphrases": _fill(paraphrases, subject),
        "neighborhood": neighbors,
        "neighborhood_answers": answers,
        "generation_prompts": _fill(optional("generation_prompts"), subject),
        "attribute_prompts": optional("attribute_prompts"),
        "case_id": optional("case_id", _opt_id),
        "relation_id": optional("relation_id", _opt_id),
    }


def _fill(prompts: tuple[str, ...], subject: str) -> tuple[str, ...]:
    """Put the subject into each prompt's "{}" (left as is when either failed)."""
    if _BAD in (prompts, subject):
        return prompts
    return tuple(p.replace("{}", subject) for p in prompts)


# --------------------------------------------------------------------------- neighbourhood


def _neighborhood(
    where: _Where, value: object, target_true: str | None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Neighborhood prompts and (when any item gives one) their expected answers.

    ``target_true`` is _BAD when it failed: the items then need no answer of their own.
    """
    if value is None:
        return (), ()
    if not isinstance(value, (list, tuple)):
        raise where.error("neighborhood", f"must be a list, not {_type_name(value)}")
    problems = _Problems()
    items = [
        _neighbor_or_bad(problems, where, f"neighborhood[{i}]", item)
        for i, item in enumerate(value)
    ]
    if all(answer is None for _, answer in items):
        problems.raise_any(where.file)
        return tuple(prompt for prompt, _ in items), ()
    answers: list[str] = []
    for i, (_, answer) in enumerate(items):
        fallback = answer if answer is not None else target_true
        if fallback is None:
            problems.add(
                where.error(
                    f"neighborhood[{i}]",
                    "has no answer and the edit has no target_true; "
                    "write it as {prompt: ..., answer: ...} or add target_true",
                )
            )
        answers.append(fallback)
    problems.raise_any(where.file)
    return tuple(prompt for prompt, _ in items), tuple(answers)


def _neighbor_item(where: _Where, key: str, item: object) -> tuple[str, str | None]:
    """One neighborhood item: a prompt string or ``{prompt, answer}``."""
    if not isinstance(item, Mapping):
        return _prompt_text(where, key, item), None
    problems = _Problems()
    problems.check(_check_keys, where, item, _NEIGHBOR_KEYS, key)
    prompt = _BAD
    if "prompt" not in _misspelt(item, _NEIGHBOR_KEYS):
        prompt = problems.check(
            lambda: _prompt_text(
                where, f"{key}.prompt", _required(where, item, "prompt", f"{key}.prompt")
            )
        )
    answer = item.get("answer")
    if answer is not None:
        answer = problems.check(_nonempty, where, f"{key}.answer", answer)
    problems.raise_any(where.file)
    return prompt, answer


def _neighbor_or_bad(problems: _Problems, where: _Where, key: str, item: object) -> tuple[Any, Any]:
    """A checked neighborhood item; a failed one counts as having an answer if it gives one."""
    checked = problems.check(_neighbor_item, where, key, item)
    if checked is not _BAD:
        return checked
    gives_answer = isinstance(item, Mapping) and item.get("answer") is not None
    return _BAD, _BAD if gives_answer else None
