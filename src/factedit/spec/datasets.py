"""Benchmark records -> :class:`EditSpec`: CounterFact, zsRE and flattened CounterFact.

A benchmark file is a JSON list of records; the layout is detected from the first record:

- CounterFact, ROME layout (kind ``"counterfact"``): ``requested_rewrite`` with ``subject``,
  ``prompt`` (with "{}"), ``target_new.str``, ``target_true.str``, plus
  ``paraphrase_prompts``, ``neighborhood_prompts`` (expected answer: target_true) and optional
  ``generation_prompts`` / ``attribute_prompts``;
- zsRE (kind ``"zsre"``): ``subject``, ``src`` (the question), ``answers``, ``rephrase``,
  ``loc`` and ``loc_ans`` (the neighbour question and its answer);
- CounterFact, flattened EasyEdit / MEND layout (kind ``"counterfact"``): ``subject``,
  ``prompt`` (the subject written out), ``target_new``, ``ground_truth`` (target_true),
  optional ``rephrase_prompt``, and ``locality_prompt`` with its answer
  ``locality_ground_truth``.

Each record is converted on its own, its problems named ``record #N (case_id C, subject
"S")`` and by the record's own field path (``missing field "requested_rewrite.subject"``);
then all converted records get the duplicate / conflict checks of a spec.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from factedit.errors import SpecError
from factedit.spec.checks import _check_request, _collect_edits, _select
from factedit.spec.problems import (
    _BAD,
    _describe,
    _is_int,
    _nonempty,
    _one_line,
    _opt_id,
    _Problems,
    _prompt_text,
    _quote,
    _str_list,
    _subject_text,
    _type_name,
    _Where,
)
from factedit.spec.requests import EditRequest, EditSpec

#: Top-level keys of a flattened (EasyEdit / MEND) CounterFact record that neither ROME nor
#: zsRE records have: a record with two of them is one (so a record #0 that lacks one field
#: still gets that field's "missing field" problem).
_MASS_KEYS = ("target_new", "ground_truth", "locality_prompt")

Converter = Callable[[str, object, int], EditRequest]


def _records_spec(
    records: list[Any], file: str, source: Path, limit: int | None, offset: int
) -> EditSpec:
    """The chosen records of a benchmark file, converted by the layout of its first record."""
    kind, convert = _READERS[_detect_layout(records, file)]
    indices = _select(_Where(file), records, limit, offset)
    edits = _collect_edits(file, records, indices, convert, lambda _, raw, i: _record_label(raw, i))
    return EditSpec(edits=edits, source=source, kind=kind)


def _detect_layout(records: Sequence[Any], file: str) -> str:
    """``"counterfact"``, ``"zsre"`` or ``"mass"`` (flattened CounterFact), by record #0."""
    if not records:
        raise SpecError(f"{file}: contains no records")
    first = records[0]
    if isinstance(first, Mapping):
        if "requested_rewrite" in first:
            return "counterfact"
        if {"src", "answers", "loc"} <= set(first):
            return "zsre"
        if sum(key in first for key in _MASS_KEYS) >= 2:
            return "mass"
    raise SpecError(
        f"{file}: record #0: unrecognised format; expected CounterFact records (with "
        '"requested_rewrite"), zsRE records (with "src", "answers" and "loc") or flattened '
        'CounterFact records (with "target_new", "ground_truth" and "locality_prompt")'
    )


# --------------------------------------------------------------------------- record fields


def _record_label(record: object, index: int) -> str:
    """``record #N (case_id C, subject "S")``, with the parts the record has."""
    parts = []
    if isinstance(record, Mapping):
        case_id = record.get("case_id")
        if isinstance(case_id, (str, int)) and not isinstance(case_id, bool):
            parts.append(f"case_id {case_id}" if _is_int(case_id) else f"case_id {_quote(case_id)}")
        rewrite = record.get("requested_rewrite")
        subject = rewrite.get("subject") if isinstance(rewrite, Mapping) else record.get("subject")
        if isinstance(subject, str) and subject.strip():
            parts.append(f"subject {_quote(subject.strip())}")
    return f"record #{index}" + (f" ({', '.join(parts)})" if parts else "")


def _record_where(file: str, record: object, index: int) -> _Where:
    """Where the record's problems are; a record that is no JSON object is one."""
    where = _Where(file, _record_label(record, index))
    if not isinstance(record, Mapping):
        raise where.error(None, f"must be a JSON object, not {_type_name(record)}")
    return where


def _missing(where: _Where, path: str) -> SpecError:
    """``FILE: record #N (...): missing field "PATH"``."""
    text = f"{where.file}: {where.label}: missing field {_quote(path)}"
    return SpecError(_one_line(text))


def _dig(where: _Where, record: Mapping[Any, Any], path: str) -> Any:
    """The value at a dotted ``path``; a SpecError naming the path when any part is absent."""
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value or value[part] is None:
            raise _missing(where, path)
        value = value[part]
    return value


def _dig_optional(where: _Where, record: Mapping[Any, Any], path: str) -> Any:
    """The value at a dotted ``path``, ``None`` when any part is absent."""
    try:
        return _dig(where, record, path)
    except SpecError:
        return None


def _record_reader(
    problems: _Problems, where: _Where, record: Mapping[Any, Any]
) -> Callable[..., Any]:
    """``read(path, reader)``: the record's field at ``path`` (``_dig`` for a required one,
    else ``.get``) through ``reader``, a failure recorded in ``problems`` and read as _BAD."""

    gone: list[str] = []  # missing parents ("requested_rewrite"): reported once

    def read(
        path: str, reader: Callable[[_Where, str, object], Any] = _nonempty, *, required=True
    ) -> Any:
        if any(path.startswith(f"{parent}.") for parent in gone):
            return _BAD
        if required and (parent := _missing_parent(record, path)) is not None:
            gone.append(parent)
        get = _dig if required else _dig_optional
        return problems.check(lambda: reader(where, path, get(where, record, path)))

    return read


def _missing_parent(record: Mapping[Any, Any], path: str) -> str | None:
    """The first parent of dotted ``path`` that ``record`` lacks (or that is no mapping)."""
    parts = path.split(".")
    value: Any = record
    for n, part in enumerate(parts[:-1], 1):
        value = value.get(part) if isinstance(value, Mapping) else None
        if not isinstance(value, Mapping):
            return ".".join(parts[:n])
    return None


def _single(value: Any) -> Any:
    """A one-item tuple (_BAD stays _BAD)."""
    return _BAD if value is _BAD else (value,)


def _subject_prompt(where: _Where, subject: str, text: str, key: str, problem: str) -> str:
    """``text`` (field ``key``) with "{}" in place of the subject's first occurrence.

    A text without the subject is ``problem``, its ``{subject}`` / ``{text}`` quoted in.
    """
    if _BAD in (subject, text):
        return _BAD
    if subject not in text:
        raise where.error(key, problem.format(subject=_quote(subject), text=_quote(text)))
    return text.replace(subject, "{}", 1)


# --------------------------------------------------------------------------- CounterFact (ROME)

_CF_NAMES = {
    "subject": "requested_rewrite.subject",
    "prompt": "requested_rewrite.prompt",
    "target_new": "requested_rewrite.target_new.str",
    "target_true": "requested_rewrite.target_true.str",
    "paraphrases": "paraphrase_prompts",
}


def _cf_field(name: str, index: int | None) -> str:
    """A CounterFact field's path in the record (``requested_rewrite.prompt``)."""
    base = _CF_NAMES.get(name, name)
    return base if index is None else f"{base}[{index}]"


def _counterfact_edit(file: str, record: object, index: int) -> EditRequest:
    """Record ``index`` of a ROME-layout CounterFact file, every field checked."""
    where = _record_where(file, record, index)
    assert isinstance(record, Mapping)
    problems = _Problems()
    read = _record_reader(problems, where, record)
    rw = "requested_rewrite"
    fields = {
        "subject": read(f"{rw}.subject", _subject_text),
        "prompt": read(f"{rw}.prompt", _prompt_text),
        "target_new": read(f"{rw}.target_new.str"),
        "target_true": read(f"{rw}.target_true.str"),
        "paraphrases": read("paraphrase_prompts", _str_list),
        "neighborhood": read("neighborhood_prompts", _str_list),
        "generation_prompts": read("generation_prompts", _str_list, required=False),
        "attribute_prompts": read("attribute_prompts", _str_list, required=False),
        "case_id": read("case_id", _opt_id, required=False),
        "relation_id": read(f"{rw}.relation_id", _opt_id, required=False),
    }
    problems.check(_check_request, where, fields, _cf_field)
    problems.raise_any(file)
    return EditRequest(**fields)


# --------------------------------------------------------------------------- zsRE

_ZSRE_NAMES = {"target_new": "answers[0]", "prompt": "src", "paraphrases": "rephrase"}


def _zsre_field(name: str, index: int | None) -> str:
    """A zsRE field's key in the record (one rephrase: no index)."""
    return _ZSRE_NAMES.get(name, name)


def _zsre_answer(where: _Where, record: Mapping[Any, Any]) -> str:
    """The first of the record's ``answers``: target_new."""
    answers = _dig(where, record, "answers")
    if not isinstance(answers, (list, tuple)) or not answers:
        raise where.error("answers", f"must be a non-empty list, not {_describe(answers)}")
    return _nonempty(where, "answers[0]", answers[0])


def _zsre_edit(file: str, record: object, index: int) -> EditRequest:
    """Record ``index`` of a zsRE file (case_id: the index), every field checked."""
    where = _record_where(file, record, index)
    assert isinstance(record, Mapping)
    problems = _Problems()
    read = _record_reader(problems, where, record)
    subject, src = read("subject", _subject_text), read("src", _prompt_text)
    problem = "does not occur in the question (src) {text}"
    prompt = problems.check(_subject_prompt, where, subject, src, "subject", problem)
    fields = {
        "subject": _BAD if prompt is _BAD else subject,  # not in src: no rephrase check
        "prompt": prompt,
        "target_new": problems.check(_zsre_answer, where, record),
        "paraphrases": _single(read("rephrase", _prompt_text)),
        "neighborhood": _single(read("loc", _prompt_text)),
        "neighborhood_answers": _single(read("loc_ans")),
        "case_id": str(index),
    }
    problems.check(_check_request, where, fields, _zsre_field)
    problems.raise_any(file)
    return EditRequest(**fields)


# --------------------------------------------------------------------------- flattened CounterFact

_MASS_NAMES = {
    "target_true": "ground_truth",
    "paraphrases": "rephrase_prompt",
    "neighborhood": "locality_prompt",
}


def _mass_field(name: str, index: int | None) -> str:
    """A flattened record's key for an EditRequest field (one rephrase: no index)."""
    return _MASS_NAMES.get(name, name)


def _opt_prompt(where: _Where, key: str, value: object) -> tuple[str, ...]:
    """An optional prompt as a tuple of zero or one prompts."""
    return () if value is None else (_prompt_text(where, key, value),)


def _mass_edit(file: str, record: object, index: int) -> EditRequest:
    """Record ``index`` of a flattened (EasyEdit / MEND) CounterFact file, every field checked.

    The prompt names the subject; its first occurrence becomes "{}". The locality prompt's
    expected answer is ``locality_ground_truth`` (an explicit neighbourhood answer).
    """
    where = _record_where(file, record, index)
    assert isinstance(record, Mapping)
    problems = _Problems()
    read = _record_reader(problems, where, record)
    subject, text = read("subject", _subject_text), read("prompt", _prompt_text)
    problem = "does not contain the subject {subject} (case-sensitive)"
    fields = {
        "subject": subject,
        "prompt": problems.check(_subject_prompt, where, subject, text, "prompt", problem),
        "target_new": read("target_new"),
        "target_true": read("ground_truth"),
        "paraphrases": read("rephrase_prompt", _opt_prompt, required=False),
        "neighborhood": _single(read("locality_prompt", _prompt_text)),
        "neighborhood_answers": _single(read("locality_ground_truth")),
        "case_id": read("case_id", _opt_id, required=False),
    }
    problems.check(_check_request, where, fields, _mass_field)
    problems.raise_any(file)
    return EditRequest(**fields)


#: Layout -> (the EditSpec's kind, the record converter). Flattened CounterFact records have
#: target_true and neighbours with answers: every CounterFact metric applies, so kind
#: "counterfact" (not "zsre", whose "?"-suffixed questions and accuracy view do not fit).
_READERS: dict[str, tuple[str, Converter]] = {
    "counterfact": ("counterfact", _counterfact_edit),
    "zsre": ("zsre", _zsre_edit),
    "mass": ("counterfact", _mass_edit),
}
