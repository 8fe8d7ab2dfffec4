"""``factedit probe`` through CliRunner with a tiny model in place of the real one: outputs,
the JSON schema, the cache across runs, bad data as exit 2, relations, and an edit."""

from __future__ import annotations

import copy
import json

import pytest
import typer
from typer.testing import CliRunner

import factedit.cli.probe as probe_cli
from factedit.delta import AppliedDeltas
from factedit.hooks import count_hooks
from factedit.patch import Patch
from factedit.patch.core import PATCH_FILE
from factedit.testing import small_delta
from probing_helpers import task_rows, write_jsonl

pytestmark = pytest.mark.usefixtures("one_thread", "home")

FAST = ["--seeds", "2", "--batch-size", "32"]


@pytest.fixture
def app():
    app = typer.Typer()
    app.command("probe")(probe_cli.probe_command)
    app.command("other")(lambda: None)  # keeps "probe" a sub-command, as in the real app
    return app


@pytest.fixture
def model(tiny, monkeypatch):
    lm = tiny("llama")
    models = {None: lm}

    def fake_load(ref=None, **kwargs):
        models.setdefault("calls", []).append(ref)
        return models[ref]

    monkeypatch.setattr(probe_cli, "load_model", fake_load)
    lm.models = models
    return lm


def _run(app, args):
    return CliRunner().invoke(app, ["probe", *args])


def test_probe_writes_json_pictures_and_a_table(app, model, tmp_path):
    data = write_jsonl(tmp_path / "task.jsonl", task_rows(40, labels=2))
    out = tmp_path / "out"
    res = _run(app, [str(data), "--out", str(out), "--lens", *FAST])
    assert res.exit_code == 0, res.output
    for name in ("probe.json", "probe.png", "probe.svg"):
        assert (out / name).stat().st_size > 0
    report = json.loads((out / "probe.json").read_text())
    assert report["schema"] == "factedit.probe/1"
    assert 0 <= report["majority_baseline"] <= 1
    assert len(report["layers"]) == model.arch.num_layers == report["num_layers"]
    for i, row in enumerate(report["layers"]):
        assert row["layer"] == i
        for key in ("accuracy", "control_accuracy", "cumulative_accuracy"):
            assert set(row[key]) == {"mean", "std"} and 0 <= row[key]["mean"] <= 1
        sel = row["accuracy"]["mean"] - row["control_accuracy"]["mean"]
        assert row["selectivity"] == pytest.approx(sel)
        assert set(row["lens"]) == {"top1", "top10", "median_rank", "mean_prob"}
    assert sum(report["scalar_mix"]["weights"]) == pytest.approx(1, abs=1e-5)
    assert report["task"]["examples"] == 40 and report["task"]["spans"] == 40
    assert [s["train"] + s["test"] for s in report["splits"]] == [40, 40]
    assert report["cache"]["hit"] is False
    assert "majority baseline" in res.stdout and "accuracy" in res.stdout
    assert count_hooks(model.model) == 0


def test_rerun_with_other_settings_hits_the_activation_cache(app, model, tmp_path):
    data = write_jsonl(tmp_path / "task.jsonl", task_rows(30))
    out = tmp_path / "out"
    assert _run(app, [str(data), "-o", str(out), "--no-mix", *FAST]).exit_code == 0
    res = _run(app, [str(data), "-o", str(out), "--no-mix", "--seeds", "3", "--json", "-"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["cache"]["hit"] is True and len(report["splits"]) == 3
    assert "scalar_mix" not in report and "gain" not in report["layers"][0]
    res = _run(app, [str(data), "-o", str(out), "--no-mix", "--token", "mean", "--json", "-"])
    assert json.loads(res.stdout)["cache"]["hit"] is False


@pytest.mark.parametrize(
    "line, message",
    [
        ({"text": "the red fox", "span": "blue", "label": "a"}, ':3: span "blue" does not occur'),
        ("{not json", ":3: not a JSON object"),
    ],
)
def test_bad_data_is_a_one_line_error_naming_the_line(app, model, tmp_path, line, message):
    rows = task_rows(4)
    data = write_jsonl(tmp_path / "bad.jsonl", [rows[0], rows[1], line, rows[2]])
    res = _run(app, [str(data), "-o", str(tmp_path / "out")])
    assert res.exit_code == 2
    errors = [x for x in res.output.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and str(data) in errors[0]
    assert "Traceback" not in res.output
    assert "calls" not in model.models  # failed before loading the model
    assert not (tmp_path / "out").exists()


def test_one_label_only_is_exit_2(app, model, tmp_path):
    rows = [{**r, "label": "same"} for r in task_rows(5)]
    res = _run(app, [str(write_jsonl(tmp_path / "one.jsonl", rows))])
    assert res.exit_code == 2 and 'have the label "same"' in res.output


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give either DATA"),
        (["--site", "neurons"], "--site neurons"),
        (["--token", "first"], "--token first"),
        (["--test-size", "1.5"], "--test-size"),
        (["--list-relations"], "--list-relations needs --facts"),
    ],
)
def test_bad_options_are_usage_errors(app, model, tmp_path, args, message):
    data = [str(write_jsonl(tmp_path / "t.jsonl", task_rows(4)))] if args else []
    res = _run(app, [*data, *args])
    assert res.exit_code == 2 and message in res.output


def _facts(tmp_path):
    """A flattened CounterFact file: two templates, three labels with 8, 8 and 2 subjects."""
    from probing_helpers import phrases

    names = phrases(20, seed=3)
    records = []
    for i, name in enumerate(names[:18]):
        label = ["French", "English", "Italian"][0 if i < 8 else 1 if i < 16 else 2]
        records.append({"prompt": f"The mother tongue of {name} is", "subject": name,
                        "ground_truth": label, "target_new": "German",
                        "locality_prompt": "x", "locality_ground_truth": "y"})  # fmt: skip
    records += [{**records[0], "prompt": f"{n} speaks", "subject": n} for n in names[18:]]
    path = tmp_path / "mass.json"
    path.write_text(json.dumps(records))
    return path, names


def test_list_relations_and_a_facts_task(app, model, tmp_path):
    facts, _ = _facts(tmp_path)
    res = _run(app, ["--facts", str(facts), "--list-relations", "--min-count", "5"])
    assert res.exit_code == 0, res.output
    assert "The mother tongue of {} is" in res.stdout and "x-speaks" in res.stdout
    assert "2 relations (mass format)" in res.stdout
    assert "calls" not in model.models
    out = tmp_path / "out"
    args = ["--facts", str(facts), "-r", "the-mother-tongue-of-x-is", "-o", str(out), *FAST]
    res = _run(app, args)
    assert res.exit_code == 0, res.output
    task = json.loads((out / "probe.json").read_text())["task"]
    assert task["relation"] == "The mother tongue of {} is" and task["min_count"] == 5
    assert task["labels"] == {"French": 8, "English": 8}
    assert task["dropped_labels"] == {"Italian": 2} and task["examples"] == 16


def _patch_for(lm, edits) -> Patch:
    """A patch that changes the model a lot (a rank-one update of layer 1's MLP)."""
    delta = small_delta(lm, layer=1, scale=1.0)
    applied = AppliedDeltas(lm.model)
    applied.add(delta)
    before = {name: applied.original(name) for name in applied.params}
    patch = Patch.from_deltas(lm, [delta], before, method="test", layers=[1], edits=edits)
    applied.revert()
    return patch


def test_probing_an_edit_by_patch_and_by_edited_directory(app, model, tmp_path):
    facts, names = _facts(tmp_path)
    edits = [
        {"subject": names[0], "prompt": "The mother tongue of {} is", "target_true": "French",
         "target_new": "English"},
        {"subject": names[1], "prompt": "The mother tongue of {} is", "target_true": "French",
         "target_new": "German"},
    ]  # fmt: skip
    patch = _patch_for(model, edits)
    patch_file = tmp_path / "e.patch.safetensors"
    patch.save(patch_file)
    weights = {k: v.clone() for k, v in model.model.state_dict().items()}
    base = ["--facts", str(facts), "-r", "The mother tongue of {} is", "--no-mix", *FAST]
    res = _run(app, [*base, "-o", str(tmp_path / "p"), "--patch", str(patch_file)])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert report["edit"] == {"source": str(patch_file), "edits": 2, "eligible": 1}
    for row in report["layers"]:
        assert set(row["edit"]) == {"moved", "to_new", "was_true"}
        assert all(v in (0.0, 1.0) for v in row["edit"].values())  # one eligible edit
    assert all(v.equal(model.model.state_dict()[k]) for k, v in weights.items())  # reverted
    assert "moved" in res.stdout

    edited = copy.deepcopy(model)
    patch.apply(edited)
    directory = tmp_path / "edited-model"
    directory.mkdir()
    patch.save(directory / PATCH_FILE)
    model.models[str(directory)] = edited
    res = _run(app, [*base, "-o", str(tmp_path / "d"), "--edited", str(directory)])
    assert res.exit_code == 0, res.output
    by_dir = json.loads((tmp_path / "d" / "probe.json").read_text())
    assert [r["edit"] for r in by_dir["layers"]] == [r["edit"] for r in report["layers"]]
    assert model.models["calls"][-1] == str(directory)


def test_lazy_names_cover_every_global_the_command_uses():
    import builtins
    import dis
    import inspect

    probe_cli._heavy.load()
    for name, fn in vars(probe_cli).items():
        fn = inspect.unwrap(fn) if callable(fn) else fn
        if not inspect.isfunction(fn) or fn.__module__ != probe_cli.__name__:
            continue
        used = {i.argval for i in dis.get_instructions(fn) if i.opname == "LOAD_GLOBAL"}
        missing = {g for g in used if g not in vars(probe_cli) and not hasattr(builtins, g)}
        assert not missing, f"{name} uses undefined {sorted(missing)}"


def test_copied_min_count_agrees_with_its_source():
    from factedit.probing.tasks import MIN_LABEL_COUNT

    assert probe_cli.MIN_LABEL_COUNT == MIN_LABEL_COUNT
