"""ROME as the paper computes it: the KL direction, the stop on the total loss, the hparams
schema, and the batched value optimisation equal to one fact at a time."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from factedit.methods.hparams import HParamError, RomeHParams
from factedit.methods.log_probs import TargetLogProb, kl_new_orig
from factedit.methods.templates import context_templates
from factedit.methods.value import (
    HookSite,
    ValueBatch,
    _adam_loop,
    optimise_values,
)
from factedit.spec import EditRequest
from factedit.testing import TINY_MODEL_TYPES


def test_kl_is_edited_distribution_first():
    """p_new = (0.9, 0.1), p_orig = (0.5, 0.5): KL(new‖orig) = 0.9 ln 1.8 + 0.1 ln 0.2."""
    new = torch.tensor([0.9, 0.1]).log()
    orig = torch.tensor([0.5, 0.5]).log()
    expected = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert float(kl_new_orig(new, orig)) == pytest.approx(expected, rel=1e-6)  # 0.3681
    reversed_kl = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)  # 0.5108
    assert float(kl_new_orig(new, orig)) != pytest.approx(reversed_kl, rel=1e-2)
    # the reference's call, torch's kl_div(input=log p_orig, target=log p_new)
    reference = torch.nn.functional.kl_div(orig, new, log_target=True, reduction="sum")
    assert float(kl_new_orig(new, orig)) == pytest.approx(float(reference), rel=1e-6)


def test_target_log_prob_matches_log_softmax_and_gather_in_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    logits = (5 * torch.randn(4, 50, generator=g, dtype=torch.float64)).requires_grad_()
    targets = torch.tensor([3, 0, 49, 3])
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    ours = TargetLogProb.apply(logits, targets)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), logits)
    plain = torch.log_softmax(logits, -1).gather(1, targets[:, None]).squeeze(1)
    (grad_plain,) = torch.autograd.grad((plain * weights).sum(), logits)
    assert torch.allclose(ours, plain, atol=1e-12)
    assert torch.allclose(grad_ours, grad_plain, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x: TargetLogProb.apply(x, targets), (logits,))


class _Quadratic:
    """A stand-in value problem: NLL (δ − 1)² per coordinate, plus a fixed 0.1 (a KL that
    never vanishes). The NLL alone drops below 0.05 within a few steps; the total never."""

    def __init__(self, n_facts: int = 1) -> None:
        self.delta = torch.zeros(n_facts, 2, requires_grad=True)
        self.v_orig = torch.ones(n_facts, 2)

    def terms(self, active: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        nll = ((self.delta - 1.0) ** 2).sum(dim=-1)
        kl = torch.full_like(nll, 0.1)
        return {"nll": nll, "kl": kl, "decay": torch.zeros_like(nll), "total": nll + kl}


def test_early_stop_is_on_the_total_loss_not_the_nll():
    hp = RomeHParams(v_num_grad_steps=20, v_lr=0.3, loss_stop=0.05)
    history = _adam_loop(hp, _Quadratic())[0]
    assert any(step["nll"] < 0.05 for step in history[:-1]), "the NLL alone would have stopped"
    assert len(history) == 20, "the total (NLL + 0.1) never falls below 0.05: no early stop"
    stopping = _adam_loop(RomeHParams(v_num_grad_steps=20, v_lr=0.3, loss_stop=0.2), _Quadratic())
    steps = stopping[0]
    assert steps[-1]["total"] < 0.2 <= min(s["total"] for s in steps[:-1])


def test_unknown_hparam_key_is_an_error_naming_it():
    with pytest.raises(HParamError, match=r'unknown hyper-parameter "v_lrr".*did you mean "v_lr"'):
        RomeHParams.from_overrides({"v_lrr": 0.1})
    with pytest.raises(HParamError, match='"nll_stop"'):
        RomeHParams.from_overrides(
            {"nll_stop": 0.05}
        )  # renamed loss_stop: the stop is on the total
    with pytest.raises(HParamError, match='"kl_factor": must not be negative'):
        RomeHParams.from_overrides({"kl_factor": -1})
    with pytest.raises(HParamError, match='"value_scale": must be "norm" or "none"'):
        RomeHParams.from_overrides({"value_scale": "rescale"})
    assert RomeHParams.from_overrides(
        {"context_template_lengths": [3]}
    ).context_template_lengths == (3,)


FACTS = [
    EditRequest(subject="Eiffel Tower", prompt="The {} is located in", target_new="Rome"),
    EditRequest(subject="Paris", prompt="{} is the capital of", target_new="Northern Italy"),
    EditRequest(subject="Michael Jordan", prompt="{} plays", target_new="ice hockey today"),
]


@pytest.mark.parametrize("model_type", TINY_MODEL_TYPES)
@pytest.mark.parametrize("site", ["down_proj", "residual"])
def test_batched_values_equal_one_at_a_time(tiny, model_type, site):
    """Three facts (different target lengths and subject positions) in one batch: each δ
    reaches only its own rows, so each v* and its loss history equal the fact optimised alone."""
    lm = tiny(model_type)
    layer = 1
    hook = getattr(HookSite, site)(lm, layer)
    templates = context_templates(lm, (3, 5), 2, seed=0)
    # a stop threshold that one fact reaches within 6 steps and another never does, so the
    # batch holds a finished, frozen fact while another still moves (no weight decay: on
    # these random models its term dominates and grows with δ)
    free_hp = RomeHParams(v_num_grad_steps=8, v_weight_decay=0.0, loss_stop=0.0)
    free = optimise_values(lm, ValueBatch.build(lm, FACTS, templates), hook, free_hp)
    lowest = sorted(min(s["total"] for s in r.log["losses"][:6]) for r in free)
    hp = dataclasses.replace(free_hp, loss_stop=(lowest[0] + lowest[-1]) / 2)
    batched = optimise_values(lm, ValueBatch.build(lm, FACTS, templates), hook, hp)
    steps = [r.log["steps"] for r in batched]
    assert min(steps) <= 6 and max(steps) == 8, steps
    for fact, together in zip(FACTS, batched, strict=True):
        (alone,) = optimise_values(lm, ValueBatch.build(lm, [fact], templates), hook, hp)
        assert together.log["steps"] == alone.log["steps"]
        assert torch.allclose(together.v_orig, alone.v_orig, atol=1e-5, rtol=1e-5)
        assert torch.allclose(together.v_star, alone.v_star, atol=1e-4, rtol=1e-4)
        totals = [s["total"] for s in together.log["losses"]]
        assert totals == pytest.approx(
            [s["total"] for s in alone.log["losses"]], rel=1e-4, abs=1e-5
        )
    moved = [float((r.v_star - r.v_orig).norm()) for r in batched]
    assert max(moved) > 0
