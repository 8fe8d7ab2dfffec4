"""Causal tracing engine: equal to the plain reference, and the properties a trace must have."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from factedit.errors import SubjectNotFoundError
from factedit.hooks import Trace, count_hooks
from factedit.tokens import locate_subject
from factedit.trace import engine, reference, trace_fact
from factedit.trace.fact import build_problem, grid_sites
from factedit.trace.patching import Site, site_modules, window_layers

pytestmark = pytest.mark.usefixtures("one_thread")


PROMPT = "Rome is the capital of"
SUBJECT = "Rome"
LONG_PROMPT = "The Eiffel Tower is located in the city of"


@pytest.fixture
def peaked(tiny):
    """A tiny random model whose next-token distribution is peaked (so effects are large)."""

    def make(model_type: str = "llama"):
        lm = tiny(model_type)
        with torch.no_grad():
            lm.arch.lm_head().weight.mul_(30)
        return lm

    return make


def _problem(lm, prompt=PROMPT, subject=SUBJECT, samples=2, noise="3x", window=2, seed=0):
    located = locate_subject(lm.tokenizer, prompt, subject)
    problem, _ = build_problem(
        lm, located, target=None, samples=samples, noise=noise, window=window, seed=seed
    )
    return problem


def _layers_snapshot(lm):
    return [id(m) for m in lm.arch.layers()]


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "gemma3_text", "gpt_neox"])
def test_engine_equals_reference(peaked, model_type):
    lm = peaked(model_type)
    fast = trace_fact(lm, PROMPT, SUBJECT, samples=2, window=2)
    slow = trace_fact(lm, PROMPT, SUBJECT, samples=2, window=2, engine_name="reference")
    assert fast.p_clean == pytest.approx(slow.p_clean, abs=1e-6)
    assert fast.p_corrupt == pytest.approx(slow.p_corrupt, abs=1e-5)
    for kind in ("hidden", "mlp", "attn"):
        scale = np.abs(slow.indirect_effect(kind)).max()
        assert np.abs(fast.grids[kind] - slow.grids[kind]).max() <= 1e-5, kind
        assert scale > 1e-3, f"{kind}: effects too small for the comparison to mean anything"
    assert count_hooks(lm.model) == 0


def test_engine_equals_reference_long_prompt_all_windows(peaked):
    """Subject in the middle (a prefix to reuse), window wider than the model, 3 samples."""
    lm = peaked("qwen2")
    problem = _problem(lm, LONG_PROMPT, "Eiffel Tower", samples=3, window=10)
    n = problem.num_tokens
    sites = [s for kind in ("hidden", "mlp", "attn") for s in grid_sites(kind, n, 4)[::3]]
    p_corrupt, fast = engine.run_sites(lm, problem, sites)
    slow = reference.reference_sites(lm, problem, sites)
    torch.testing.assert_close(
        p_corrupt, reference.reference_corrupt(lm, problem), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)


def test_chunking_does_not_change_numbers(peaked):
    lm = peaked("gemma3_text")
    problem = _problem(lm, samples=3)
    sites = [s for kind in ("hidden", "mlp") for s in grid_sites(kind, problem.num_tokens, 4)]
    _, whole = engine.run_sites(lm, problem, sites)
    _, tiny_chunks = engine.run_sites(lm, problem, sites, max_rows=5)
    torch.testing.assert_close(whole, tiny_chunks, atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_restoring_every_token_of_a_layer_gives_p_clean(peaked, model_type):
    lm = peaked(model_type)
    problem = _problem(lm, samples=3)
    every = tuple(range(problem.num_tokens))
    sites = [Site("hidden", every, layer) for layer in range(lm.arch.num_layers)]
    p_corrupt, probs = engine.run_sites(lm, problem, sites)
    assert abs(p_corrupt.mean().item() - problem.p_clean) > 1e-3  # the noise does something
    torch.testing.assert_close(probs, torch.full_like(probs, problem.p_clean), atol=1e-5, rtol=0)
    ref = reference.run_one(lm, problem, 1, sites[0])
    assert ref == pytest.approx(problem.p_clean, abs=1e-5)


def test_zero_noise_gives_zero_effects(peaked):
    lm = peaked("gemma3_text")
    result = trace_fact(lm, PROMPT, SUBJECT, samples=2, window=2, noise="0")
    assert result.p_corrupt == pytest.approx(result.p_clean, abs=1e-6)
    for kind in result.grids:
        np.testing.assert_allclose(result.indirect_effect(kind), 0.0, atol=1e-5)


def test_last_layer_hidden_at_last_token_gives_p_clean(peaked):
    lm = peaked("llama")
    result = trace_fact(lm, PROMPT, SUBJECT, samples=2, window=2, kinds=("hidden",))
    assert result.grids["hidden"][-1, -1] == pytest.approx(result.p_clean, abs=1e-5)
    assert result.p_clean - result.p_corrupt > 1e-3


def test_same_seed_same_grid_and_other_seed_differs(peaked):
    lm = peaked("llama")
    a = trace_fact(lm, PROMPT, SUBJECT, samples=2, window=2, seed=3)
    b = trace_fact(lm, PROMPT, SUBJECT, samples=2, window=2, seed=3)
    c = trace_fact(lm, PROMPT, SUBJECT, samples=2, window=2, seed=4)
    for kind in a.grids:
        assert np.array_equal(a.grids[kind], b.grids[kind])
    assert not np.allclose(a.grids["hidden"], c.grids["hidden"])


def test_subject_span_is_the_subject_tokens(tiny, sp_tokenizer):
    from factedit.testing import tiny_model

    for lm in (tiny("llama"), tiny_model("llama", sp_tokenizer)):
        result = trace_fact(lm, LONG_PROMPT, "Eiffel Tower", samples=1, kinds=("mlp",), window=2)
        a, b = result.subject_span
        assert "".join(result.tokens[a:b]).replace(" ", "") == "EiffelTower"
        assert "Eif" not in "".join(result.tokens[:a] + result.tokens[b:])


def test_absent_subject_fails_before_any_forward_pass(tiny):
    lm = tiny("llama")
    with Trace(lm.model, lm.arch.paths.embed) as t, pytest.raises(SubjectNotFoundError):
        trace_fact(lm, PROMPT, "Paris")
    assert t.output is None
    assert count_hooks(lm.model) == 0


def test_no_hooks_or_stand_ins_left_after_an_error(tiny, monkeypatch):
    lm = tiny("gemma3_text")
    layers = _layers_snapshot(lm)

    def broken(masks, clean):
        def edit(out, name):
            raise RuntimeError("boom")

        return edit

    monkeypatch.setattr(engine, "restore_editor", broken)
    with pytest.raises(RuntimeError, match="boom"):
        trace_fact(lm, PROMPT, SUBJECT, samples=2, window=2)
    assert count_hooks(lm.model) == 0
    assert _layers_snapshot(lm) == layers


def test_no_hooks_or_stand_ins_left_after_a_trace(tiny):
    lm = tiny("gpt2")
    layers = _layers_snapshot(lm)
    trace_fact(lm, PROMPT, SUBJECT, samples=2, window=2)
    assert count_hooks(lm.model) == 0
    assert _layers_snapshot(lm) == layers


def test_target_traces_its_first_token(peaked):
    lm = peaked("llama")
    result = trace_fact(lm, PROMPT, SUBJECT, "Italy and France", samples=1, kinds=("mlp",))
    first = lm.tokenizer(" Italy and France", add_special_tokens=False)["input_ids"][0]
    assert result.answer_id == first
    assert result.target == "Italy and France"


def test_window_layers_are_clipped_and_centred():
    assert list(window_layers(6, 10, 18)) == list(range(1, 11))
    assert list(window_layers(0, 10, 18)) == list(range(0, 5))
    assert list(window_layers(17, 10, 18)) == list(range(12, 18))
    assert list(window_layers(3, 1, 18)) == [3]


def test_site_modules_name_the_right_modules(tiny):
    lm = tiny("llama")
    arch = lm.arch
    assert site_modules(arch, Site("hidden", (1,), 2), 10) == [(2, arch.layer_name(2))]
    assert site_modules(arch, Site("mlp", (1,), 2), 2) == [
        (1, arch.mlp_name(1)),
        (2, arch.mlp_name(2)),
    ]
    assert [j for j, _ in site_modules(arch, Site("attn", (1,), 0), 10)] == [0, 1, 2, 3]
    assert engine.site_start(arch, Site("hidden", (1,), 2), 10) == 3
    assert engine.site_start(arch, Site("mlp", (1,), 2), 2) == 1
