"""ROME algebra on tiny random models of every mapped architecture.

ΔW has rank one; W'k* = v* (to float precision); computing never changes the model;
revert restores every weight bit for bit.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
import torch

from factedit.delta import WeightDelta, apply_deltas
from factedit.errors import NumericalError
from factedit.hooks import Trace
from factedit.methods.hparams import RomeHParams
from factedit.methods.rank_one import compute_key, rank_one_delta
from factedit.methods.rome import compute_rome
from factedit.methods.value import HookSite, optimise_value
from factedit.session import EditSession
from factedit.spec import EditRequest
from factedit.testing import TINY_MODEL_TYPES

REQUEST = EditRequest(
    subject="Eiffel Tower",
    prompt="The {} is located in the city of",
    target_new="Rome",
    target_true="Paris",
)
FAST = {"mom2_n_tokens": 2_000, "v_num_grad_steps": 5, "context_templates_per_length": 2}


def _digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def value_of(lm, request, layer, templates, hp, *, prefix=True):
    """(v* [d_out], log) of one request at W's output, as ROME computes it."""
    site = HookSite.down_proj(lm, layer)
    result = optimise_value(lm, request, site, templates, hp, prefix=prefix)
    return result.v_star, result.log


@pytest.fixture
def editor_for(tiny, corpus_path):
    def make(model_type: str, layer: int = 1) -> EditSession:
        lm = tiny(model_type)
        return EditSession(lm, layers=[layer], hparams=FAST, corpus=[corpus_path])

    return make


@pytest.mark.parametrize("model_type", TINY_MODEL_TYPES)
def test_rome_algebra(editor_for, model_type):
    editor = editor_for(model_type)
    lm, layer = editor.lm, editor.layers[0]
    before = _digest(lm.model)
    C = editor.state.second_moment(lm, layer)
    templates = editor.state.templates(lm)
    k = compute_key(lm, REQUEST, layer, templates)
    v, log = value_of(lm, REQUEST, layer, templates, editor.hparams)
    delta, norms = rank_one_delta(lm, layer, C, k, v)
    assert _digest(lm.model) == before, "computing an update must not change the model"

    dense = delta.dense()
    weight = lm.arch.down_proj_weight(layer)
    assert dense.shape == weight.shape
    singular = torch.linalg.svdvals(dense.double())
    assert singular[0] > 0 and singular[1] / singular[0] < 1e-5  # rank one
    assert log["steps"] >= 1 and len(log["losses"]) == log["steps"]

    with apply_deltas(lm.model, [delta]):
        out = lm.arch.down_proj(layer)(k[None])[0]
        assert torch.allclose(out, v, atol=1e-3 * max(1.0, float(v.norm()))), (out - v).norm()
        assert _digest(lm.model) != before
    assert _digest(lm.model) == before, "revert must restore every weight bit for bit"
    assert norms["relative_norm"] == pytest.approx(
        float(dense.norm() / weight.float().norm()), rel=1e-4
    )


def test_conv1d_orientation_detected_by_type(tiny):
    gpt2, llama = tiny("gpt2"), tiny("llama")
    assert gpt2.arch.weight_is_in_out(1) and not llama.arch.weight_is_in_out(1)


def test_update_uses_same_averaged_key_everywhere(editor_for):
    """r-ROME: ΔW k* = v* − W k* exactly for the averaged k*, not for the bare-prompt key."""
    editor = editor_for("llama")
    lm, layer = editor.lm, editor.layers[0]
    C = editor.state.second_moment(lm, layer)
    k = compute_key(lm, REQUEST, layer, editor.state.templates(lm))
    k_bare = compute_key(lm, REQUEST, layer, ["{}"])
    v = torch.randn(lm.arch.down_proj_weight(layer).shape[0])
    delta, _ = rank_one_delta(lm, layer, C, k, v)
    W = lm.arch.down_proj_weight(layer).double()
    residual = v.double() - W @ k.double()
    assert torch.allclose(delta.dense().double() @ k.double(), residual, atol=1e-3)
    assert not torch.allclose(k, k_bare)


def test_a_nan_delta_is_refused_before_anything_is_applied(tiny):
    lm = tiny("qwen2")
    name = lm.arch.down_proj_weight_name(1)
    rows, cols = lm.arch.down_proj_weight(1).shape
    delta = WeightDelta(name, torch.randn(rows, 1), torch.randn(cols, 1), {"layer": 1})
    before = lm.arch.down_proj_weight(1).detach().clone()
    bad = WeightDelta(name, torch.full((rows, 1), float("nan")), torch.ones(cols, 1))
    with pytest.raises(NumericalError, match="NaN"):
        apply_deltas(lm.model, [delta, bad])
    assert torch.equal(lm.arch.down_proj_weight(1), before), "nothing applied when one is bad"


def test_sequential_revert_restores_original(tiny):
    lm = tiny("gemma3_text")
    name = lm.arch.down_proj_weight_name(2)
    rows, cols = lm.arch.down_proj_weight(2).shape
    original = lm.arch.down_proj_weight(2).detach().clone()
    applied = apply_deltas(
        lm.model, [WeightDelta(name, torch.randn(rows, 1), torch.randn(cols, 1))]
    )
    apply_deltas(lm.model, [WeightDelta(name, torch.randn(rows, 1), torch.randn(cols, 1))], applied)
    applied.revert()
    assert torch.equal(lm.arch.down_proj_weight(2), original)


def test_hparams_overrides_apply_the_given_keys():
    hp = RomeHParams.from_overrides({"v_lr": 0.1, "kl_factor": 0})
    assert hp.v_lr == 0.1 and hp.kl_factor == 0 and hp.v_num_grad_steps == 20


SUBJECT_FIRST = EditRequest(subject="Paris", prompt="{} is the capital of", target_new="Italy")


@pytest.mark.parametrize("model_type", TINY_MODEL_TYPES)
@pytest.mark.parametrize("layer", [0, 2])
def test_fast_value_matches_full_forward(editor_for, model_type, layer):
    """Cached prefixes, skipped lower layers and sparse logits give the plain loop's v*."""
    editor = editor_for(model_type, layer=layer)
    templates = editor.state.templates(editor.lm)
    assert len(set(templates)) > 2, "rows need prefixes of different lengths"
    for request in (REQUEST, SUBJECT_FIRST):
        fast, log_fast = value_of(editor.lm, request, layer, templates, editor.hparams)
        slow, log_slow = value_of(
            editor.lm, request, layer, templates, editor.hparams, prefix=False
        )
        assert torch.allclose(fast, slow, atol=1e-4, rtol=1e-4)
        totals = [step["total"] for step in log_fast["losses"]]
        assert totals == pytest.approx([step["total"] for step in log_slow["losses"]], rel=1e-4)


def test_fast_value_without_any_prefix(editor_for):
    """A one-token subject first in a BOS-less prompt leaves nothing to cache."""
    editor = editor_for("gpt2", layer=1)
    hp = editor.hparams
    fast, _ = value_of(editor.lm, SUBJECT_FIRST, 1, ["{}"], hp)
    slow, _ = value_of(editor.lm, SUBJECT_FIRST, 1, ["{}"], hp, prefix=False)
    assert torch.allclose(fast, slow, atol=1e-4, rtol=1e-4)


def test_same_seed_gives_bit_identical_update(tiny, corpus_path):
    """Determinism on CPU: two editors with the same spec and seed produce the same bytes."""
    digests = []
    for _ in range(2):
        lm = tiny("llama")
        editor = EditSession(lm, layers=[1], hparams=FAST, corpus=[corpus_path], seed=3)
        (delta,) = editor.compute([REQUEST])
        with apply_deltas(lm.model, [delta]):
            digests.append(_digest(lm.model))
    assert digests[0] == digests[1]


@pytest.mark.parametrize(("model_type", "normed"), [("gemma3_text", True), ("llama", False)])
def test_mlp_output_norm_makes_the_value_scale_free(tiny, model_type, normed):
    """The premise of norm_matched_value: behind a post-MLP norm, c·v and v give the same
    logits; without one they do not."""
    lm = tiny(model_type)
    assert lm.arch.mlp_output_is_normed() is normed
    # a random init gives MLP outputs near the norm's epsilon; trained models are far above it
    lm.arch.down_proj(1).weight.data.mul_(100)
    ids = torch.tensor([[5, 17, 42, 8, 99]])

    def logits(scale: float) -> torch.Tensor:
        with Trace(
            lm.model,
            lm.arch.down_proj_name(1),
            retain_output=False,
            edit_output=lambda out, _name: out * scale,
        ):
            return lm.model(input_ids=ids).logits

    same = torch.allclose(logits(1.0), logits(3.0), atol=1e-4, rtol=1e-4)
    assert same is normed


def test_normed_value_is_rescaled_to_the_current_output(editor_for):
    """Gemma-style models: v* takes ‖W k*‖, keeps its direction, and ‖ΔW‖ shrinks."""
    editor = editor_for("gemma3_text")
    lm, layer, state = editor.lm, editor.layers[0], editor.state
    state.hparams = replace(editor.hparams, clamp_norm_factor=8.0)
    rescaled = compute_rome(lm, REQUEST, layer, state)
    state.hparams = replace(state.hparams, value_scale="none")
    kept = compute_rome(lm, REQUEST, layer, state)
    factor = rescaled.delta.meta["v_rescaled_by"]
    assert kept.delta.meta["v_rescaled_by"] == 1.0
    assert (rescaled.delta.meta["value_scale"], kept.delta.meta["value_scale"]) == ("norm", "none")
    assert torch.allclose(rescaled.v_star * factor, kept.v_star, rtol=1e-5, atol=1e-5)
    current = lm.arch.down_proj(layer)(rescaled.k_star[None])[0]
    assert float(rescaled.v_star.norm()) == pytest.approx(float(current.norm()), rel=1e-5)
    assert rescaled.delta.meta["delta_norm"] < kept.delta.meta["delta_norm"]


def test_unnormed_value_is_left_alone(editor_for):
    editor = editor_for("llama")
    result = compute_rome(editor.lm, REQUEST, editor.layers[0], editor.state)
    assert result.delta.meta["v_rescaled_by"] == 1.0
    assert result.delta.meta["value_scale"] == "none"  # nothing normalises llama's MLP output
