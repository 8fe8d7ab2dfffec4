"""Probing tasks from the facts users have: "which attribute does this subject have".

    facts = read_facts("counterfact-mass.json")         # FactRecord per record
    relations(facts, min_count=5)                       # what --list-relations shows
    examples, dropped = build_task(facts, "P103", min_count=5)

Formats (detected from the first record):

- CounterFact, ROME layout (``requested_rewrite`` with ``prompt`` holding "{}", ``subject``,
  ``target_true.str`` and ``relation_id``): a relation is a ``relation_id``;
- CounterFact, flattened EasyEdit / MEND layout (``prompt`` with the subject written out,
  ``subject``, ``ground_truth``): it has no relation ids, so a relation is a *prompt
  template* (the prompt with the subject's first occurrence replaced by "{}");
- known facts (ROME ``known_1000.json``: ``subject``, ``prompt``, ``attribute``, optional
  ``relation_id``): a relation is a ``relation_id`` (the ``template`` without one).

An example's text is the relation's prompt up to the end of the subject ("The mother tongue
of Danielle Darrieux"), its span the subject, its label the true attribute. A subject that
occurs twice in a relation is kept once (its first record). Labels with fewer than
``min_count`` subjects are dropped (default :data:`MIN_LABEL_COUNT`): a label with a
handful of subjects cannot be on both sides of a split by subject.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factedit.errors import ProbeDataError
from factedit.probing.data import ProbeExample

#: Labels with fewer subjects than this are dropped from a task built from facts.
MIN_LABEL_COUNT = 5


@dataclass(frozen=True)
class FactRecord:
    """One fact: ``template`` is its prompt with "{}" where the subject is."""

    subject: str
    template: str
    label: str
    relation: str
    target_new: str | None = None

    def example(self) -> ProbeExample:
        """The prompt up to the end of the subject, the subject as the span."""
        start = self.template.index("{}")
        text = self.template[:start] + self.subject
        return ProbeExample(text, start, len(text), self.label)


def slug(name: str) -> str:
    """A relation's name as a file name: ``"{} speaks the language"`` ->
    ``x-speaks-the-language``."""
    text = re.sub(r"[^a-z0-9]+", "-", name.replace("{}", "x").lower()).strip("-")
    return text or "relation"


def _text(where: str, record: Mapping[str, Any], path: str) -> str:
    value: Any = record
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if not isinstance(value, str) or not value.strip():
        raise ProbeDataError(f'{where}: missing field "{path}" (a non-empty string)')
    return value


def _template(where: str, prompt: str, subject: str) -> str:
    if subject not in prompt:
        raise ProbeDataError(f'{where}: the subject "{subject}" does not occur in "{prompt}"')
    return prompt.replace(subject, "{}", 1)


def _dev_record(where: str, rec: Mapping[str, Any]) -> FactRecord:
    prompt = _text(where, rec, "requested_rewrite.prompt")
    if "{}" not in prompt:
        raise ProbeDataError(f'{where}: requested_rewrite.prompt has no "{{}}" for the subject')
    rw = rec["requested_rewrite"]
    relation = str(rw.get("relation_id") or "all")
    target_new = (rw.get("target_new") or {}).get("str")
    subject = _text(where, rec, "requested_rewrite.subject").strip()
    label = _text(where, rec, "requested_rewrite.target_true.str").strip()
    return FactRecord(subject, prompt, label, relation, target_new)


def _mass_record(where: str, rec: Mapping[str, Any]) -> FactRecord:
    subject = _text(where, rec, "subject").strip()
    template = _template(where, _text(where, rec, "prompt"), subject)
    label = _text(where, rec, "ground_truth").strip()
    return FactRecord(subject, template, label, template, rec.get("target_new"))


def _known_record(where: str, rec: Mapping[str, Any]) -> FactRecord:
    subject = _text(where, rec, "subject").strip()
    template = _template(where, _text(where, rec, "prompt"), subject)
    relation = rec.get("relation_id") or rec.get("template") or "all"
    return FactRecord(subject, template, _text(where, rec, "attribute").strip(), str(relation))


_READERS = {"counterfact": _dev_record, "mass": _mass_record, "known": _known_record}


def detect_format(first: Any, file: str) -> str:
    """``counterfact`` (ROME layout), ``mass`` (flattened) or ``known`` (known facts)."""
    if isinstance(first, Mapping):
        if "requested_rewrite" in first:
            return "counterfact"
        if "ground_truth" in first and "prompt" in first:
            return "mass"
        if "attribute" in first and "prompt" in first:
            return "known"
    raise ProbeDataError(
        f"{file}: record #0: not a facts record; expected CounterFact (requested_rewrite), "
        "flattened CounterFact (prompt, subject, ground_truth) or known facts (prompt, "
        "subject, attribute)"
    )


def read_facts(path: str | Path) -> tuple[str, list[FactRecord]]:
    """(format, records) of a facts JSON list; a one-line error names the record."""
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProbeDataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProbeDataError(f"{path}: cannot read a JSON list of facts ({exc})") from None
    if not isinstance(records, list) or not records:
        raise ProbeDataError(f"{path}: expected a non-empty JSON list of facts")
    kind = detect_format(records[0], str(path))
    read = _READERS[kind]
    facts = []
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise ProbeDataError(f"{path}: record #{i}: expected a JSON object")
        facts.append(read(f"{path}: record #{i}", rec))
    return kind, facts


def _unique_subjects(facts: Sequence[FactRecord]) -> list[FactRecord]:
    seen: dict[str, FactRecord] = {}
    for fact in facts:
        seen.setdefault(fact.subject, fact)
    return list(seen.values())


@dataclass(frozen=True)
class RelationInfo:
    """One relation of a facts file: its size before and after dropping rare labels."""

    name: str
    subjects: int
    labels: int
    kept_labels: int
    kept_subjects: int
    top: tuple[tuple[str, int], ...]

    @property
    def slug(self) -> str:
        return slug(self.name)

    @property
    def usable(self) -> int:
        """Subjects a probe of this relation would see (0 with fewer than two kept labels)."""
        return self.kept_subjects if self.kept_labels >= 2 else 0


def relations(facts: Sequence[FactRecord], min_count: int = MIN_LABEL_COUNT) -> list[RelationInfo]:
    """Every relation, the largest usable task (subjects in kept labels) first."""
    by_relation: dict[str, list[FactRecord]] = {}
    for fact in facts:
        by_relation.setdefault(fact.relation, []).append(fact)
    out = []
    for name, members in by_relation.items():
        counts = Counter(f.label for f in _unique_subjects(members))
        kept = {k: v for k, v in counts.items() if v >= min_count}
        out.append(
            RelationInfo(
                name=name,
                subjects=sum(counts.values()),
                labels=len(counts),
                kept_labels=len(kept),
                kept_subjects=sum(kept.values()),
                top=tuple(counts.most_common(4)),
            )
        )
    return sorted(out, key=lambda r: (-r.usable, r.name))


def find_relation(facts: Sequence[FactRecord], relation: str) -> str:
    """The relation named ``relation`` (its name or its :func:`slug`); else an error that
    points to ``--list-relations``."""
    names = list(dict.fromkeys(f.relation for f in facts))
    if relation in names:
        return relation
    matches = [name for name in names if slug(name) == relation]
    if len(matches) == 1:
        return matches[0]
    if matches:
        quoted = ", ".join(f'"{m}"' for m in matches)
        raise ProbeDataError(f'"{relation}" is the slug of {quoted}; give the full name')
    raise ProbeDataError(
        f'no relation "{relation}" in the facts file ({len(names)} relations; '
        "--list-relations shows them with their counts)"
    )


def build_task(
    facts: Sequence[FactRecord], relation: str, min_count: int = MIN_LABEL_COUNT
) -> tuple[list[ProbeExample], dict[str, int]]:
    """(examples, dropped labels -> subjects) of ``relation`` (a name or slug)."""
    name = find_relation(facts, relation)
    members = _unique_subjects([f for f in facts if f.relation == name])
    counts = Counter(f.label for f in members)
    dropped = {k: v for k, v in counts.items() if v < min_count}
    examples = [f.example() for f in members if f.label not in dropped]
    if len(counts) - len(dropped) < 2:
        raise ProbeDataError(
            f'relation "{name}": {len(counts) - len(dropped)} label(s) with at least '
            f"{min_count} subjects (of {len(counts)}); a probe needs two (lower --min-count)"
        )
    return examples, dict(sorted(dropped.items(), key=lambda kv: -kv[1]))
