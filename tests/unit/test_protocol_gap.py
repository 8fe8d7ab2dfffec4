"""scripts/protocol_gap.py counts where protocols (a) and (c) disagree, per prompt group."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def protocol_gap():
    sys.path.insert(0, str(SCRIPTS))  # for json_out
    try:
        spec = importlib.util.spec_from_file_location("protocol_gap", SCRIPTS / "protocol_gap.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPTS))
    return module


def _prompt(group: str, new: float, true: float, continuation: str, new_tokens: int = 1) -> dict:
    targets = {
        "new": {"logprob": new, "tokens": new_tokens},
        "true": {"logprob": true, "tokens": 1},
    }
    return {"group": group, "prompt": f"{group} prompt", "targets": targets,
            "continuation": continuation}  # fmt: skip


def test_counts_each_outcome_and_keeps_examples_of_a_without_c(protocol_gap) -> None:
    prompts = [
        _prompt("rewrite", -1.0, -3.0, " Paris, France"),  # a and c
        _prompt("paraphrase", -2.0, -4.0, " a city of light"),  # a, not c
        _prompt("paraphrase", -5.0, -1.0, " Parisian food"),  # neither: "Parisian" is not Paris
        _prompt("neighborhood", -5.0, -1.0, " Paris"),  # not a counted group
        # (a) compares mean token log-probabilities: -3.0 over 2 tokens beats -2.0 over 1
        _prompt("rewrite", -3.0, -2.0, " the capital", new_tokens=2),
    ]
    edited = {"target_new": "Paris", "prompts": prompts}
    report = {"edits": [{"measurements": {"edited": edited}}]}
    result = protocol_gap.gap(report)
    assert result["counts"] == {
        "rewrite": {"a=1 c=1": 1, "a=1 c=0": 1},
        "paraphrase": {"a=1 c=0": 1, "a=0 c=0": 1},
    }
    examples = [e["continuation"] for e in result["a_not_c_examples"]]
    assert examples == [" a city of light", " the capital"]
