"""Sequential editing: batches in the one edit loop, AlphaEdit's state of earlier keys (kept,
saved, loaded, continued from a model directory), the stream curve, the layer window."""

from __future__ import annotations

import json

import pytest
import torch

from factedit.edit_loop import apply_in_order, batches
from factedit.errors import FactEditError
from factedit.evaluate.runner import EvalOptions, run_sequential
from factedit.evaluate.stream import sample_indices
from factedit.methods.keys import compute_keys
from factedit.report import build_report
from factedit.session import PATCH_FILE, EditSession
from factedit.spec import EditRequest
from factedit.trace.recommend import resolve_layers
from factedit.trace.window import plateau_window

FAST = {
    "mom2_n_tokens": 1_500,
    "v_num_grad_steps": 4,
    "context_templates_per_length": 1,
    "z_batch_facts": 2,
}
FACTS = [
    EditRequest(
        subject="Eiffel Tower", prompt="The {} is in", target_new="Rome", target_true="Paris"
    ),
    EditRequest(
        subject="Michael Jordan", prompt="{} plays", target_new="chess", target_true="ball"
    ),
    EditRequest(
        subject="the iPhone", prompt="{} is made by", target_new="Nokia", target_true="Apple"
    ),
    EditRequest(subject="Big Ben", prompt="{} stands in", target_new="Oslo", target_true="London"),
]


@pytest.fixture
def alphaedit(tiny, corpus_path):
    def make(lm=None, hparams=FAST, **kw) -> EditSession:
        lm = lm or tiny("llama")
        return EditSession(
            lm,
            method="alphaedit",
            layers=[1, 2],
            hparams=hparams,
            corpus=[corpus_path],
            allow_large_updates=True,  # random tiny models: large updates are not the point
            **kw,
        )

    return make


def test_batches_cut_the_stream():
    assert [list(b) for b in batches(5, 2)] == [[0, 1], [2, 3], [4]]


def test_the_loop_gives_a_batched_method_every_request_at_once(alphaedit):
    session = alphaedit()
    seen: list[int] = []
    done: list[int] = []
    run = apply_in_order(
        session,
        FACTS[:3],
        lambda i, r: list(i),
        on_edit=done.append,
        on_batch=lambda s: seen.append(len(s)),
    )
    assert seen == [3] and [s.batch for s in run.steps] == [0, 0, 0]
    assert done == [2], "a batch reports once, with its last index"
    assert len(run.steps[0].deltas) == 2 and run.steps[1].deltas == []
    assert session.state.sequential.n_edits == 3
    session.revert()
    assert session.state.sequential.n_edits == 0 and not session.state.sequential.grams


@pytest.mark.parametrize("passes", [1, 2])
def test_applied_batches_keep_their_keys_and_only_those(alphaedit, passes):
    """After two batches the state holds Σ K Kᵀ of both, each computed on the model carrying
    its own batch (every pass of it), weighing the bare prompt ½ as MEMIT's keys do; deltas
    computed but never applied add nothing."""
    session = alphaedit(
        hparams={**FAST, "window_passes": passes, "context_templates_per_length": 2}
    )
    lm, templates = session.lm, session.state.templates(session.lm)
    first = session.compute(FACTS[:2])
    unapplied = session.compute(FACTS[2:3])  # staged, then replaced: never applied
    assert session.state.sequential.n_edits == 0
    session.apply(first)
    assert session.state.sequential.n_edits == 0, "stale staged keys must not be committed"
    first = session.compute(FACTS[:2])
    session.apply(first)
    by_type = torch.tensor([0.5, 0.25, 0.25])  # "{}", then the two prefixes
    keys = compute_keys(lm, FACTS[:2], 1, templates, by_type).double()
    assert torch.allclose(session.state.sequential.grams[1], keys.T @ keys, rtol=1e-4, atol=1e-6)
    session.edit(FACTS[2:4])
    assert session.state.sequential.n_edits == 4
    del unapplied


def test_sequential_state_survives_save_and_load(alphaedit, tmp_path):
    session = alphaedit()
    session.edit(FACTS[:2])
    grams = {k: v.clone() for k, v in session.state.sequential.grams.items()}
    session.save(tmp_path / "patch.safetensors")
    weights = {d.param: session.lm.model.get_parameter(d.param).clone() for d in session.deltas}
    session.revert()
    fresh = alphaedit(lm=session.lm)
    fresh.load(tmp_path / "patch.safetensors")
    assert fresh.state.sequential.n_edits == 2
    for layer, gram in grams.items():
        assert torch.equal(fresh.state.sequential.grams[layer], gram)
    for name, weight in weights.items():
        assert torch.equal(fresh.lm.model.get_parameter(name), weight)
    fresh.edit(FACTS[2:3])  # continues: three edits' keys
    assert fresh.state.sequential.n_edits == 3


def test_a_model_directory_with_a_saved_state_continues_it(alphaedit, tmp_path):
    session = alphaedit()
    session.edit(FACTS[:2])
    session.save(tmp_path / PATCH_FILE)
    lm = session.lm
    lm.source_dir = tmp_path  # as if loaded from the directory `edit apply --out` wrote
    continued = EditSession(lm, method="alphaedit", layers="auto")
    assert continued.state.sequential.grams[1].dtype == torch.float64
    assert continued.hparams.v_num_grad_steps == FAST["v_num_grad_steps"], "settings kept"
    assert continued.layers == (1, 2) and "continuing" in continued.layer_reason
    assert continued.state.sequential.n_edits == 2
    with pytest.raises(FactEditError, match="saved edit state is for alphaedit"):
        EditSession(lm, method="alphaedit", layers=[2, 3], hparams=FAST)
    lm.source_dir = None


def test_apply_is_all_or_nothing(alphaedit):
    session = alphaedit()
    good = session.compute(FACTS[:1])
    broken = [good[0], type(good[1])(good[1].param, good[1].left[:-1], good[1].right)]
    before = {d.param: session.lm.model.get_parameter(d.param).clone() for d in good}
    with pytest.raises(Exception, match="shape"):
        session.apply(broken)
    for name, weight in before.items():
        assert torch.equal(session.lm.model.get_parameter(name), weight)
    assert session.deltas == [] and session.state.sequential.n_edits == 0


def test_sample_rule_is_fixed_and_nested():
    assert sample_indices(3, 10, 5, seed=0) == [0, 1, 2]
    early, late = sample_indices(6, 10, 5, seed=0), sample_indices(10, 10, 5, seed=0)
    assert len(early) == len(late) == 5 and all(i < 6 for i in early)
    assert sample_indices(10, 10, 5, seed=0) == late


def test_stream_records_a_point_per_batch(tiny, corpus_path):
    lm = tiny("llama")
    session = EditSession(
        lm,
        method="memit",
        layers=[1, 2],
        hparams=FAST,
        corpus=[corpus_path],
        allow_large_updates=True,
    )
    done: list[int] = []
    result = run_sequential(
        lm,
        FACTS,
        session,
        options=EvalOptions(generation=False),
        on_edit=done.append,
        batch_size=2,
        stream_sample=3,
    )
    assert done == [1, 3], "progress counts whole batches"
    points = result.stream["points"]
    assert [p["edits"] for p in points] == [0, 2, 4]
    assert [p["measured"] for p in points] == [3, 2, 3]
    assert all(n["delta_norm"] == 0.0 for n in points[0]["norms"])
    growth = [max(n["delta_norm"] for n in p["norms"]) for p in points]
    assert growth[0] < growth[1] < growth[2]
    assert all(0.0 <= p["efficacy"] <= 100.0 for p in points)
    report = build_report(result, model=lm)
    assert json.loads(json.dumps(report))["stream"]["points"][2]["batches"] == 2


def test_plateau_window_rule():
    curve = [0.064, 0.071, 0.083, 0.086, 0.096, 0.095, 0.091, 0.081, 0.067, 0.017]
    assert plateau_window(curve) == (2, 3, 4, 5, 6, 7)
    assert plateau_window([0.0, 1.0, 0.0]) == (1,)


def test_window_needs_a_known_facts_profile(tiny):
    lm = tiny("llama")
    with pytest.raises(FactEditError, match="factedit trace --facts"):
        resolve_layers(lm, "auto", FACTS, window=True)
    lm.default_window = (1, 2)
    layers, reason = resolve_layers(lm, "auto", FACTS, window=True)
    assert layers == (1, 2) and "window 1-2" in reason


def test_ctrl_c_during_the_layer_loop_leaves_the_model_as_it_was(alphaedit, monkeypatch):
    """An interrupt after the first layer's update was applied inside compute: every weight
    is restored bit for bit and nothing is staged or kept."""
    import factedit.methods.spread as spread

    session = alphaedit()
    lm = session.lm
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    calls = []

    def interrupted(*args, **kwargs):  # the stream moves up after the first update
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(spread.PromptStream, "advance", interrupted)
    with pytest.raises(KeyboardInterrupt):
        session.compute(FACTS[:2])
    for name, weight in lm.model.named_parameters():
        assert torch.equal(weight, before[name]), name
    assert calls and session.deltas == [] and session.state.sequential.n_edits == 0
