"""The preset edit-layer rule (scripts/choose_edit_layer.py) on hand-made inputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "choose_edit_layer.py"


@pytest.fixture(scope="module")
def rule():
    spec = importlib.util.spec_from_file_location("choose_edit_layer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _selectivity(leaks: list[float]) -> dict:
    return {"leakage_by_layer": {str(i): {"same_relation_mean": x} for i, x in enumerate(leaks)}}


def test_the_least_leaky_layer_of_the_plateau_wins(rule):
    profile = {"mlp_effect_last_subject_token": [0.064, 0.071, 0.083, 0.086, 0.096, 0.095, 0.05]}
    leaks = [0.041, 0.036, 0.042, 0.074, 0.151, 0.128, 0.01]
    choice = rule.choose(profile, _selectivity(leaks), band=0.15)
    # layers 2-5 are within 15% of the peak (0.096); layer 1 leaks less but is off the plateau,
    # and layer 6 leaks least of all but carries half the effect
    assert sorted(choice["candidates"]) == [2, 3, 4, 5]
    assert choice["layer"] == 2 and choice["peak_layer"] == 4
    assert rule.choose(profile, _selectivity(leaks), band=0.3)["layer"] == 1


def test_an_aggregate_trace_json_is_read_at_the_last_subject_token(rule):
    groups = ["first subject token", "last subject token", "last token"]
    trace = {"groups": groups, "effects": {"mlp": [[9, 9, 9], [0.1, 0.3, 0.29], [9, 9, 9]]}}
    choice = rule.choose(trace, _selectivity([0.5, 0.2, 0.1]), band=0.15)
    assert choice["layer"] == 2 and choice["mlp_effect"] == 0.29
