"""Tests for factedit.spec: YAML / CounterFact / zsRE edit specs and their error messages.

The flattened (mass-editing) CounterFact layout is tested in test_spec_mass.py.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factedit.errors import SpecError
from factedit.methods.hparams import RomeHParams
from factedit.spec import EditRequest, EditSpec, load_spec, load_spec_text, spec_from_dict
from spec_helpers import (
    base_edit,
    base_spec,
    read_records,
    spec_error,
    tree_paths,
    write_json,
    write_yaml,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "configs" / "examples"

EIFFEL_LABEL = 'edit #0 (subject "The Eiffel Tower")'


# --------------------------------------------------------------------------- helpers


def load_error(tmp_path: Path, data: Any, *parts: str) -> str:
    path = write_yaml(tmp_path, data)
    return spec_error(lambda: load_spec(path), "facts.yaml", *parts)


@pytest.fixture(scope="module")
def counterfact(data_file: Callable[[str], Path]) -> Path:
    """The CounterFact sample (benchmark data, 200 records); skips the test when absent."""
    return data_file("counterfact-dev.json")


@pytest.fixture(scope="module")
def zsre(data_file: Callable[[str], Path]) -> Path:
    """The zsRE sample (benchmark data, 100 records); skips the test when absent."""
    return data_file("zsre-dev.json")


# --------------------------------------------------------------------------- examples


def test_eiffel_example_loads_and_round_trips() -> None:
    spec = load_spec(EXAMPLES / "eiffel.yaml")
    assert spec.kind == "spec"
    assert spec.method == "rome"
    assert spec.layers == "auto"
    assert spec.source == EXAMPLES / "eiffel.yaml"
    (edit,) = spec.edits
    assert edit.subject == "The Eiffel Tower"
    assert edit.rewrite_prompt == "The Eiffel Tower is located in the city of"
    assert (edit.target_new, edit.target_true) == ("Rome", "Paris")
    assert len(edit.paraphrases) >= 3
    assert all(edit.subject in p and p != edit.rewrite_prompt for p in edit.paraphrases)
    assert len(edit.neighborhood_answers) == len(edit.neighborhood)
    answers = dict(zip(edit.neighborhood, edit.neighborhood_answers, strict=True))
    assert answers["The Louvre is located in the city of"] == "Paris"
    assert answers["Big Ben is located in the city of"] == "London"
    assert "Rome" not in edit.neighborhood_answers
    assert edit.generation_prompts

    text = yaml.safe_dump(spec.to_dict(), sort_keys=False)
    assert load_spec_text(text, source=spec.source) == spec


def test_several_example_loads() -> None:
    spec = load_spec(EXAMPLES / "several.yaml")
    assert 3 <= len(spec.edits) <= 4
    for edit in spec.edits:
        assert len(edit.paraphrases) == 2
        assert 2 <= len(edit.neighborhood) <= 3
        assert edit.target_true is not None
    assert spec_from_dict(spec.to_dict(), source=spec.source) == spec


# --------------------------------------------------------------------------- data classes


def test_rewrite_prompt_leaves_other_braces_alone() -> None:
    edit = EditRequest(subject="X", prompt="{} uses {braces} and {0}", target_new="y")
    assert edit.rewrite_prompt == "X uses {braces} and {0}"
    assert edit.label(3) == 'edit #3 (subject "X")'


def test_dataclasses_are_frozen_and_hashable() -> None:
    spec = spec_from_dict(base_spec(hparams={"v_lr": 1}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.edits[0].target_new = "Berlin"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.hparams["v_lr"] = 2.0  # type: ignore[index]
    assert isinstance(spec.hparams["v_lr"], float)
    assert hash(spec) == hash(spec_from_dict(base_spec(hparams={"v_lr": 1})))


def test_lists_given_in_code_become_tuples() -> None:
    edit = EditRequest("S", "{} is", "a", paraphrases=["S was"])  # type: ignore[arg-type]
    spec = EditSpec(edits=[edit], layers=[3])  # type: ignore[arg-type]
    assert edit.paraphrases == ("S was",)
    assert spec.edits == (edit,) and spec.layers == (3,)


def test_defaults_and_target_whitespace_is_stripped() -> None:
    spec = spec_from_dict(base_spec(base_edit(target_new=" Rome", target_true=" Paris ")))
    assert spec.model is None and spec.seed == 0 and spec.layers == "auto"
    assert dict(spec.hparams) == {}
    assert (spec.edits[0].target_new, spec.edits[0].target_true) == ("Rome", "Paris")
    assert spec.edits[0].neighborhood_answers == ()


def test_braces_in_paraphrases_and_generation_prompts_become_the_subject() -> None:
    edit = base_edit(paraphrases=["Where is {} located? In"], generation_prompts=["{} is"])
    (req,) = spec_from_dict(base_spec(edit)).edits
    assert req.paraphrases == ("Where is The Eiffel Tower located? In",)
    assert req.generation_prompts == ("The Eiffel Tower is",)


ROME_TYPES: dict[str, Any] = typing.get_type_hints(RomeHParams)


def other_hparam(name: str) -> Any:
    """A valid value for RomeHParams field ``name`` other than its default, as YAML gives it
    (numbers of float fields as integers, tuples as lists), chosen by the field's type."""
    field = {f.name: f for f in dataclasses.fields(RomeHParams)}[name]
    kind, default = ROME_TYPES[name], field.default
    choices = field.metadata.get("choices") or ()
    if choices:
        return next(choice for choice in choices if choice != default)
    if kind is bool:
        return not default
    if kind in (int, float):
        return int(default) + 1
    if typing.get_origin(kind) is tuple:
        return [*default, default[-1] + 1]
    return "wikitext" if default is None else f"{default}-other"


def runtime_type(kind: Any) -> Any:
    """What ``isinstance`` accepts for an annotation (``tuple[int, ...]`` -> ``tuple``)."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return kind
    return origin or kind


def test_full_settings_are_read() -> None:
    hparams = {name: other_hparam(name) for name in RomeHParams.names()}
    data = base_spec(model="some/unknown-model", method="rome", layers=[6], seed=7, hparams=hparams)
    spec = spec_from_dict(data)
    assert spec.model == "some/unknown-model"
    assert spec.layers == (6,) and spec.seed == 7
    assert set(spec.hparams) == set(RomeHParams.names())
    lengths = hparams["context_template_lengths"]
    assert spec.hparams["context_template_lengths"] == tuple(lengths)
    assert spec.hparams["clamp_norm_factor"] == float(hparams["clamp_norm_factor"])
    for name in RomeHParams.names():
        assert isinstance(spec.hparams[name], runtime_type(ROME_TYPES[name])), name
        assert spec.hparams[name] != getattr(RomeHParams(), name), name
    assert spec_from_dict(spec.to_dict()) == spec


# --------------------------------------------------------------------------- YAML structure errors


def test_malformed_yaml_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "facts.yaml"
    path.write_text("edits:\n  - subject: X\n    prompt: a: b\n", encoding="utf-8")
    spec_error(lambda: load_spec(path), "facts.yaml:3:14: malformed YAML", "mapping values")


def test_yaml_python_tags_are_refused_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "facts.yaml"
    path.write_text(f'edits: !!python/object/apply:os.system ["touch {marker}"]\n')
    spec_error(lambda: load_spec(path), "facts.yaml", "malformed YAML")
    assert not marker.exists()


def test_malformed_yaml_text_without_source() -> None:
    spec_error(lambda: load_spec_text("edits: [\n"), "<spec>:2:1: malformed YAML")


def test_duplicate_yaml_key_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "facts.yaml"
    path.write_text("seed: 1\nseed: 2\nedits: []\n", encoding="utf-8")
    spec_error(lambda: load_spec(path), "facts.yaml:2:1", 'duplicate key "seed"')


@pytest.mark.parametrize(
    ("data", "parts"),
    [
        ([base_edit()], ["top level must be a mapping"]),
        ("just text", ["top level must be a mapping"]),
        ({"model": "x"}, ['key "edits"', "missing"]),
        ({"edits": []}, ['key "edits"', "empty list"]),
        ({"edits": {"subject": "X"}}, ['key "edits"', "must be a non-empty list"]),
        ({"edits": ["text"]}, ["edit #0", "must be a mapping"]),
    ],
)
def test_structure_errors(tmp_path: Path, data: Any, parts: list[str]) -> None:
    load_error(tmp_path, data, *parts)


def test_missing_required_edit_field(tmp_path: Path) -> None:
    edit = base_edit()
    del edit["target_new"]
    load_error(tmp_path, base_spec(edit), EIFFEL_LABEL, 'field "target_new"', "missing")


def test_missing_subject_still_names_the_edit(tmp_path: Path) -> None:
    edit = base_edit()
    del edit["subject"]
    load_error(
        tmp_path, base_spec(base_edit(prompt="{} is in"), edit), "edit #1", 'field "subject"'
    )


# --------------------------------------------------------------------------- unknown keys


def test_unknown_top_level_key(tmp_path: Path) -> None:
    load_error(tmp_path, base_spec(metod="rome"), '"metod"', 'did you mean "method"?')


def test_unknown_edit_key_names_path_and_suggestion(tmp_path: Path) -> None:
    good = base_edit(subject="A", target_new="x", target_true="y", paraphrases=[])
    bad = base_edit(subject="Big Ben", paraphrases=[])
    bad["targt_new"] = bad.pop("target_new")
    load_error(
        tmp_path,
        base_spec(good, good | {"subject": "B"}, bad),
        'edit #2 (subject "Big Ben")',
        '"edits[2].targt_new"',
        'did you mean "target_new"?',
    )


def test_unknown_hparams_key(tmp_path: Path) -> None:
    load_error(tmp_path, base_spec(hparams={"kl_factr": 0.1}), '"hparams.kl_factr"', "kl_factor")


def test_unknown_key_without_close_match_lists_valid_keys(tmp_path: Path) -> None:
    load_error(tmp_path, base_spec(zzzz=1), '"zzzz"', "valid keys:", "edits")


def test_unknown_neighborhood_item_key(tmp_path: Path) -> None:
    edit = base_edit(neighborhood=[{"prompt": "Big Ben is in", "anwser": "London"}])
    load_error(tmp_path, base_spec(edit), EIFFEL_LABEL, "neighborhood[0].anwser", '"answer"')


def test_non_string_key_is_unknown(tmp_path: Path) -> None:
    spec_error(lambda: spec_from_dict({1: 2, "edits": [base_edit()]}), 'unknown key "1"')


# --------------------------------------------------------------------------- top-level types


@pytest.mark.parametrize(
    ("top", "key"),
    [
        ({"layers": "six"}, 'key "layers"'),
        ({"layers": []}, 'key "layers"'),
        ({"layers": [-1]}, 'key "layers[0]"'),
        ({"layers": [6, True]}, 'key "layers[1]"'),
        ({"layers": [1.5]}, 'key "layers[0]"'),
        ({"layers": [3, 3]}, 'key "layers"'),
        ({"seed": True}, 'key "seed"'),
        ({"seed": "0"}, 'key "seed"'),
        ({"seed": -1}, 'key "seed"'),
        ({"model": 3}, 'key "model"'),
        ({"model": "  "}, 'key "model"'),
        ({"hparams": [1]}, 'key "hparams"'),
        ({"hparams": {"v_num_grad_steps": 2.5}}, 'key "hparams.v_num_grad_steps"'),
        ({"hparams": {"v_num_grad_steps": True}}, 'key "hparams.v_num_grad_steps"'),
        ({"hparams": {"v_num_grad_steps": 0}}, 'key "hparams.v_num_grad_steps"'),
        ({"hparams": {"v_lr": "fast"}}, 'key "hparams.v_lr"'),
        ({"hparams": {"v_lr": True}}, 'key "hparams.v_lr"'),
        ({"hparams": {"kl_factor": float("nan")}}, 'key "hparams.kl_factor"'),
        ({"hparams": {"kl_factor": -1}}, 'key "hparams.kl_factor"'),
        ({"hparams": {"loss_stop": 10**400}}, 'key "hparams.loss_stop"'),
        ({"hparams": {"value_scale": "half"}}, 'key "hparams.value_scale"'),
        ({"hparams": {"value_scale": False}}, 'key "hparams.value_scale"'),
        ({"hparams": {"mom2_dtype": "float16"}}, 'key "hparams.mom2_dtype"'),
        ({"hparams": {"context_template_lengths": 5}}, "hparams.context_template_lengths"),
        (
            {"hparams": {"context_template_lengths": [5, 0]}},
            'key "hparams.context_template_lengths[1]"',
        ),
        ({"hparams": {"corpus": ""}}, 'key "hparams.corpus"'),
    ],
)
def test_wrong_top_level_types(tmp_path: Path, top: dict[str, Any], key: str) -> None:
    load_error(tmp_path, base_spec(**top), key)


def test_layers_accepts_auto_list_and_single_int() -> None:
    assert spec_from_dict(base_spec(layers="auto")).layers == "auto"
    assert spec_from_dict(base_spec(layers=[4, 6])).layers == (4, 6)
    assert spec_from_dict(base_spec(layers=5)).layers == (5,)


@pytest.mark.parametrize("method", ["memit", "alphaedit", "emmet"])
def test_every_method_is_accepted_with_its_own_hparams(tmp_path: Path, method: str) -> None:
    """The batched methods' hparams are checked against their own schema: MEMIT's λ is
    accepted, ROME's value_scale is an unknown key for them."""
    spec = spec_from_dict(base_spec(method=method, hparams={"mom2_update_weight": 15000}))
    assert spec.method == method and spec.hparams["mom2_update_weight"] == 15000
    load_error(tmp_path, base_spec(method=method, hparams={"value_scale": "none"}), "value_scale")


def test_unknown_method_lists_supported(tmp_path: Path) -> None:
    load_error(tmp_path, base_spec(method="ft"), 'key "method"', "supported", '"rome"')


# --------------------------------------------------------------------------- edit fields


@pytest.mark.parametrize(
    ("overrides", "field", "problem"),
    [
        ({"prompt": "The Eiffel Tower is in"}, "prompt", '"{}" exactly once'),
        ({"prompt": "{} and {} are in"}, "prompt", "found 2"),
        ({"prompt": 5}, "prompt", "must be a string"),
        ({"target_new": ""}, "target_new", "non-empty"),
        ({"target_new": "   "}, "target_new", "non-empty"),
        ({"target_new": 1889}, "target_new", "quote it"),
        ({"target_true": " "}, "target_true", "non-empty"),
        ({"target_new": "Paris"}, "target_new", "equals target_true"),
        ({"target_new": " Paris "}, "target_new", "equals target_true"),
        ({"paraphrases": "The Eiffel Tower is in"}, "paraphrases", "list of strings"),
        ({"paraphrases": ["The Eiffel Tower is in", 3]}, "paraphrases[1]", "string"),
        ({"paraphrases": ["The Eiffel Tower is in", ""]}, "paraphrases[1]", "non-empty"),
        (
            {"paraphrases": ["The Eiffel Tower is in", "The tower is in"]},
            "paraphrases[1]",
            "does not contain the subject",
        ),
        ({"neighborhood": "The Louvre is in"}, "neighborhood", "must be a list"),
        ({"neighborhood": [None]}, "neighborhood[0]", "must be a string"),
        ({"neighborhood": [{"answer": "x"}]}, "neighborhood[0].prompt", "missing"),
        ({"neighborhood": [{"prompt": "a", "answer": ""}]}, "neighborhood[0].answer", "non-empty"),
        ({"generation_prompts": [{"a": 1}]}, "generation_prompts[0]", "string"),
        ({"case_id": True}, "case_id", "must be a string"),
    ],
)
def test_edit_field_errors(
    tmp_path: Path, overrides: dict[str, Any], field: str, problem: str
) -> None:
    load_error(
        tmp_path, base_spec(base_edit(**overrides)), EIFFEL_LABEL, f'field "{field}"', problem
    )


@pytest.mark.parametrize("subject", ["", "   ", None, 42])
def test_bad_subject(tmp_path: Path, subject: Any) -> None:
    load_error(tmp_path, base_spec(base_edit(subject=subject)), "edit #0", 'field "subject"')


def test_subject_with_braces_is_rejected(tmp_path: Path) -> None:
    load_error(tmp_path, base_spec(base_edit(subject="a{}b")), 'field "subject"', '"{}"')


def test_neighborhood_answers_use_target_true_for_plain_strings() -> None:
    edit = base_edit(
        neighborhood=["The Louvre is in", {"prompt": "Big Ben is in", "answer": "London"}]
    )
    (req,) = spec_from_dict(base_spec(edit)).edits
    assert req.neighborhood == ("The Louvre is in", "Big Ben is in")
    assert req.neighborhood_answers == ("Paris", "London")


def test_neighborhood_plain_string_without_target_true(tmp_path: Path) -> None:
    edit = base_edit(neighborhood=["The Louvre is in", {"prompt": "Big Ben is in", "answer": "X"}])
    del edit["target_true"]
    load_error(tmp_path, base_spec(edit), EIFFEL_LABEL, 'field "neighborhood[0]"', "target_true")


def test_duplicate_edits_name_both_indices(tmp_path: Path) -> None:
    other = base_edit(subject="Big Ben", paraphrases=[])
    load_error(
        tmp_path,
        base_spec(base_edit(), other, base_edit()),
        EIFFEL_LABEL,
        'edit #2 (subject "The Eiffel Tower")',
        "duplicates",
    )


def test_conflicting_edits_name_both_indices(tmp_path: Path) -> None:
    load_error(
        tmp_path,
        base_spec(base_edit(), base_edit(target_new="Berlin")),
        EIFFEL_LABEL,
        'edit #1 (subject "The Eiffel Tower")',
        'field "target_new"',
        "conflicts",
    )


def test_same_subject_different_relation_is_fine() -> None:
    other = base_edit(prompt="{} was designed by", target_new="Gaudi", target_true="Eiffel")
    assert len(spec_from_dict(base_spec(base_edit(), other)).edits) == 2


# --------------------------------------------------------------------------- load_spec


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    spec_error(lambda: load_spec(missing), "nope.yaml", "does not exist")


def test_yaml_limit_and_offset_keep_absolute_indices(tmp_path: Path) -> None:
    edits = [base_edit(subject=f"S{i}", prompt="{} is in", paraphrases=[]) for i in range(4)]
    path = write_yaml(tmp_path, base_spec(*edits))
    spec = load_spec(path, limit=2, offset=1)
    assert [e.subject for e in spec.edits] == ["S1", "S2"]
    edits[3]["target_new"] = ""
    path = write_yaml(tmp_path, base_spec(*edits))
    assert len(load_spec(path, limit=2).edits) == 2  # the bad edit is not selected
    spec_error(lambda: load_spec(path, offset=2), 'edit #3 (subject "S3")', "target_new")


@pytest.mark.parametrize(("limit", "offset"), [(0, 0), (-1, 0), (None, -1), (None, 99)])
def test_bad_limit_or_offset(tmp_path: Path, limit: int | None, offset: int) -> None:
    path = write_yaml(tmp_path, base_spec())
    spec_error(lambda: load_spec(path, limit=limit, offset=offset), "facts.yaml")


def test_json_object_is_a_spec(tmp_path: Path) -> None:
    path = write_json(tmp_path, base_spec(seed=3), "spec.json")
    spec = load_spec(path)
    assert spec.kind == "spec" and spec.seed == 3


def test_malformed_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    path.write_text('[\n  {"a": 1,}\n]', encoding="utf-8")
    spec_error(lambda: load_spec(path), "bench.json:2:11: malformed JSON")


def test_unrecognised_json_records(tmp_path: Path) -> None:
    path = write_json(tmp_path, [{"question": "x"}], "bench.json")
    spec_error(lambda: load_spec(path), "bench.json", "unrecognised format")
    path = write_json(tmp_path, [], "empty.json")
    spec_error(lambda: load_spec(path), "empty.json", "no records")


# --------------------------------------------------------------------------- CounterFact


def test_counterfact_loader(counterfact: Path) -> None:
    raw = read_records(counterfact)
    spec = load_spec(counterfact)
    assert spec.kind == "counterfact" and len(spec.edits) == len(raw) == 200
    first = spec.edits[0]
    assert first.subject == "Shanghai"
    rewrite = raw[0]["requested_rewrite"]
    assert first.prompt == rewrite["prompt"] and first.prompt.count("{}") == 1
    assert first.target_new == rewrite["target_new"]["str"].strip()
    assert first.target_true == rewrite["target_true"]["str"].strip()
    assert first.relation_id == rewrite["relation_id"]
    assert first.case_id == str(raw[0]["case_id"])
    assert first.paraphrases == tuple(raw[0]["paraphrase_prompts"])
    assert first.neighborhood == tuple(raw[0]["neighborhood_prompts"])
    assert first.neighborhood_answers == ()
    assert first.attribute_prompts == tuple(raw[0]["attribute_prompts"])
    assert first.generation_prompts == tuple(raw[0]["generation_prompts"])


def test_counterfact_limit_offset(counterfact: Path) -> None:
    raw = read_records(counterfact)
    spec = load_spec(str(counterfact), limit=3, offset=5)
    assert [e.case_id for e in spec.edits] == [str(r["case_id"]) for r in raw[5:8]]
    assert len(load_spec(counterfact, offset=198).edits) == 2


def test_counterfact_to_dict_round_trip(counterfact: Path) -> None:
    spec = load_spec(counterfact, limit=20)
    again = load_spec_text(yaml.safe_dump(spec.to_dict()))
    assert again.edits == spec.edits


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (("requested_rewrite", "target_new", "str"), "requested_rewrite.target_new.str"),
        (("requested_rewrite", "target_new"), "requested_rewrite.target_new.str"),
        (("requested_rewrite", "subject"), "requested_rewrite.subject"),
        (("requested_rewrite",), "requested_rewrite.subject"),
        (("paraphrase_prompts",), "paraphrase_prompts"),
    ],
)
def test_counterfact_missing_field(
    tmp_path: Path, counterfact: Path, path: tuple[str, ...], field: str
) -> None:
    records = read_records(counterfact)[:3]
    target = records[2]
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    file = write_json(tmp_path, records, "counterfact.json")
    case_id = records[2]["case_id"]
    spec_error(
        lambda: load_spec(file),
        "counterfact.json",
        f"record #2 (case_id {case_id}",
        f'missing field "{field}"',
    )
    assert len(load_spec(file, limit=2).edits) == 2


def test_counterfact_bad_content(tmp_path: Path, counterfact: Path) -> None:
    records = read_records(counterfact)[:2]
    records[1]["requested_rewrite"]["prompt"] = "no placeholder"
    records[0]["requested_rewrite"]["target_new"]["str"] = 7
    file = write_json(tmp_path, records, "counterfact.json")
    spec_error(
        lambda: load_spec(file, limit=1), "record #0", "requested_rewrite.target_new.str", "string"
    )
    spec_error(
        lambda: load_spec(file, offset=1),
        "record #1",
        'field "requested_rewrite.prompt"',
        "exactly once",
    )


def test_counterfact_non_object_record(tmp_path: Path, counterfact: Path) -> None:
    records: list[Any] = [*read_records(counterfact)[:1], "oops"]
    file = write_json(tmp_path, records, "counterfact.json")
    spec_error(lambda: load_spec(file), "counterfact.json", "record #1", "JSON object")


# --------------------------------------------------------------------------- zsRE


def test_zsre_loader(zsre: Path) -> None:
    raw = read_records(zsre)
    spec = load_spec(zsre)
    assert spec.kind == "zsre" and len(spec.edits) == len(raw)
    for i, (edit, record) in enumerate(zip(spec.edits, raw, strict=True)):
        assert edit.prompt.count("{}") == 1
        assert edit.rewrite_prompt == record["src"]
        assert edit.target_new == record["answers"][0]
        assert edit.target_true is None
        assert edit.paraphrases == (record["rephrase"],)
        assert edit.neighborhood == (record["loc"],)
        assert edit.neighborhood[0].startswith("nq question: ")
        assert edit.neighborhood_answers == (record["loc_ans"],)
        assert edit.case_id == str(i)
    again = spec_from_dict(spec.to_dict())
    assert again.edits == spec.edits


def test_zsre_offset_case_ids_are_absolute(zsre: Path) -> None:
    spec = load_spec(zsre, limit=2, offset=10)
    assert [e.case_id for e in spec.edits] == ["10", "11"]


def test_zsre_subject_not_in_src(tmp_path: Path, zsre: Path) -> None:
    records = read_records(zsre)[:2]
    records[1]["subject"] = "Nobody Knows"
    file = write_json(tmp_path, records, "zsre.json")
    spec_error(lambda: load_spec(file), "zsre.json", "record #1", 'field "subject"', "src")


def test_zsre_missing_field(tmp_path: Path, zsre: Path) -> None:
    records = read_records(zsre)[:2]
    del records[1]["loc_ans"]
    file = write_json(tmp_path, records, "zsre.json")
    spec_error(lambda: load_spec(file), "zsre.json", "record #1", 'missing field "loc_ans"')


def test_zsre_empty_answers(tmp_path: Path, zsre: Path) -> None:
    records = read_records(zsre)[:1]
    records[0]["answers"] = []
    file = write_json(tmp_path, records, "zsre.json")
    spec_error(lambda: load_spec(file), "record #0", 'field "answers"')


# --------------------------------------------------------------------------- import hygiene


def test_spec_imports_without_torch() -> None:
    code = (
        "import sys, factedit.spec; "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    env_path = str(REPO / "src")
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": env_path, "PATH": ""},
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- property tests

PLAUSIBLE_KEYS = [
    "model",
    "method",
    "layers",
    "seed",
    "hparams",
    "edits",
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
    "answer",
    *RomeHParams.names(),
]
PLAUSIBLE_TEXT = ["rome", "memit", "auto", "{}", "{} is in", "X", "X {} Y", "", " ", "{}{}"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(PLAUSIBLE_TEXT),
    st.text(max_size=12),
)
keys = st.one_of(st.sampled_from(PLAUSIBLE_KEYS), st.text(max_size=8), st.integers(), st.none())
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=5),
    ),
    max_leaves=25,
)


VALID_SPEC: dict[str, Any] = base_spec(
    base_edit(
        neighborhood=["The Louvre is in", {"prompt": "Big Ben is in", "answer": "London"}],
        generation_prompts=["{} is right across from"],
        case_id=7,
    ),
    base_edit(subject="Big Ben", prompt="{} chimes in", target_new="Oslo", paraphrases=[]),
    model="gemma-3-270m",
    method="rome",
    layers=[6],
    seed=1,
    hparams={"v_lr": 0.5, "context_template_lengths": [5, 10], "mom2_dtype": "float32"},
)


@st.composite
def mutated_specs(draw: st.DrawFn) -> Any:
    """A valid spec with up to three fields replaced, deleted or added."""
    data = copy.deepcopy(VALID_SPEC)
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        paths = tree_paths(data) if isinstance(data, (dict, list)) else []
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "add":
            parent = _get(data, path[:-1])
            if isinstance(parent, dict):
                parent[draw(keys)] = draw(values)
        elif action == "delete" or path[-1] is None:
            data = _mutate(data, path, _DELETE)
        else:
            data = _mutate(data, path, draw(values))
    return data


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        node = node[step]
    return node


spec_dicts = st.one_of(values, mutated_specs())


def _accepts_or_spec_error(action: Callable[[], EditSpec]) -> EditSpec | None:
    try:
        spec = action()
    except SpecError as exc:
        assert exc.problems and all("\n" not in p for p in exc.problems)
        lines = str(exc).splitlines()
        assert lines[-len(exc.problems) :] == list(exc.problems)
        assert len(lines) == (1 if len(exc.problems) == 1 else len(exc.problems) + 1)
        return None
    assert isinstance(spec, EditSpec)
    return spec


@settings(max_examples=200, deadline=None)
@given(spec_dicts)
def test_spec_from_dict_never_crashes(data: Any) -> None:
    spec = _accepts_or_spec_error(lambda: spec_from_dict(data))
    if spec is not None:
        assert spec_from_dict(spec.to_dict()) == spec


@settings(max_examples=200, deadline=None)
@given(spec_dicts)
def test_load_spec_text_of_dumped_structures_never_crashes(data: Any) -> None:
    try:
        text = yaml.safe_dump(data)
    except yaml.YAMLError:
        return
    _accepts_or_spec_error(lambda: load_spec_text(text))


YAML_PIECES = [
    "edits:",
    "\n",
    "  - ",
    "subject: ",
    "prompt: ",
    "target_new: ",
    "{}",
    ": ",
    "[",
    "]",
    "{",
    "}",
    '"',
    "'",
    "&a ",
    "*a",
    "- ",
    "#",
    "\t",
    "? ",
    "!!python/object ",
    "layers: ",
    "hparams: ",
]


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(max_size=80),
        st.lists(st.one_of(st.sampled_from(YAML_PIECES), st.text(max_size=5)), max_size=30).map(
            "".join
        ),
    )
)
def test_load_spec_text_of_random_text_never_crashes(text: str) -> None:
    _accepts_or_spec_error(lambda: load_spec_text(text))


def _mutate(record: Any, path: tuple[Any, ...], value: Any) -> Any:
    """Replace (or delete, when value is the sentinel) the item at ``path`` in a copy."""
    record = copy.deepcopy(record)
    target = record
    for step in path[:-1]:
        target = target[step]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return record


_DELETE = object()


@pytest.fixture(scope="module")
def first_records(counterfact: Path, zsre: Path) -> dict[str, dict[str, Any]]:
    """The first CounterFact and zsRE records, by the names the mutation test draws."""
    return {"cf": read_records(counterfact)[0], "zsre": read_records(zsre)[0]}


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.sampled_from(["cf", "zsre"]),
    st.data(),
    st.one_of(values, st.just(_DELETE)),
)
def test_mutated_benchmark_records_never_crash(
    tmp_path: Path,
    first_records: dict[str, dict[str, Any]],
    which: str,
    data: st.DataObject,
    value: Any,
) -> None:
    record = first_records[which]
    path = data.draw(st.sampled_from(tree_paths(record)))
    try:
        text = json.dumps([_mutate(record, path, value)])
    except ValueError:
        return
    file = tmp_path / f"{which}.json"
    file.write_text(text, encoding="utf-8")
    _accepts_or_spec_error(lambda: load_spec(file))
