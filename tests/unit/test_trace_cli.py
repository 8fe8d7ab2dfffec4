"""``factedit trace`` through CliRunner with a tiny model in place of the real one."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

import factedit.cli.trace as trace_cli
from factedit.hooks import count_hooks
from factedit.tokens import target_token_ids
from factedit.trace import trace_fact

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = "The Eiffel Tower is located in the city of"


@pytest.fixture
def app():
    app = typer.Typer()
    app.command("trace")(trace_cli.trace_command)
    app.command("other")(lambda: None)  # keeps "trace" a sub-command, as in the real app
    return app


@pytest.fixture
def model(tiny, monkeypatch):
    lm = tiny("llama")
    calls = []

    def fake_load(ref=None, **kwargs):
        calls.append(ref)
        return lm

    monkeypatch.setattr(trace_cli, "load_model", fake_load)
    lm.calls = calls
    return lm


def test_trace_writes_pictures_json_and_recommends_a_layer(app, model, tmp_path):
    out = tmp_path / "out"
    args = ["trace", PROMPT, "--subject", "Eiffel Tower", "--samples", "2", "--window", "2"]
    res = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    for name in ("trace.png", "trace.svg", "trace.json"):
        assert (out / name).stat().st_size > 0
    data = json.loads((out / "trace.json").read_text())
    layer = data["recommended_layer"]["layer"]
    assert f"recommended edit layer: {layer}" in res.stdout
    assert set(data["grids"]) == {"hidden", "mlp", "attn"}
    assert data["settings"]["samples"] == 2
    assert count_hooks(model.model) == 0


def test_json_to_stdout_and_kind_subset(app, model, tmp_path):
    args = ["trace", PROMPT, "-s", "Eiffel Tower", "--kind", "mlp", "--samples", "1"]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path), "--json", "-"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert list(data["grids"]) == ["mlp"]
    a, b = data["subject_span"]
    assert "".join(data["tokens"][a:b]) == " Eiffel Tower"
    # one entry per token, not per word: the tiny BPE (trained on factedit.testing.corpus)
    # splits the rarer "Eiffel" into " E", "if", "f", "el" (printed by decoding
    # bpe_tokenizer(" Eiffel Tower") token by token); " Tower" is one token
    assert [t.strip() for t in data["tokens"][a:b]] == ["E", "if", "f", "el", "Tower"]


def test_absent_subject_is_a_one_line_error_before_loading(app, model, tmp_path):
    res = CliRunner().invoke(app, ["trace", PROMPT, "--subject", "Big Ben", "-o", str(tmp_path)])
    assert res.exit_code == 2
    assert "Big Ben" in res.output and "Traceback" not in res.output
    assert model.calls == []
    assert not (tmp_path / "trace.json").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--kind", "mlp,neurons"], "--kind"),
        (["--noise", "loud"], "--noise"),
        (["--samples", "0"], "--samples"),
    ],
)
def test_bad_options_are_usage_errors(app, model, extra, message):
    res = CliRunner().invoke(app, ["trace", PROMPT, "--subject", "Eiffel Tower", *extra])
    assert res.exit_code == 2 and message in res.output


def test_prompt_or_facts_not_both(app, model, tmp_path):
    res = CliRunner().invoke(app, ["trace", "--subject", "X"])
    assert res.exit_code == 2
    facts = tmp_path / "f.json"
    facts.write_text("[]")
    res = CliRunner().invoke(app, ["trace", PROMPT, "--facts", str(facts)])
    assert res.exit_code == 2 and "not both" in res.output


def test_facts_aggregate_writes_outputs_and_caches(app, model, tmp_path, monkeypatch):
    monkeypatch.setenv("FACTEDIT_HOME", str(tmp_path / "home"))
    known = None
    for prompt, subject in [
        (PROMPT, "Eiffel Tower"),
        ("Rome is the capital of", "Rome"),
        ("The iPhone is made by", "iPhone"),
        ("Italy is a country in", "Italy"),
    ]:
        r = trace_fact(model, prompt, subject, samples=1, kinds=("mlp",), noise="0")
        if target_token_ids(model.tokenizer, r.answer)[0] == r.answer_id:
            known = {"subject": subject, "prompt": prompt, "attribute": r.answer}
            break
    if known is None:
        pytest.skip("the tiny model's answers do not round-trip through the tokenizer")
    facts = tmp_path / "known.json"
    records = [known, {**known, "attribute": "zzzzqqq"}]
    facts.write_text(json.dumps(records))
    out = tmp_path / "agg"
    args = ["trace", "--facts", str(facts), "--limit", "5", "--samples", "1", "--window", "2"]
    res = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "aggregate.json").read_text())
    assert data["facts_scanned"] == 2
    assert data["facts_kept"] == 1
    assert (out / "aggregate.png").is_file() and (out / "aggregate.svg").is_file()
    assert list((tmp_path / "home" / "traces").glob("*.json"))
    assert "recommended edit layer" in res.stdout
    assert [p.name for p in (out / "facts").iterdir()] == ["fact-000.json"]
    assert data["settings"]["resumed"] == 0
    rerun = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert rerun.exit_code == 0, rerun.output
    again = json.loads((out / "aggregate.json").read_text())
    assert again["settings"]["resumed"] == 1 and again["effects"] == data["effects"]


@pytest.mark.parametrize("name", ["trace.png", "trace.json", "extra.json"])
def test_disk_full_on_an_output_keeps_the_previous_file(
    app, model, tmp_path, name, failing_writes, snapshot, leftovers
):

    out = tmp_path / "out"
    out.mkdir()
    for previous in ("trace.png", "trace.svg", "trace.json", "extra.json"):
        (out / previous).write_bytes(b"previous " + previous.encode())
    target = out / name
    before = snapshot(target)
    failing_writes(path=target)
    args = ["trace", PROMPT, "-s", "Eiffel Tower", "--kind", "mlp", "--samples", "1"]
    res = CliRunner().invoke(app, [*args, "--out", str(out), "--json", str(out / "extra.json")])
    assert res.exit_code == 2, res.output
    (line,) = [x for x in res.output.splitlines() if x.startswith("error:")]
    assert str(target) in line and "disk full" in line
    assert snapshot(target) == before
    assert leftovers(out) == []
