"""`factedit edit` through Typer's CliRunner, on a tiny random model."""

from __future__ import annotations

import errno
import json
import math
import os
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

import factedit.methods.rome
from factedit.cli import edit as edit_cli
from factedit.cli.main import app
from factedit.delta import AppliedDeltas, WeightDelta
from factedit.evaluate.probe import probe_entropy
from factedit.methods.hparams import RomeHParams
from factedit.methods.registry import method_info
from factedit.methods.state import MethodState
from factedit.patch import Patch
from factedit.session import EditSession
from factedit.testing import collapsing_delta, small_delta

SPEC = """
model: tiny
layers: [1]
hparams: {mom2_n_tokens: 2000, v_num_grad_steps: 4, context_templates_per_length: 2}
edits:
  - subject: Eiffel Tower
    prompt: "The {} is located in the city of"
    target_new: Rome
    target_true: Paris
    paraphrases: ["The Eiffel Tower stands in the city of"]
    neighborhood: ["The Louvre is located in the city of"]
"""


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    return path


def test_edit_apply_writes_model_json_and_patch(spec_file, tiny_llama, tmp_path):
    lm = tiny_llama
    original = lm.arch.down_proj_weight(1).detach().clone()
    out_dir, report = tmp_path / "edited", tmp_path / "report.json"
    result = CliRunner().invoke(
        app, ["edit", "apply", str(spec_file), "--out", str(out_dir), "--json", str(report)]
    )
    assert result.exit_code == 0, result.output
    assert "edit #0" in result.output and "greedy generation" in result.output

    data = json.loads(report.read_text())
    assert data["schema"] == "factedit.edit/1" and data["layers"] == [1]
    edit = data["edits"][0]
    assert set(edit["metrics"]["after"]) >= {"es", "ps", "ns"}
    assert edit["deltas"][0]["layer"] == 1

    reloaded = AutoModelForCausalLM.from_pretrained(out_dir)
    name = lm.arch.down_proj_weight_name(1)
    saved = reloaded.get_parameter(name).detach()
    (patch,) = Patch.load(out_dir / "factedit-patch.safetensors").deltas
    assert torch.allclose(saved, original + patch.dense(), atol=1e-6)
    assert not torch.equal(saved, original)
    assert (out_dir / "factedit-spec.yaml").is_file()
    saved_report = json.loads((out_dir / "factedit-report.json").read_text())
    assert saved_report["fluency_probe"] == data["fluency_probe"]
    assert data["fluency_probe"]["before"] > 250 and data["fluency_probe"]["collapsed"] is False


def test_interrupted_out_write_leaves_nothing(spec_file, tiny_llama, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(tiny_llama.model), "save_pretrained", interrupted)
    out_dir = tmp_path / "edited"
    result = CliRunner().invoke(app, ["edit", "apply", str(spec_file), "--out", str(out_dir)])
    assert result.exit_code == 130
    assert _error_line(result.output) == "error: interrupted; nothing half-written was left behind"
    assert not out_dir.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["spec.yaml"]  # no temporary left behind


def test_invalid_spec_fails_before_loading_a_model(tmp_path, monkeypatch):
    def no_model(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("factedit.models.loading.load_model", no_model)
    bad = tmp_path / "bad.yaml"
    bad.write_text(SPEC.replace("target_new: Rome", "target_new: ''"))
    result = CliRunner().invoke(app, ["edit", "apply", str(bad)])
    assert result.exit_code == 2
    assert "bad.yaml" in result.output and "target_new" in result.output
    result = CliRunner().invoke(app, ["edit", "apply", str(bad), "--layers", "x"])
    assert result.exit_code == 2


def test_validate_command(spec_file):
    result = CliRunner().invoke(app, ["edit", "validate", str(spec_file)])
    assert result.exit_code == 0 and "1 edit, method rome" in " ".join(result.output.split())


def _error_line(output: str) -> str:
    (line,) = [x for x in output.splitlines() if x.startswith("error:")]
    return line


def test_disk_full_during_out_keeps_the_previous_model(
    spec_file, tiny_llama, tmp_path, monkeypatch, snapshot, leftovers
):
    out_dir = tmp_path / "edited[v2]"  # "[v2]" would be a rich markup tag
    out_dir.mkdir()
    (out_dir / "model.safetensors").write_bytes(b"the previous model")
    (out_dir / "config.json").write_text("{}")
    before = snapshot(out_dir)

    def disk_full(self, directory, **kwargs):
        (Path(directory) / "model.safetensors").write_bytes(b"half a mod")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(type(tiny_llama.model), "save_pretrained", disk_full)
    args = ["edit", "apply", str(spec_file), "--out", str(out_dir), "--overwrite"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    line = _error_line(result.output)
    assert str(out_dir) in line and "disk full" in line
    assert snapshot(out_dir) == before
    assert leftovers(tmp_path) == []


def test_disk_full_or_ctrl_c_during_json_keeps_the_previous_report(
    spec_file, tiny_llama, tmp_path, failing_writes, snapshot, leftovers
):
    report = tmp_path / "report.json"
    report.write_text('{"previous": "report"}\n')
    before = snapshot(report)
    failing_writes(path=report)  # the statistics and template caches still write
    result = CliRunner().invoke(app, ["edit", "apply", str(spec_file), "--json", str(report)])
    assert result.exit_code == 2, result.output
    line = _error_line(result.output)
    assert str(report) in line and "disk full" in line
    assert snapshot(report) == before and leftovers(tmp_path) == []

    failing_writes(KeyboardInterrupt(), path=report)
    result = CliRunner().invoke(app, ["edit", "apply", str(spec_file), "--json", str(report)])
    assert result.exit_code == 130, result.output
    assert snapshot(report) == before and leftovers(tmp_path) == []


def test_prompt_longer_than_the_context_fails_before_editing(spec_file, tiny_llama, monkeypatch):
    def no_editor(*args, **kwargs):
        raise AssertionError("an editor was made")

    monkeypatch.setattr(edit_cli, "EditSession", no_editor)
    long = "The Eiffel Tower stands " + "near the river " * tiny_llama.max_length + "in"
    spec_file.write_text(SPEC.replace("The Eiffel Tower stands in the city of", long))
    result = CliRunner().invoke(app, ["edit", "apply", str(spec_file)])
    assert result.exit_code == 2, result.output
    line = _error_line(result.output)
    assert 'spec.yaml: edit #0 (subject "Eiffel Tower"), field "paraphrases[0]"' in line
    assert f"context is {tiny_llama.max_length}" in line


class _FixedSession(EditSession):
    """An EditSession whose method returns one given delta per request (no C, no ROME)."""

    def __init__(self, lm, delta):
        self.lm, self.method, self.layers, self.layer_reason, self.seed = (
            lm,
            "rome",
            (1,),
            "test",
            0,
        )
        self.state = MethodState(RomeHParams())
        self.info = method_info("rome")
        self.applied = AppliedDeltas(lm.model)
        self.allow_large_updates = False
        self.edits, self._computed = [], None
        self._delta = delta

    def compute(self, requests):
        meta = {"layer": 1, "relative_norm": 0.5, "edit": 0}
        return [replace(self._delta, meta=meta) for _ in requests]


@pytest.mark.parametrize("collapse", [True, False])
def test_fluency_probe_warns_only_when_the_model_collapsed(
    spec_file, tiny_llama, tmp_path, monkeypatch, collapse
):
    lm = tiny_llama
    unedited = probe_entropy(lm)
    delta = collapsing_delta(lm) if collapse else small_delta(lm)
    monkeypatch.setattr(edit_cli, "EditSession", lambda lm, **kw: _FixedSession(lm, delta))
    report = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["edit", "apply", str(spec_file), "--json", str(report)])
    assert result.exit_code == 0, result.output
    probe = json.loads(report.read_text())["fluency_probe"]
    assert probe["before"] == unedited > 250
    assert probe["collapsed"] is collapse
    warned = [x for x in result.output.splitlines() if x.startswith("warning:")]
    if collapse:
        assert probe["after"] < 1.0
        (line,) = warned
        assert "collapsed" in line
        assert f"{probe['before']:.0f} before" in line and f"{probe['after']:.0f} after" in line
    else:
        assert probe["after"] == pytest.approx(unedited, rel=0.05)
        assert warned == []


def test_large_update_is_refused_unless_allowed(spec_file, tiny_llama, monkeypatch, tmp_path):
    lm = tiny_llama
    name = lm.arch.down_proj_weight_name(1)
    weight = lm.model.get_parameter(name)
    original = weight.detach().clone()
    left = original[:, :1] * 50
    right = torch.nn.functional.one_hot(torch.tensor([0]), weight.shape[1]).T.float()
    ratio = float(torch.linalg.norm(left @ right.T) / torch.linalg.norm(original))
    assert ratio > 1.0
    big = WeightDelta(name, left, right, {"layer": 1, "relative_norm": ratio, "edit": 0})
    monkeypatch.setattr(
        factedit.methods.rome, "compute_rome", lambda *a, **k: SimpleNamespace(delta=big)
    )
    report, out = tmp_path / "report.json", tmp_path / "edited"
    args = ["edit", "apply", str(spec_file), "--json", str(report), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    line = _error_line(result.output)
    assert "refused: 1 of 1 edits were not applied" in line and "was not written" in line
    assert 'subject "Eiffel Tower"' in line and f"= {ratio:.2f}" in line
    assert "--allow-large-updates" in line
    assert "REFUSED" in result.output
    assert torch.equal(weight, original) and not out.exists()
    written = json.loads(report.read_text())
    assert written["refused"] == 1 and written["edits"][0]["status"] == "refused"

    args = ["edit", "apply", str(spec_file), "--allow-large-updates"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert torch.allclose(weight, original + big.dense())


def test_apply_ends_with_a_verdict_per_edit_and_warns_about_a_changed_neighbour(
    spec_file, tiny_llama, monkeypatch
):
    from factedit.evaluate.measure import PromptMeasurement, RequestMeasurement
    from factedit.evaluate.scoring import TokenScores

    def scores(p: float) -> TokenScores:
        return TokenScores(logprobs=(math.log(p),), correct=(p > 0.5,))

    def state(p_rewrite: float, p_louvre: float) -> RequestMeasurement:
        louvre = "The Louvre is located in the city of"
        return RequestMeasurement(
            "Rome",
            "Paris",
            (
                PromptMeasurement("rewrite", "The Eiffel Tower is", scores(p_rewrite), scores(0.3)),
                PromptMeasurement("paraphrase", "It stands in", scores(p_rewrite), scores(0.3)),
                PromptMeasurement("neighborhood", louvre, scores(p_louvre), scores(0.4)),
            ),
        )

    # what the measurements say before and after the edit: the Louvre moved to Rome too
    states = iter([state(0.1, 0.1), state(0.8, 0.7)])
    monkeypatch.setattr(
        "factedit.apply.measure_requests", lambda lm, reqs: [next(states) for _ in reqs]
    )
    result = CliRunner().invoke(app, ["edit", "apply", str(spec_file)])
    assert result.exit_code == 0, result.output
    assert "edit #0 Eiffel Tower → Rome: rewrite 1/1, paraphrases 1/1, neighbours kept 0/1" in (
        result.output
    )
    assert (
        'warning: edit #0 (Eiffel Tower → Rome) changed a neighbour: "The Louvre is located in '
        'the city of" now prefers Rome over Paris'
    ) in " ".join(result.output.split())
