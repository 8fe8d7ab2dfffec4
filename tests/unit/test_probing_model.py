"""Probing a tiny random model: a label planted in layer k's residual is decoded from k on
and not below, the control task is at chance, the logit lens at the last layer is the model's
own next-token distribution, activations are read in one pass and cached."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from factedit.hooks import Trace, count_hooks
from factedit.probing.activations import read_activations, site_names, span_tokens
from factedit.probing.data import ProbeExample
from factedit.probing.lens import label_token_ids, lens_logits, logit_lens
from factedit.probing.report import decodable_from
from factedit.probing.train import grouped_splits, probe_layers
from probing_helpers import examples

pytestmark = pytest.mark.usefixtures("one_thread", "home")


class ForwardCounter:
    """Counts forward passes of the whole model (a pre-hook on its root module)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls = 0
        self.handle = model.register_forward_pre_hook(self._count)

    def _count(self, *_args) -> None:
        self.calls += 1

    def close(self) -> None:
        self.handle.remove()


def test_label_planted_in_one_layer_is_decoded_from_that_layer_on(tiny):
    lm = tiny("llama", layers=5)
    k = 2
    task = examples(120, labels=2)
    signs = torch.tensor([1.0 if e.label == "l0" else -1.0 for e in task])
    direction = torch.randn(lm.model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    direction = direction / direction.norm()

    def plant(output: torch.Tensor, _name: str) -> torch.Tensor:
        # one batch holds every example, in order: row i gets its label's sign
        return output + 2.0 * signs[:, None, None] * direction

    with Trace(lm.model, lm.arch.layer_name(k), edit_output=plant, retain_output=False):
        acts = read_activations(lm, task, "residual", "last", batch_size=len(task), cache=False)
    assert count_hooks(lm.model) == 0
    labels, groups = [e.label for e in task], [e.group for e in task]
    scores = probe_layers(acts.values.numpy(), labels, groups, grouped_splits(groups, 3))
    acc = scores.accuracy.mean(axis=0)
    assert acc[k - 1] < 0.7 and acc[:k].max() < 0.7, acc  # nothing below k (chance 0.5)
    assert acc[k:].min() > 0.95, acc  # the residual stream carries it on
    assert decodable_from(list(scores.selectivity)) == k


def test_control_task_is_near_chance_on_a_tiny_random_model(tiny):
    lm = tiny("gpt2")
    task = examples(160, labels=4)
    acts = read_activations(lm, task, "residual", "mean")
    labels, groups = [e.label for e in task], [e.group for e in task]
    scores = probe_layers(acts.values.numpy(), labels, groups, grouped_splits(groups, 5))
    assert scores.control.mean() == pytest.approx(0.25, abs=0.08)  # 4 balanced labels
    assert np.abs(scores.control.mean(axis=0) - 0.25).max() < 0.15


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gemma3_text"])
def test_logit_lens_at_the_last_layer_is_the_models_next_token_distribution(tiny, model_type):
    lm = tiny(model_type)
    with torch.no_grad():
        lm.arch.lm_head().weight.mul_(20)  # a peaked distribution, so differences show
    task = examples(6)
    task.append(ProbeExample("the big dog ran home", 4, 11, "home"))  # span in the middle
    acts = read_activations(lm, task, "residual", "last", batch_size=4)
    lens = torch.softmax(lens_logits(lm, acts.values[:, -1]), dim=-1)
    for i, example in enumerate(task):
        ids, _, end = span_tokens(lm.tokenizer, example, i)
        with torch.no_grad():
            logits = lm.model(input_ids=torch.tensor([ids])).logits[0, end - 1]
        own = torch.softmax(logits.float(), dim=-1)
        assert torch.allclose(lens[i], own, atol=1e-5), (i, (lens[i] - own).abs().max())
    top = lens.argmax(dim=-1).tolist()
    ranks, probs = logit_lens(lm, acts.values, top)
    assert ranks.shape == probs.shape == (len(task), lm.arch.num_layers)
    assert (ranks[:, -1] == 1).all()
    assert probs[:, -1] == pytest.approx(lens.max(dim=-1).values.numpy(), abs=1e-5)
    assert len(label_token_ids(lm.tokenizer, ["Paris", "home"])) == 2


def test_one_forward_pass_per_batch_and_a_second_read_hits_the_cache(tiny):
    lm = tiny("llama")
    task = examples(20)
    counter = ForwardCounter(lm.model)
    try:
        first = read_activations(lm, task, "mlp", "last", batch_size=8)
        assert counter.calls == 3 and not first.cached  # 20 rows in batches of 8
        again = read_activations(lm, task, "mlp", "last", batch_size=8)
        assert counter.calls == 3 and again.cached
        assert torch.equal(first.values, again.values)
        relabelled = [ProbeExample(e.text, e.start, e.end, "other") for e in task]
        assert read_activations(lm, relabelled, "mlp", "last").cached  # labels are not keyed
        assert counter.calls == 3
        other = read_activations(lm, task, "mlp", "mean", batch_size=8)
        assert counter.calls == 6 and not other.cached and other.key != first.key
    finally:
        counter.close()
    assert first.values.shape == (20, lm.arch.num_layers, lm.model.config.hidden_size)


@pytest.mark.parametrize("site", ["residual", "mlp", "attn"])
def test_batched_read_equals_one_text_at_a_time(tiny, site):
    lm = tiny("qwen2")
    task = examples(7)
    batched = read_activations(lm, task, site, "mean", batch_size=7, cache=False).values
    single = read_activations(lm, task, site, "mean", batch_size=1, cache=False).values
    assert torch.allclose(batched, single, atol=1e-5)
    names = site_names(lm.arch, site)
    with torch.no_grad(), Trace(lm.model, names[1]) as t:
        ids, a, b = span_tokens(lm.tokenizer, task[0], 0)
        lm.model(input_ids=torch.tensor([ids]))
    assert torch.allclose(single[0, 1], t.output[0, a:b].mean(dim=0), atol=1e-5)


def test_an_edit_changes_the_cache_key(tiny):
    from factedit.delta import apply_deltas
    from factedit.testing import small_delta

    lm = tiny("llama")
    task = examples(4)
    before = read_activations(lm, task)
    handle = apply_deltas(lm.model, [small_delta(lm, scale=1.0)])
    try:
        after = read_activations(lm, task)
    finally:
        handle.revert()
    assert after.key != before.key and not after.cached
    assert not torch.allclose(before.values[:, -1], after.values[:, -1])
