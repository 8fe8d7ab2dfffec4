"""Validation reports every independent problem of a spec / benchmark file at once.

One SpecError lists them: ``FILE: N problems``, then one line per problem that names the
file, the edit / record and the field as a single problem's message does; a single problem is
its own one-line message. ``factedit edit validate`` prints each on an ``error:`` line.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from factedit.cli.main import app
from factedit.errors import SpecError
from factedit.spec import EditSpec, load_spec, load_spec_text, spec_from_dict
from spec_helpers import base_edit, problems_of, read_records, tree_paths, write_json, write_yaml


def three_mistakes(tmp_path: Path) -> Path:
    """Two mistakes in different edits and one in the settings."""
    return write_yaml(
        tmp_path,
        {
            "seed": -1,
            "edits": [
                base_edit("The Eiffel Tower", target_new=""),
                base_edit("Big Ben"),
                base_edit("The Louvre", prompt="The Louvre is in"),
            ],
        },
    )


THREE = [
    'facts.yaml: key "seed": must be an integer in [0, 2**32), not -1',
    'facts.yaml: edit #0 (subject "The Eiffel Tower"), field "target_new": must be a non-empty',
    'facts.yaml: edit #2 (subject "The Louvre"), field "prompt": must contain "{}" exactly once',
]


def test_two_edit_mistakes_and_a_settings_mistake_are_all_reported(tmp_path):
    path = three_mistakes(tmp_path)
    exc = problems_of(lambda: load_spec(path))
    lines = str(exc).splitlines()
    assert lines[0] == f"{path}: 3 problems"
    assert len(exc.problems) == 3 and lines[1:] == list(exc.problems)
    for line, expected in zip(lines[1:], THREE, strict=True):
        assert line.startswith(str(path.parent) + "/") and expected in line, line


def test_cli_validate_prints_every_problem_and_exits_2(tmp_path):
    path = three_mistakes(tmp_path)
    result = CliRunner().invoke(app, ["edit", "validate", str(path)], env={"COLUMNS": "80"})
    assert result.exit_code == 2, result.output
    errors = [x for x in result.output.splitlines() if x.startswith("error: ")]
    assert errors[0] == f"error: {path}: 3 problems"
    assert len(errors) == 4
    for line, expected in zip(errors[1:], THREE, strict=True):
        assert expected in line, line
    assert "ok" not in result.output


def test_a_single_problem_keeps_its_one_line_message(tmp_path):
    path = write_yaml(tmp_path, {"seed": -1, "edits": [base_edit()]})
    exc = problems_of(lambda: load_spec(path))
    assert str(exc) == f'{path}: key "seed": must be an integer in [0, 2**32), not -1'
    assert exc.problems == (str(exc),)
    result = CliRunner().invoke(app, ["edit", "validate", str(path)])
    assert result.exit_code == 2
    assert [x for x in result.output.splitlines() if x.startswith("error:")] == [f"error: {exc}"]


BAD_SETTINGS: dict[str, Any] = {
    "model": 3,
    "layers": [1, 1],
    "seed": "x",
    "hparams": {"v_lr": -1, "kl_factr": 0.1, "mom2_dtype": "float16"},
    "architecture": {"mlp": "", "bogus": "x"},
    "colour": "red",
    "edits": [base_edit()],
}
SETTING_KEYS = ['"colour"', 'key "model"', 'key "layers"', 'key "seed"']
ARCH_PROBLEMS = ['"architecture.bogus"', 'key "architecture.mlp"']


def assert_problem_keys(exc: SpecError, keys: list[str]) -> None:
    """One problem per key, in order, each a ``<spec>`` line naming its key."""
    assert len(exc.problems) == len(keys), exc
    for problem, key in zip(exc.problems, keys, strict=True):
        assert problem.startswith("<spec>: ") and key in problem, problem


def test_every_setting_unknown_key_and_hparam_is_checked():
    exc = problems_of(lambda: spec_from_dict(BAD_SETTINGS))
    hparams = ['"hparams.kl_factr"', 'key "hparams.v_lr"', 'key "hparams.mom2_dtype"']
    assert_problem_keys(exc, [*SETTING_KEYS, *ARCH_PROBLEMS, *hparams])


def test_a_bad_method_leaves_only_the_hparams_unchecked():
    # The method's hyper-parameter dataclass is the schema: without a method there is none.
    exc = problems_of(lambda: spec_from_dict(BAD_SETTINGS | {"method": "ft"}))
    keys = ['"colour"', 'key "model"', 'key "method"', 'key "layers"', 'key "seed"']
    assert_problem_keys(exc, [*keys, *ARCH_PROBLEMS])


def test_every_field_of_one_edit_is_checked():
    bad = {
        "subject": "The Eiffel Tower",
        "prompt": "no placeholder",
        "target_new": 5,
        "paraphrases": ["fine {}", 7, ""],
        "neighborhood": [{"promt": "Big Ben is in"}],
        "case_id": [],
    }
    exc = problems_of(lambda: spec_from_dict({"edits": [bad]}))
    fields = [
        '"target_new": must be a string',
        '"paraphrases[1]": must be a string',
        '"paraphrases[2]": must be a non-empty string',
        'unknown key "neighborhood[0].promt"; did you mean "prompt"?',
        '"case_id": must be a string',
        '"prompt": must contain "{}" exactly once',
    ]
    assert len(exc.problems) == len(fields), exc
    for problem, field in zip(exc.problems, fields, strict=True):
        assert problem.startswith('<spec>: edit #0 (subject "The Eiffel Tower")'), problem
        assert field in problem, problem


def test_a_misspelt_required_key_is_one_problem_not_two():
    data = base_edit()
    data["targt_new"] = data.pop("target_new")
    exc = problems_of(lambda: spec_from_dict({"edits": [data]}))
    assert exc.problems == (
        '<spec>: edit #0 (subject "The Eiffel Tower"): unknown key "edits[0].targt_new"; '
        'did you mean "target_new"?',
    )
    exc = problems_of(lambda: spec_from_dict({"edit": [data]}))
    assert len(exc.problems) == 1 and 'did you mean "edits"?' in str(exc)


def test_checks_that_need_a_failed_field_are_skipped():
    # The subject fails: its paraphrase is not also reported as lacking it.
    exc = problems_of(lambda: spec_from_dict({"edits": [base_edit("a{}b", paraphrases=["x"])]}))
    assert len(exc.problems) == 1 and 'field "subject": must not contain "{}"' in str(exc)


def test_duplicates_and_conflicts_are_all_reported_beside_field_problems():
    edits = [
        base_edit("A"),
        base_edit("A"),
        base_edit("B"),
        base_edit("B", target_new="Oslo"),
        base_edit("C", prompt=1),
    ]
    exc = problems_of(lambda: spec_from_dict({"edits": edits}))
    assert len(exc.problems) == 3, exc
    assert 'edit #4 (subject "C"), field "prompt"' in exc.problems[0]
    assert 'edit #1 (subject "A"): duplicates edit #0 (subject "A")' in exc.problems[1]
    assert 'edit #3 (subject "B"), field "target_new": conflicts with edit #2' in exc.problems[2]


def test_a_broken_file_is_still_reported_at_once(tmp_path):
    path = tmp_path / "facts.yaml"
    path.write_text("seed: -1\nedits: [\n", encoding="utf-8")
    exc = problems_of(lambda: load_spec(path))
    assert "malformed YAML" in str(exc) and "\n" not in str(exc)
    exc = problems_of(lambda: load_spec(tmp_path / "missing.yaml"))
    assert str(exc).endswith("spec file does not exist")


def test_offset_that_selects_nothing_is_reported_with_the_settings(tmp_path):
    path = write_yaml(tmp_path, {"seed": -1, "edits": [base_edit()]})
    exc = problems_of(lambda: load_spec(path, offset=3))
    assert len(exc.problems) == 2 and "offset 3 selects nothing" in exc.problems[1]


@pytest.fixture
def counterfact_records(data_file) -> list[dict[str, Any]]:
    """The first four CounterFact records (benchmark data); skips the test when absent."""
    return read_records(data_file("counterfact-dev.json"))[:4]


def test_counterfact_records_are_each_checked(tmp_path, counterfact_records):
    records = counterfact_records
    records[0]["requested_rewrite"]["target_new"]["str"] = 7
    records[1]["requested_rewrite"]["prompt"] = "no placeholder"
    del records[3]["requested_rewrite"]  # one problem, not one per field under it
    path = write_json(tmp_path, records, "counterfact.json")
    exc = problems_of(lambda: load_spec(path))
    assert str(exc).splitlines()[0] == f"{path}: 3 problems"
    assert "record #0" in exc.problems[0] and "target_new.str" in exc.problems[0]
    assert "record #1" in exc.problems[1] and "exactly once" in exc.problems[1]
    assert "record #3 (case_id" in exc.problems[2]
    assert 'missing field "requested_rewrite.subject"' in exc.problems[2]
    assert len(load_spec(path, offset=2, limit=1).edits) == 1


# --------------------------------------------------------------------------- invariants

_VALID = {
    "model": "gemma-3-270m",
    "seed": 1,
    "layers": [6],
    "hparams": {"v_lr": 0.5},
    "edits": [
        base_edit("A"),
        base_edit("B", neighborhood=[{"prompt": "C is in", "answer": "Oslo"}]),
    ],
}
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from(["", " ", "{}", "x", "auto", "rome", "A", "{} is in"]),
    st.lists(st.sampled_from(["x", "{}", 1]), max_size=2),
    st.dictionaries(st.sampled_from(["prompt", "answer", "zz"]), st.just("x"), max_size=2),
)


@st.composite
def _mutated(draw: st.DrawFn) -> Any:
    data = copy.deepcopy(_VALID)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(tree_paths(data)))
        parent = data
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(_VALUES)
    return data


@settings(max_examples=150, deadline=None)
@given(_mutated())
def test_every_problem_is_one_line_and_the_message_lists_them(data):
    try:
        spec = spec_from_dict(data)
    except SpecError as exc:
        assert exc.problems and all(
            "\n" not in p and p.startswith("<spec>: ") for p in exc.problems
        )
        assert len(set(exc.problems)) == len(exc.problems), exc
        if len(exc.problems) == 1:
            assert str(exc) == exc.problems[0]
        else:
            assert str(exc).splitlines() == [f"<spec>: {len(exc.problems)} problems", *exc.problems]
        return
    assert isinstance(spec, EditSpec)
    assert load_spec_text(yaml.safe_dump(spec.to_dict())) == spec
