"""The batched methods through the CLI on a tiny random model: `edit apply --method`, a saved
AlphaEdit state continued by the next `edit apply`, `eval --sequential --batch-size --plot`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from factedit.cli.main import app
from factedit.patch import Patch

SPEC = """
model: tiny
layers: [1, 2]
hparams: {mom2_n_tokens: 2000, v_num_grad_steps: 4, context_templates_per_length: 1}
edits:
  - subject: Eiffel Tower
    prompt: "The {} is located in the city of"
    target_new: Rome
    target_true: Paris
    paraphrases: ["The Eiffel Tower stands in the city of"]
    neighborhood: ["The Louvre is located in the city of"]
  - subject: Michael Jordan
    prompt: "{} is a professional"
    target_new: chess player
    target_true: basketball player
    neighborhood: ["Tiger Woods is a professional"]
"""


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    return path


def _run(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_edit_apply_alphaedit_saves_its_state_and_the_next_run_continues_it(
    spec_file, tiny_llama, tmp_path
):
    first, report = tmp_path / "first", tmp_path / "first.json"
    common = ["--method", "alphaedit", "--allow-large-updates"]
    _run("edit", "apply", str(spec_file), *common, "--out", str(first), "--json", str(report))
    data = json.loads(report.read_text())
    assert data["method"] == "alphaedit" and data["layers"] == [1, 2]
    assert [e["batch"] for e in data["edits"]] == [0, 0]
    updates = data["edits"][0]["deltas"]
    assert [u["layer"] for u in updates] == [1, 2] and updates[0]["null_dim"] > 0
    assert data["edits"][1]["deltas"] == []
    tensors, meta = Patch.load(first / "factedit-patch.safetensors").state
    assert meta["n_edits"] == 2 and meta["method"] == "alphaedit"
    assert set(tensors) == {"gram.1", "gram.2"}
    second = tmp_path / "second"
    result = _run(
        "edit", "apply", str(spec_file), *common, "--model", str(first), "--out", str(second)
    )
    assert "continuing the sequential state" in result.output
    carried = Patch.load(second / "factedit-patch.safetensors")  # both runs over the base
    assert carried.state[1]["n_edits"] == 4 and carried.state[1]["n_edits_before"] == 0
    assert len(carried.deltas) == 4 and len(carried.info["edits"]) == 4


def test_eval_sequential_batches_record_the_stream_and_plot_it(spec_file, tiny_llama, tmp_path):
    report, picture = tmp_path / "r.json", tmp_path / "curve.png"
    _run(
        "eval",
        str(spec_file),
        "--method",
        "memit",
        "--sequential",
        "--batch-size",
        "1",
        "--no-generation",
        "--allow-large-updates",
        "--json",
        str(report),
        "--plot",
        str(picture),
    )
    data = json.loads(report.read_text())
    assert [p["edits"] for p in data["stream"]["points"]] == [0, 1, 2]
    assert data["settings"]["method"] == "memit"
    assert {u["layer"] for u in data["updates"]} == {1, 2} and len(data["updates"]) == 4
    assert all("lambda" in u for u in data["updates"])
    assert picture.is_file() and picture.with_suffix(".svg").is_file()
    again = tmp_path / "both"
    _run("plot", str(report), str(report), "--out", str(again))
    assert again.with_suffix(".png").is_file()


def test_batch_size_needs_a_sequential_run(spec_file, tiny_llama):
    result = CliRunner().invoke(app, ["eval", str(spec_file), "--independent", "--batch-size", "2"])
    assert result.exit_code == 2 and "--sequential" in result.output
