"""The prompt stream carried up a layer window gives the values of a full forward pass."""

from __future__ import annotations

import pytest
import torch

from factedit.delta import AppliedDeltas, WeightDelta
from factedit.methods.keys import compute_keys, residual_at_subject, template_mean
from factedit.methods.stream import PromptStream
from factedit.methods.value import rewrite_prompts
from factedit.spec import EditRequest

pytestmark = pytest.mark.usefixtures("one_thread")

FACTS = [
    EditRequest(subject="Eiffel Tower", prompt="The {} is in", target_new="Rome"),
    EditRequest(subject="Michael Jordan", prompt="{} plays", target_new="chess"),
    EditRequest(subject="the iPhone", prompt="{} is made by", target_new="Nokia"),
]
TEMPLATES = ["{}", "Once upon a time. {}", "A short note: {}"]


def _update(lm, layer: int, seed: int) -> WeightDelta:
    weight = lm.arch.down_proj_weight(layer)
    g = torch.Generator().manual_seed(seed)
    d_out, d_in = weight.shape if not lm.arch.weight_is_in_out(layer) else weight.shape[::-1]
    left, right = torch.randn(d_out, 1, generator=g), torch.randn(d_in, 1, generator=g)
    if lm.arch.weight_is_in_out(layer):
        left, right = right, left
    return WeightDelta(lm.arch.down_proj_weight_name(layer), left, right)


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gemma3_text"])
def test_the_stream_reads_what_a_full_pass_reads_as_the_window_is_updated(tiny, model_type):
    lm = tiny(model_type)
    window = [0, 1, 3]  # not consecutive: advancing from 1 to 3 runs layers 1 and 2
    prompts = [p for r in FACTS for p in rewrite_prompts(lm, r, TEMPLATES)]
    bare = [p for r in FACTS for p in rewrite_prompts(lm, r, ["{}"])]
    keys_stream = PromptStream(lm, prompts, window[0], rows_per_pass=4)  # several chunks
    bare_stream = PromptStream(lm, bare, window[0], rows_per_pass=2)
    with AppliedDeltas(lm.model) as applied:
        for i, layer in enumerate(window):
            if i > 0:
                keys_stream.advance(layer)
                bare_stream.advance(layer)
            keys = template_mean(
                keys_stream.at_subject(lm.arch.down_proj_name(layer), module_input=True), 3
            )
            z = bare_stream.at_subject(lm.arch.layer_name(window[-1]), module_input=False)
            full_keys = compute_keys(lm, FACTS, layer, TEMPLATES, rows_per_pass=4)
            full_z = residual_at_subject(lm, FACTS, window[-1], rows_per_pass=2)
            torch.testing.assert_close(keys, full_keys, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(z, full_z, rtol=1e-5, atol=1e-6)
            applied.add(_update(lm, layer, seed=layer))  # the next reads see this update
        before = compute_keys(lm, FACTS, 3, TEMPLATES)
    # the updates did change what the later layers read
    assert not torch.allclose(before, compute_keys(lm, FACTS, 3, TEMPLATES), atol=1e-4)


def test_the_stream_cannot_move_down(tiny):
    lm = tiny("llama")
    stream = PromptStream(lm, rewrite_prompts(lm, FACTS[0], ["{}"]), 2)
    with pytest.raises(ValueError, match="at layer 2"):
        stream.advance(2)
