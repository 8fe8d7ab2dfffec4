"""The evaluator on the real gemma-3-270m: batched scoring, and the CI gate on good/bad edits."""

from __future__ import annotations

import json

import pytest
import typer
import yaml
from typer.testing import CliRunner

from factedit.evaluate.scoring import score_continuations, score_unbatched
from factedit.spec import load_spec
from factedit.tokens import prompt_token_ids, target_token_ids

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def record(data_file):
    return load_spec(data_file("counterfact-dev.json"), limit=1).edits[0]


def test_batched_scoring_matches_naive_loop_on_gemma(gemma, record):
    tok = gemma.tokenizer
    prompts = [record.rewrite_prompt, *record.paraphrases, *record.neighborhood]
    targets = [record.target_new, record.target_true, "the United States of America"]
    items = [(prompt_token_ids(tok, p), target_token_ids(tok, t)) for p in prompts for t in targets]
    assert all(ids[0] == tok.bos_token_id for ids, _ in items)
    batched, naive = score_continuations(gemma, items), score_unbatched(gemma, items)
    for b, n in zip(batched, naive, strict=True):
        assert b.logprobs == pytest.approx(n.logprobs, abs=2e-3)
        assert b.correct == n.correct


def _run_gate(gemma, monkeypatch, tmp_path, name: str, layers: list[int], hparams: dict, record):
    from factedit.cli.eval import eval_command

    monkeypatch.setattr("factedit.models.loading.load_model", lambda ref=None, **kw: gemma)
    spec = tmp_path / f"{name}.yaml"
    body = {"layers": layers, "edits": [record.to_dict()]}
    if hparams:
        body["hparams"] = hparams
    spec.write_text(yaml.safe_dump(body))
    app = typer.Typer()
    app.command("eval")(eval_command)
    app.callback()(lambda: None)
    out = tmp_path / f"{name}.json"
    args = ["eval", str(spec), "--no-generation", "--json", str(out)]
    result = CliRunner().invoke(app, [*args, "--fail-under", "es=100,ps=50"])
    return result, json.loads(out.read_text())


def test_ci_gate_passes_good_edit_and_fails_bad_edit(
    gemma, monkeypatch, tmp_path, record, wikitext_path
):
    monkeypatch.setenv("FACTEDIT_CORPUS", str(wikitext_path))  # wherever $FACTEDIT_DATA is
    layer = gemma.default_layer
    good, good_report = _run_gate(gemma, monkeypatch, tmp_path, "good", [layer], {}, record)
    assert good.exit_code == 0, good.output
    assert good_report["gate"]["passed"] is True
    assert good_report["metrics"]["edited"]["es"] == 100.0
    # deliberately wrong: the last layer, whose MLP output at the subject cannot reach the
    # prediction at the end of the prompt (one optimisation step, small statistics: cheap)
    last = gemma.arch.num_layers - 1
    cheap = {"v_num_grad_steps": 1, "mom2_n_tokens": 4096}
    bad, bad_report = _run_gate(gemma, monkeypatch, tmp_path, "bad", [last], cheap, record)
    assert bad.exit_code == 1, bad.output
    assert "quality gate failed" in bad.output
    assert bad_report["gate"]["passed"] is False
