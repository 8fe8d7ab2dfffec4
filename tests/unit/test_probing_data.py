"""Probing data: JSONL examples and their one-line errors, and the tasks built from
CounterFact (ROME and flattened layouts) and known-facts files (synthetic records only)."""

from __future__ import annotations

import json

import pytest

from factedit.errors import ProbeDataError
from factedit.probing.data import check_task, data_hash, read_jsonl
from factedit.probing.tasks import build_task, read_facts, relations, slug
from probing_helpers import write_jsonl


def test_span_as_substring_takes_the_first_occurrence_and_offsets_are_kept(tmp_path):
    path = write_jsonl(
        tmp_path / "t.jsonl",
        [
            {"text": "Paris is Paris", "span": "Paris", "label": "city"},
            "",
            {"text": "I saw Rome", "span": [6, 10], "label": 1},
        ],
    )
    a, b = read_jsonl(path)
    assert (a.start, a.end, a.group, a.label) == (0, 5, "Paris", "city")
    assert (b.start, b.end, b.group, b.label) == (6, 10, "Rome", "1")
    check_task([a, b], str(path))


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"text": "Paris is nice", "span": "Rome", "label": "x"}, 'span "Rome" does not occur'),
        ({"text": "abc", "span": [2, 9], "label": "x"}, "span [2, 9] is not inside"),
        ({"text": "abc", "span": [1], "label": "x"}, '"span" must be a substring'),
        ({"text": "abc", "label": "x"}, 'missing field "span"'),
        ({"text": "", "span": "a", "label": "x"}, '"text" must be a non-empty string'),
        ({"text": "abc", "span": "a", "label": None}, '"label" must be'),
        ("not json at all", "not a JSON object"),
        ("[1, 2]", "expected a JSON object, not list"),
    ],
)
def test_a_bad_line_is_one_error_naming_the_file_and_line(tmp_path, bad, message):
    good = {"text": "Paris is nice", "span": "Paris", "label": "a"}
    path = write_jsonl(tmp_path / "t.jsonl", [good, good, bad, good])
    with pytest.raises(ProbeDataError) as err:
        read_jsonl(path)
    text = str(err.value)
    assert text.startswith(f"{path}:3: ") and message in text and "\n" not in text


def test_one_label_only_and_empty_files_are_errors(tmp_path):
    rows = [{"text": f"the {w} is", "span": w, "label": "same"} for w in ("a", "b", "c")]
    examples = read_jsonl(write_jsonl(tmp_path / "one.jsonl", rows))
    with pytest.raises(ProbeDataError, match='all 3 examples have the label "same"'):
        check_task(examples, "one.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ProbeDataError, match="no examples"):
        read_jsonl(tmp_path / "empty.jsonl")
    with pytest.raises(ProbeDataError, match="no such file"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_data_hash_ignores_labels_but_not_spans(tmp_path):
    rows = [{"text": "the cat sat", "span": "cat", "label": "a"}]
    a = read_jsonl(write_jsonl(tmp_path / "a.jsonl", rows))
    b = read_jsonl(write_jsonl(tmp_path / "b.jsonl", [{**rows[0], "label": "b"}]))
    c = read_jsonl(write_jsonl(tmp_path / "c.jsonl", [{**rows[0], "span": "sat"}]))
    assert data_hash(a) == data_hash(b) != data_hash(c)


# --------------------------------------------------------------------------- facts -> tasks

LANGS = {"French": 6, "English": 5, "Italian": 2}  # Italian is rare at min_count 5


def _people() -> list[tuple[str, str]]:
    return [(f"Person {label} {i}", label) for label, n in LANGS.items() for i in range(n)]


def _dev():
    records = [
        {
            "case_id": i,
            "requested_rewrite": {
                "prompt": "The mother tongue of {} is",
                "subject": subject,
                "target_true": {"str": label},
                "target_new": {"str": "German"},
                "relation_id": "P103",
            },
        }
        for i, (subject, label) in enumerate(_people())
    ]
    records.append(
        {
            **records[0],
            "requested_rewrite": {**records[0]["requested_rewrite"], "relation_id": "P17"},
        }
    )
    return records


def _mass():
    return [
        {
            "case_id": i,
            "prompt": f"The mother tongue of {s} is",
            "subject": s,
            "target_new": "German",
            "ground_truth": label,
            "locality_prompt": "x",
            "locality_ground_truth": "y",
        }
        for i, (s, label) in enumerate(_people())
    ]


def _known():
    return [
        {
            "known_id": i,
            "subject": s,
            "prompt": f"{s} was born speaking",
            "attribute": label,
            "relation_id": "P103",
            "template": "{} was born speaking",
        }
        for i, (s, label) in enumerate(_people())
    ]


@pytest.mark.parametrize(
    "make, kind, relation, text",
    [
        (_dev, "counterfact", "P103", "The mother tongue of Person French 0"),
        (_mass, "mass", "The mother tongue of {} is", "The mother tongue of Person French 0"),
        (_known, "known", "P103", "Person French 0"),
    ],
)
def test_tasks_from_each_facts_format(tmp_path, make, kind, relation, text):
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(make()))
    found, facts = read_facts(path)
    assert found == kind
    examples, dropped = build_task(facts, relation, min_count=5)
    assert dropped == {"Italian": 2}
    assert len(examples) == 11 and {e.label for e in examples} == {"French", "English"}
    first = examples[0]
    assert first.text == text and first.group == "Person French 0"
    assert first.end == len(first.text)  # the prompt up to the end of the subject
    infos = {r.name: r for r in relations(facts, min_count=5)}
    info = infos[relation]
    assert (info.subjects, info.labels, info.kept_labels, info.kept_subjects) == (13, 3, 2, 11)
    assert build_task(facts, slug(relation), min_count=5)[0] == examples  # slug works too


def test_a_relation_with_too_few_labels_or_unknown_is_an_error(tmp_path):
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(_dev()))
    _, facts = read_facts(path)
    with pytest.raises(ProbeDataError, match="1 label"):
        build_task(facts, "P103", min_count=6)
    with pytest.raises(ProbeDataError, match="--list-relations"):
        build_task(facts, "P999")


def test_bad_facts_files_name_the_record(tmp_path):
    path = tmp_path / "facts.json"
    records = _mass()
    records[2]["prompt"] = "no subject here"
    path.write_text(json.dumps(records))
    with pytest.raises(ProbeDataError, match=r"record #2: the subject"):
        read_facts(path)
    path.write_text(json.dumps([{"foo": 1}]))
    with pytest.raises(ProbeDataError, match="record #0: not a facts record"):
        read_facts(path)
    path.write_text("{")
    with pytest.raises(ProbeDataError, match="cannot read"):
        read_facts(path)


def test_slug():
    assert slug("{} speaks the language") == "x-speaks-the-language"
    assert slug("P103") == "p103"
