"""Tests for the flattened (EasyEdit / MEND mass-editing) CounterFact layout in factedit.spec.

Records like ``{"case_id", "prompt", "subject", "target_new", "ground_truth",
"rephrase_prompt", "locality_prompt", "locality_ground_truth"}``, on small inline samples;
one test reads the real file (benchmark data, skipped when absent).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factedit.errors import SpecError
from factedit.spec import load_spec, spec_from_dict
from spec_helpers import problems_of, spec_error, tree_paths, write_json

MASS_FILE = "counterfact-mass.json"


def mass_record(case_id: int = 0, **overrides: Any) -> dict[str, Any]:
    """A valid flattened CounterFact record (the first of the real file), with overrides."""
    record: dict[str, Any] = {
        "case_id": case_id,
        "prompt": "The mother tongue of Danielle Darrieux is",
        "target_new": "English",
        "subject": "Danielle Darrieux",
        "ground_truth": "French",
        "rephrase_prompt": "Where Danielle Darrieux is from, people speak the language of",
        "locality_prompt": "Michel Rocard is a native speaker of",
        "locality_ground_truth": "French",
    }
    record.update(overrides)
    return record


def sample() -> list[dict[str, Any]]:
    """Three valid records about different subjects."""
    return [
        mass_record(0),
        mass_record(
            1,
            prompt="The official religion of Edwin of Northumbria is",
            subject="Edwin of Northumbria",
            target_new="Islam",
            ground_truth="Christianity",
            rephrase_prompt="Edwin of Northumbria is affiliated with the religion",
            locality_prompt="The official religion of Paul is",
            locality_ground_truth="Christianity",
        ),
        mass_record(
            4,
            prompt="What is the twin city of Lyon? It is",
            subject="Lyon",
            target_new="Manila",
            ground_truth="Beirut",
            rephrase_prompt="People in Lyon's twin city speak the language of",
            locality_prompt="The twin city of Trieste is",
            locality_ground_truth="Beirut",
        ),
    ]


def mass_file(tmp_path: Path, records: list[Any]) -> Path:
    """``records`` written as ``mass.json``."""
    return write_json(tmp_path, records, "mass.json")


# --------------------------------------------------------------------------- conversion


def test_record_becomes_a_counterfact_request(tmp_path: Path) -> None:
    spec = load_spec(mass_file(tmp_path, sample()))
    assert spec.kind == "counterfact" and len(spec.edits) == 3
    edit = spec.edits[0]
    assert edit.subject == "Danielle Darrieux"
    assert edit.prompt == "The mother tongue of {} is"
    assert edit.rewrite_prompt == "The mother tongue of Danielle Darrieux is"
    assert (edit.target_new, edit.target_true) == ("English", "French")
    assert edit.paraphrases == ("Where Danielle Darrieux is from, people speak the language of",)
    assert edit.neighborhood == ("Michel Rocard is a native speaker of",)
    assert edit.neighborhood_answers == ("French",)
    assert edit.case_id == "0" and edit.relation_id is None
    assert edit.generation_prompts == () and edit.attribute_prompts == ()
    assert spec.edits[2].prompt == "What is the twin city of {}? It is"
    assert [e.case_id for e in spec.edits] == ["0", "1", "4"]


def test_only_the_first_occurrence_of_the_subject_becomes_braces(tmp_path: Path) -> None:
    record = mass_record(
        subject="Paris",
        prompt="Paris Hilton's home town Paris is in",
        rephrase_prompt="Paris is in",
    )
    (edit,) = load_spec(mass_file(tmp_path, [record])).edits
    assert edit.prompt == "{} Hilton's home town Paris is in"
    assert edit.rewrite_prompt == record["prompt"]


def test_rephrase_prompt_and_case_id_are_optional(tmp_path: Path) -> None:
    record = mass_record()
    del record["rephrase_prompt"], record["case_id"]
    (edit,) = load_spec(mass_file(tmp_path, [record])).edits
    assert edit.paraphrases == () and edit.case_id is None
    assert edit.neighborhood_answers == ("French",)


def test_to_dict_round_trip_keeps_the_neighbour_answer(tmp_path: Path) -> None:
    spec = load_spec(mass_file(tmp_path, sample()))
    items = spec.to_dict()["edits"]
    assert items[0]["neighborhood"] == [
        {"prompt": "Michel Rocard is a native speaker of", "answer": "French"}
    ]
    assert spec_from_dict(spec.to_dict()).edits == spec.edits


def test_limit_and_offset_keep_record_indices(tmp_path: Path) -> None:
    records = sample()
    records[0]["target_new"] = ""
    path = mass_file(tmp_path, records)
    assert [e.case_id for e in load_spec(path, offset=1, limit=1).edits] == ["1"]
    spec_error(lambda: load_spec(path, limit=1), "record #0 (case_id 0", 'field "target_new"')


# --------------------------------------------------------------------------- problems


def test_prompt_without_the_subject_names_record_and_field(tmp_path: Path) -> None:
    records = sample()
    records[1]["prompt"] = "The official religion of King Edwin is"
    message = spec_error(
        lambda: load_spec(mass_file(tmp_path, records)),
        'mass.json: record #1 (case_id 1, subject "Edwin of Northumbria"), field "prompt": ',
        'does not contain the subject "Edwin of Northumbria" (case-sensitive)',
    )
    assert message.count("record #") == 1


def test_subject_match_is_case_sensitive(tmp_path: Path) -> None:
    record = mass_record(prompt="The mother tongue of danielle darrieux is")
    spec_error(lambda: load_spec(mass_file(tmp_path, [record])), 'field "prompt"', "subject")


@pytest.mark.parametrize(
    "field",
    ["subject", "prompt", "target_new", "ground_truth", "locality_prompt", "locality_ground_truth"],
)
def test_missing_field_names_record_and_field(tmp_path: Path, field: str) -> None:
    records = sample()
    del records[2][field]
    path = mass_file(tmp_path, records)
    subject = "" if field == "subject" else ', subject "Lyon"'
    spec_error(
        lambda: load_spec(path),
        f'mass.json: record #2 (case_id 4{subject}): missing field "{field}"',
    )
    assert len(load_spec(path, limit=2).edits) == 2


@pytest.mark.parametrize(
    ("overrides", "field", "problem"),
    [
        ({"target_new": 5}, "target_new", "must be a string"),
        ({"ground_truth": "English"}, "target_new", "equals target_true"),
        ({"rephrase_prompt": "Her language is"}, "rephrase_prompt", "does not contain the subject"),
        ({"rephrase_prompt": 3}, "rephrase_prompt", "must be a string"),
        ({"locality_prompt": ""}, "locality_prompt", "non-empty"),
        ({"locality_ground_truth": []}, "locality_ground_truth", "must be a string"),
        ({"subject": "a{}b"}, "subject", 'must not contain "{}"'),
        ({"prompt": "{} and Danielle Darrieux"}, "prompt", "found 2"),
        ({"case_id": True}, "case_id", "must be a string"),
    ],
)
def test_bad_field_content(
    tmp_path: Path, overrides: dict[str, Any], field: str, problem: str
) -> None:
    path = mass_file(tmp_path, [mass_record(**overrides)])
    spec_error(lambda: load_spec(path), "record #0", f'field "{field}"', problem)


def test_every_problem_of_the_file_is_reported_together(tmp_path: Path) -> None:
    records = sample()
    del records[0]["ground_truth"]
    records[1]["prompt"] = "Nobody is"
    records[2] = "oops"
    path = mass_file(tmp_path, records)
    exc = problems_of(lambda: load_spec(path))
    assert str(exc).splitlines()[0] == f"{path}: 3 problems"
    assert (
        'record #0 (case_id 0, subject "Danielle Darrieux"): missing field "ground_truth"'
        in (exc.problems[0])
    )
    assert (
        'record #1 (case_id 1, subject "Edwin of Northumbria"), field "prompt"' in (exc.problems[1])
    )
    assert "record #2: must be a JSON object, not str" in exc.problems[2]


def test_same_subject_and_prompt_conflict(tmp_path: Path) -> None:
    records = [*sample(), mass_record(9, target_new="German")]
    spec_error(
        lambda: load_spec(mass_file(tmp_path, records)),
        'record #3 (case_id 9, subject "Danielle Darrieux"), field "target_new"',
        "conflicts with record #0 (case_id 0",
    )


# --------------------------------------------------------------------------- detection

ROME_RECORD: dict[str, Any] = {
    "case_id": 3,
    "requested_rewrite": {
        "prompt": "The mother tongue of {} is",
        "relation_id": "P103",
        "target_new": {"str": "English", "id": "Q1860"},
        "target_true": {"str": "French", "id": "Q150"},
        "subject": "Danielle Darrieux",
    },
    "paraphrase_prompts": ["Danielle Darrieux spoke the language"],
    "neighborhood_prompts": ["Michel Rocard is a native speaker of"],
}
ZSRE_RECORD: dict[str, Any] = {
    "subject": "Danielle Darrieux",
    "src": "What is the mother tongue of Danielle Darrieux?",
    "answers": ["English"],
    "rephrase": "Which language did Danielle Darrieux speak?",
    "loc": "nq question: who wrote the song",
    "loc_ans": "Bob Dylan",
}


def test_rome_and_zsre_records_are_not_taken_for_the_flat_layout(tmp_path: Path) -> None:
    rome = load_spec(write_json(tmp_path, [ROME_RECORD], "rome.json"))
    assert rome.kind == "counterfact"
    assert rome.edits[0].neighborhood_answers == () and rome.edits[0].relation_id == "P103"
    zsre = load_spec(write_json(tmp_path, [ZSRE_RECORD], "zsre.json"))
    assert zsre.kind == "zsre" and zsre.edits[0].target_true is None
    flat = load_spec(mass_file(tmp_path, [mass_record(3)]))
    assert flat.kind == "counterfact" and flat.edits[0].neighborhood_answers == ("French",)
    assert flat.edits[0].prompt == rome.edits[0].prompt


def test_a_record_of_another_layout_after_the_first_is_a_problem(tmp_path: Path) -> None:
    path = mass_file(tmp_path, [mass_record(), ROME_RECORD])
    exc = problems_of(lambda: load_spec(path))
    assert all("record #1 (case_id 3" in p for p in exc.problems)
    assert any(p.endswith('missing field "ground_truth"') for p in exc.problems)
    path = write_json(tmp_path, [ROME_RECORD, mass_record()], "rome.json")
    exc = problems_of(lambda: load_spec(path))
    assert exc.problems[0].endswith(
        'record #1 (case_id 0, subject "Danielle Darrieux"): '
        'missing field "requested_rewrite.subject"'
    )


@pytest.mark.parametrize("key", ["target_new", "ground_truth", "locality_prompt"])
def test_first_record_lacking_one_layout_key_is_still_recognised(tmp_path: Path, key: str) -> None:
    record = mass_record()
    del record[key]
    path = mass_file(tmp_path, [record])
    spec_error(lambda: load_spec(path), "record #0 (case_id 0", f'missing field "{key}"')


def test_first_record_lacking_two_layout_keys_is_unrecognised(tmp_path: Path) -> None:
    record = mass_record()
    del record["ground_truth"], record["locality_prompt"]
    spec_error(
        lambda: load_spec(mass_file(tmp_path, [record])),
        "mass.json: record #0: unrecognised format",
        'flattened CounterFact records (with "target_new", "ground_truth" and "locality_prompt")',
    )


def test_yaml_style_edits_in_a_json_list_are_unrecognised(tmp_path: Path) -> None:
    edit = {"subject": "X", "prompt": "{} is in", "target_new": "Rome", "target_true": "Oslo"}
    path = write_json(tmp_path, [edit], "edits.json")
    spec_error(lambda: load_spec(path), "record #0: unrecognised format")


# --------------------------------------------------------------------------- robustness

_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from(["", " ", "{}", "French", "Danielle Darrieux", "Danielle Darrieux {} is"]),
    st.lists(st.sampled_from(["x", "{}", 1]), max_size=2),
    st.dictionaries(st.sampled_from(["prompt", "str"]), st.just("x"), max_size=2),
)
_DELETE = object()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data(), st.one_of(_VALUES, st.just(_DELETE)))
def test_mutated_records_load_or_raise_one_line_problems(
    tmp_path: Path, data: st.DataObject, value: Any
) -> None:
    records = sample()
    path = data.draw(st.sampled_from(tree_paths(records)))
    target = records
    for step in path[:-1]:
        target = target[step]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = copy.deepcopy(value)
    file = mass_file(tmp_path, records)
    try:
        spec = load_spec(file)
    except SpecError as exc:
        assert exc.problems and all("\n" not in p for p in exc.problems)
        return
    assert all(e.prompt.count("{}") == 1 for e in spec.edits)
    # A YAML spec's paraphrases put the subject into "{}": records with one do not round-trip.
    if not any("{}" in p for e in spec.edits for p in e.paraphrases):
        assert spec_from_dict(spec.to_dict()).edits == spec.edits


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def mass_data(data_file: Callable[[str], Path]) -> Path:
    """The flattened CounterFact file (benchmark data, 9,851 records); skips when absent."""
    return data_file(MASS_FILE)


def test_real_mass_file_first_fifty(mass_data: Path) -> None:
    spec = load_spec(mass_data, limit=50)
    raw = json.loads(mass_data.read_text(encoding="utf-8"))[:50]
    assert spec.kind == "counterfact" and len(spec.edits) == 50
    for edit, record in zip(spec.edits, raw, strict=True):
        assert edit.prompt.count("{}") == 1
        assert edit.rewrite_prompt == record["prompt"]
        assert edit.target_true == record["ground_truth"].strip()
        assert edit.neighborhood_answers == (record["locality_ground_truth"].strip(),)
        assert edit.case_id == str(record["case_id"])
