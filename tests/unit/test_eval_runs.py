"""Evaluation loops (exact undo, accumulation), reports, and ``factedit eval`` through CliRunner."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
import typer
import yaml
from typer.testing import CliRunner

from factedit.delta import AppliedDeltas, WeightDelta, apply_deltas
from factedit.errors import RefusedEdit
from factedit.evaluate import measure_request, request_metrics
from factedit.evaluate.gate import GateError, check_gate, parse_thresholds
from factedit.evaluate.probe import probe_entropy
from factedit.evaluate.runner import (
    EvalOptions,
    run_edited,
    run_independent,
    run_sequential,
)
from factedit.methods.hparams import RomeHParams
from factedit.methods.registry import method_info
from factedit.methods.state import MethodState
from factedit.report import SCHEMA, build_report, render_markdown
from factedit.session import EditSession
from factedit.spec import EditRequest
from factedit.testing import collapsing_delta

EDITS = [
    EditRequest(
        subject="The Eiffel Tower",
        prompt="{} is located in the city of",
        target_new="Rome",
        target_true="Paris",
        paraphrases=("The Eiffel Tower stands in",),
        neighborhood=("The Louvre is located in the city of", "Big Ben is in"),
        generation_prompts=("The Eiffel Tower is",),
        case_id="1",
    ),
    EditRequest(
        subject="Michael Jordan",
        prompt="{} plays the sport of",
        target_new="soccer",
        target_true="basketball",
        paraphrases=("Michael Jordan is a professional",),
        neighborhood=("LeBron James plays the sport of",),
        generation_prompts=("Michael Jordan is known for",),
        case_id="2",
    ),
]
FAST = EvalOptions(generation=True, gen_length=16)
NO_GEN = EvalOptions(generation=False)


class RandomSession(EditSession):
    """An EditSession whose method is a seeded random rank-one ΔW per request (no ROME);
    subjects in ``fail_on`` are refused as a guard would refuse them."""

    def __init__(self, lm, *, layers=(1,), scale=3.0, fail_on=(), **_):
        self.lm, self.method, self.seed = lm, "random", 0
        self.layers = (1,) if layers == "auto" else tuple(layers)
        self.layer_reason = "given in the test"
        self.state = MethodState(RomeHParams())
        self.info = method_info("rome")
        self.applied = AppliedDeltas(lm.model)
        self.edits, self._computed = [], None
        self.allow_large_updates = False
        self.scale = scale
        self.fail_on = set(fail_on)
        self.calls = 0

    def compute(self, requests) -> list[WeightDelta]:
        return [self.delta_for(r) for r in requests]

    def delta_for(self, request: EditRequest) -> WeightDelta:
        self.calls += 1
        if request.subject in self.fail_on:
            raise RefusedEdit("update blew up")
        name = self.lm.arch.down_proj_weight_name(self.layers[0])
        shape = self.lm.model.get_parameter(name).shape
        g = torch.Generator().manual_seed(len(request.subject))
        left = torch.randn(shape[0], 1, generator=g) * self.scale
        return WeightDelta(name, left, torch.randn(shape[1], 1, generator=g))


def _state(lm) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in lm.model.state_dict().items()}


def _assert_bit_exact(lm, state) -> None:
    now = lm.model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in state.items())


def test_independent_run_restores_every_weight_and_measures_each_edit_alone(tiny):
    lm = tiny("llama")
    state = _state(lm)
    editor = RandomSession(lm)
    result = run_independent(lm, EDITS, editor, kind="counterfact", options=FAST)
    _assert_bit_exact(lm, state)
    assert editor.calls == 2 and not result.refused
    for outcome, req in zip(result.outcomes, EDITS, strict=True):
        assert outcome.metrics_unedited == request_metrics(
            measure_request(
                lm, req, generation=True, seed=outcome.index, gen_length=16, answer_tokens=12
            )
        )
        with apply_deltas(lm.model, editor.compute([req])):
            alone = measure_request(
                lm, req, generation=True, seed=outcome.index, gen_length=16, answer_tokens=12
            )
        assert outcome.metrics_edited == request_metrics(alone)
        assert outcome.metrics_edited != outcome.metrics_unedited
        assert outcome.layers == (1,)
    assert set(result.edited) >= {"es", "ps", "ns", "s", "ge", "em", "pm", "nm", "gen_es"}


def test_independent_run_detects_a_revert_that_is_not_exact(tiny, monkeypatch):
    lm = tiny("gpt2")
    monkeypatch.setattr(AppliedDeltas, "revert", lambda self: None)
    with pytest.raises(RuntimeError, match="bit for bit"):
        run_independent(lm, EDITS[:1], RandomSession(lm), options=EvalOptions(generation=False))


def test_sequential_run_accumulates_then_restores(tiny):
    lm = tiny("gemma3_text")
    state = _state(lm)
    editor = RandomSession(lm)
    options = EvalOptions(generation=False)
    result = run_sequential(lm, EDITS, editor, options=options)
    _assert_bit_exact(lm, state)
    both = editor.compute(EDITS)
    with apply_deltas(lm.model, both):
        final = [request_metrics(measure_request(lm, r, answer_tokens=12)) for r in EDITS]
    # the run pools both requests' prompts: equal up to the float rounding of the batch layout
    for outcome, alone in zip(result.outcomes, final, strict=True):
        assert outcome.metrics_edited == pytest.approx(alone, rel=1e-4, abs=1e-6)
    assert result.mode == "sequential"


@pytest.mark.parametrize("run", [run_independent, run_sequential])
def test_refused_edit_is_counted_and_kept_out_of_the_averages(tiny, run):
    lm = tiny("llama")
    editor = RandomSession(lm, fail_on={"Michael Jordan"})
    result = run(lm, EDITS, editor, options=EvalOptions(generation=False))
    assert [o.status for o in result.outcomes] == ["applied", "refused"]
    assert result.outcomes[1].reason == "update blew up"
    assert [o.index for o in result.refused] == [1]
    # the averages are over the applied edit alone, not over an "unedited" refused one
    assert result.edited["es"] == result.outcomes[0].metrics_edited["es"]
    assert result.unedited["es"] == result.outcomes[0].metrics_unedited["es"]
    assert result.edited["ns"] == result.outcomes[0].metrics_edited["ns"]
    report = build_report(result, model=lm, source="x.yaml")
    assert report["refused"] == 1
    assert [e["status"] for e in report["edits"]] == ["applied", "refused"]
    assert report["edits"][1]["reason"] == "update blew up"
    assert "refused: 1" in render_markdown(report)


def test_run_edited_compares_two_models(tiny):
    lm, other = tiny("llama"), tiny("llama", seed=1)
    result = run_edited(lm, other, EDITS, options=EvalOptions(generation=False))
    assert result.mode == "edited"
    assert result.outcomes[0].metrics_edited != result.outcomes[0].metrics_unedited


def test_gate_parsing_and_shortfalls():
    assert parse_thresholds("es=95, PS=80,ns=70.5") == {"es": 95.0, "ps": 80.0, "ns": 70.5}
    for bad in ("es", "es=", "xs=3", "es=abc", "es=1,es=2", "", "es=inf"):
        with pytest.raises(GateError):
            parse_thresholds(bad)
    short = check_gate({"es": 90.0, "ps": 85.0}, {"es": 95.0, "ps": 80.0})
    assert [(s.metric, s.short_by) for s in short] == [("es", 5.0)]
    assert "short by 5.00" in short[0].describe()
    with pytest.raises(GateError, match="ge"):
        check_gate({"es": 100.0}, {"ge": 1.0})


def test_report_schema_keys(tiny):
    lm = tiny("llama")
    result = run_independent(lm, EDITS, RandomSession(lm), options=FAST)
    report = build_report(result, model=lm, source="x.yaml", settings={"method": "rome"})
    assert report["schema"] == SCHEMA
    assert set(report) >= {
        "schema", "created", "source", "model", "settings", "versions", "timing", "metrics",
        "edits", "view", "refused",
    }  # fmt: skip
    assert set(report["versions"]) >= {"factedit", "torch", "transformers"}
    assert report["model"]["identity"] == lm.identity
    for side in ("unedited", "edited"):
        assert set(report["metrics"][side]) >= {"es", "em", "ps", "pm", "ns", "nm", "s", "ge"}
    entry = report["edits"][0]
    assert set(entry["metrics"]) == {"unedited", "edited", "delta"}
    prompt = entry["measurements"]["edited"]["prompts"][0]
    assert set(prompt["targets"]["new"]) >= {"prob", "nll"}
    json.dumps(report)
    md = render_markdown(report, per_edit=True)
    assert "| ES |" in md and "Eiffel Tower" in md


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(tiny, monkeypatch, tmp_path):
    """Run ``factedit eval`` on a tiny model with the random editor; returns (invoke, spec)."""
    import factedit.session
    from factedit.cli.eval import eval_command

    # a fresh $FACTEDIT_HOME: independent runs keep their outcomes there (evaluate/journal.py),
    # and the random editors of these tests all share one run key
    monkeypatch.setenv("FACTEDIT_HOME", str(tmp_path / "home"))
    lm = tiny("llama")
    models = {"edited-dir": tiny("llama", seed=5)}
    monkeypatch.setattr(
        "factedit.models.loading.load_model",
        lambda ref=None, **kw: models.get(Path(str(ref)).name, lm),
    )
    monkeypatch.setattr(factedit.session, "EditSession", RandomSession)
    app = typer.Typer()
    app.command("eval")(eval_command)
    app.callback()(lambda: None)
    spec = tmp_path / "facts.yaml"
    spec.write_text(yaml.safe_dump({"layers": [1], "edits": [e.to_dict() for e in EDITS]}))

    def invoke(*args: str):
        return CliRunner().invoke(app, ["eval", *map(str, args)])

    return invoke, spec, lm


def test_cli_gate_exit_codes(cli, tmp_path):
    invoke, spec, lm = cli
    state = _state(lm)
    ok = invoke(spec, "--fail-under", "es=0,ns=0", "--no-generation")
    assert ok.exit_code == 0, ok.output
    _assert_bit_exact(lm, state)
    bad = invoke(spec, "--fail-under", "es=100.5,ns=0", "--no-generation")
    assert bad.exit_code == 1
    assert "es" in bad.output and "short by" in bad.output and "ns " not in bad.output
    for usage in (
        ["--fail-under", "bogus=3"],
        ["--fail-under", "es"],
        ["--fail-under", "ge=100", "--no-generation"],
        ["--layers", "x"],
        ["--method", "nope"],
    ):
        result = invoke(spec, *usage)
        assert result.exit_code == 2, (usage, result.output)
    missing = invoke(tmp_path / "missing.yaml")
    assert missing.exit_code == 2


def test_cli_writes_json_and_markdown(cli, tmp_path):
    invoke, spec, _ = cli
    out_json, out_md = tmp_path / "r" / "eval.json", tmp_path / "eval.md"
    result = invoke(
        spec, "--json", out_json, "--markdown", out_md, "--per-edit", "--fail-under", "es=0"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out_json.read_text())
    assert report["schema"] == "factedit.eval/1"
    assert report["settings"]["mode"] == "sequential"  # default for specs
    assert report["settings"]["layers"] == [1]
    assert report["gate"]["passed"] is True
    assert len(report["edits"]) == 2
    assert {"es", "ps", "ns", "s", "ge"} <= set(report["metrics"]["edited"])
    meta = report["metric_meta"]
    assert set(meta) == set(report["metrics"]["edited"]) | set(report["metrics"]["unedited"])
    assert (
        meta["es"]["protocol"] == "probability"
        and "mean per-token NLL" in (meta["es"]["protocol_rule"])
    )
    assert meta["efficacy"]["protocol"] == "token_accuracy"
    assert meta["ge"]["protocol"] == "sampled_generation"
    markdown = out_md.read_text()
    assert "| ES | " in markdown and "| prob. comparison |" in markdown
    assert "Gate: passed" in out_md.read_text()
    assert "unedited" in result.output and "edited" in result.output
    assert not list(tmp_path.glob("**/.*.tmp"))


def test_cli_independent_and_edited_modes(cli, tmp_path):
    invoke, spec, _ = cli
    out = tmp_path / "ind.json"
    assert invoke(spec, "--independent", "--no-generation", "--json", out).exit_code == 0
    assert json.loads(out.read_text())["settings"]["mode"] == "independent"
    edited = tmp_path / "edited-dir"
    edited.mkdir()
    result = invoke(spec, "--edited", edited, "--no-generation", "--json", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["settings"]["mode"] == "edited"
    assert report["edited_model"] is not None


def test_cli_passes_the_specs_architecture_map_to_the_loader(cli, tmp_path, monkeypatch):
    invoke, _, lm = cli
    seen = []
    monkeypatch.setattr(
        "factedit.models.loading.load_model", lambda ref=None, **kw: seen.append(kw) or lm
    )
    mapping = {"layers": "model.layers", "down_proj": "mlp.down_proj"}
    spec = tmp_path / "mapped.yaml"
    spec.write_text(
        yaml.safe_dump({"layers": [1], "architecture": mapping, "edits": [EDITS[0].to_dict()]})
    )
    assert invoke(spec, "--no-generation").exit_code == 0
    assert seen and seen[0]["architecture"] == mapping


def _error_line(output: str) -> str:
    (line,) = [x for x in output.splitlines() if x.startswith("error:")]
    return line


@pytest.mark.parametrize("option", ["--json", "--markdown"])
def test_cli_disk_full_keeps_the_previous_report(
    cli, tmp_path, option, failing_writes, snapshot, leftovers
):
    invoke, spec, _ = cli
    report = tmp_path / "runs[v2]" / "report.out"  # "[v2]" would be a rich markup tag
    report.parent.mkdir()
    report.write_text("the previous report\n")
    before = snapshot(report)
    failing_writes(path=report)
    result = invoke(spec, "--no-generation", option, report)
    assert result.exit_code == 2, result.output
    line = _error_line(result.output)
    assert str(report) in line and "disk full" in line
    assert snapshot(report) == before
    assert leftovers(report.parent) == []


def test_cli_ctrl_c_during_a_report_write_leaves_no_partial_file(
    cli, tmp_path, failing_writes, leftovers
):
    invoke, spec, _ = cli
    report = tmp_path / "new" / "eval.json"
    failing_writes(KeyboardInterrupt(), path=report)
    result = invoke(spec, "--no-generation", "--json", report)
    assert result.exit_code == 130, result.output
    assert not report.exists() and leftovers(report.parent) == []


@pytest.mark.parametrize("field", ["prompt", "paraphrases", "neighborhood", "generation_prompts"])
def test_cli_prompt_longer_than_the_context_fails_before_editing(cli, tmp_path, monkeypatch, field):
    import factedit.session

    invoke, _, lm = cli
    long = "Michael Jordan " + "and the tower " * lm.max_length + "is in"
    edits = [e.to_dict() for e in EDITS]
    edits[1][field] = long.replace("Michael Jordan", "{}") if field == "prompt" else [long]
    spec = tmp_path / "long.yaml"
    spec.write_text(yaml.safe_dump({"layers": [1], "edits": edits}))

    def no_editing(*args, **kwargs):
        raise AssertionError("an editor was made")

    monkeypatch.setattr(factedit.session, "EditSession", no_editing)
    state = _state(lm)
    for offset in (0, 1):  # edits are numbered from the start of the file
        result = invoke(spec, "--no-generation", "--offset", offset)
        assert result.exit_code == 2, result.output
        line = _error_line(result.output)
        name = field if field == "prompt" else f"{field}[0]"
        assert 'long.yaml: edit #1 (subject "Michael Jordan")' in line
        assert f'field "{name}"' in line and f"context is {lm.max_length}" in line
    _assert_bit_exact(lm, state)


class CollapsingSession(RandomSession):
    """Every request gets the same model-destroying update (factedit.testing)."""

    def delta_for(self, request: EditRequest) -> WeightDelta:
        self.calls += 1
        return collapsing_delta(self.lm)


def test_sequential_fluency_probe_catches_a_collapsed_model_and_restores_it(tiny):
    lm = tiny("llama")
    state = _state(lm)
    unedited = probe_entropy(lm)
    result = run_sequential(lm, EDITS, CollapsingSession(lm), options=NO_GEN, probe=True)
    assert result.fluency_probe.before == unedited > 250
    assert result.fluency_probe.after < 1.0 and result.fluency_probe.collapsed
    _assert_bit_exact(lm, state)
    assert probe_entropy(lm) == unedited
    assert run_sequential(lm, EDITS, RandomSession(lm), options=NO_GEN).fluency_probe is None


def test_cli_sequential_reports_the_fluency_probe(cli, tmp_path, monkeypatch):
    import factedit.session

    invoke, spec, _ = cli
    out = tmp_path / "seq.json"
    monkeypatch.setattr(
        factedit.session, "EditSession", functools.partial(RandomSession, scale=1e-3)
    )
    result = invoke(spec, "--no-generation", "--json", out)
    assert result.exit_code == 0, result.output
    probe = json.loads(out.read_text())["fluency_probe"]
    assert set(probe) == {"before", "after", "collapsed"}
    assert probe["after"] == pytest.approx(probe["before"], rel=0.05) and not probe["collapsed"]
    assert not [x for x in result.output.splitlines() if x.startswith("warning:")]

    monkeypatch.setattr(factedit.session, "EditSession", CollapsingSession)
    result = invoke(spec, "--no-generation", "--json", out)
    assert result.exit_code == 0, result.output
    probe = json.loads(out.read_text())["fluency_probe"]
    assert probe["collapsed"] is True and probe["after"] < 1.0
    (line,) = [x for x in result.output.splitlines() if x.startswith("warning:")]
    assert "collapsed" in line and f"{probe['before']:.0f} before" in line

    result = invoke(spec, "--independent", "--no-generation", "--json", out)
    assert json.loads(out.read_text())["fluency_probe"] is None
