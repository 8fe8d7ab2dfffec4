"""Trace / TraceDict: retain, edit, stop early, and never leave a hook behind."""

from __future__ import annotations

import pytest
import torch

from factedit.forward import hidden_at, resume_from_layer
from factedit.hooks import Trace, TraceDict, count_hooks
from factedit.testing import TINY_MODEL_TYPES


def test_trace_retains_and_edits(tiny):
    lm = tiny("llama")
    ids = torch.tensor([[5, 6, 7, 8]])
    name = lm.arch.down_proj_name(1)
    with Trace(lm.model, name, retain_input=True) as tr:
        base = lm.model(ids).logits
    assert tr.input.shape == (1, 4, 128) and tr.output.shape == (1, 4, 64)
    with Trace(lm.model, name, edit_output=lambda out, _n: out * 0):
        edited = lm.model(ids).logits
    assert not torch.allclose(base, edited)
    assert count_hooks(lm.model) == 0


def test_stop_skips_later_layers_and_hooks_removed_on_error(tiny):
    lm = tiny("gpt2")
    calls = []
    last = lm.arch.layers()[-1]
    handle = last.register_forward_hook(lambda *a: calls.append(1))
    try:
        with TraceDict(lm.model, [lm.arch.layer_name(0), lm.arch.layer_name(1)], stop=True) as td:
            lm.model(torch.tensor([[1, 2, 3]]))
        assert calls == [] and td[lm.arch.layer_name(1)].output is not None
    finally:
        handle.remove()
    with pytest.raises(RuntimeError), Trace(lm.model, lm.arch.layer_name(0)):
        raise RuntimeError("boom")
    assert count_hooks(lm.model) == 0


@pytest.mark.parametrize("model_type", TINY_MODEL_TYPES)
def test_resume_from_layer_equals_full_forward(tiny, model_type):
    lm = tiny(model_type)
    ids = torch.tensor([[3, 4, 5, 6, 7], [8, 9, 10, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    full = lm.model(input_ids=ids, attention_mask=mask).logits
    start = hidden_at(lm.arch, 2, ids, mask)
    with resume_from_layer(lm.arch, 2, start):
        hidden = lm.arch.base_model()(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(lm.arch.logits(hidden), full, atol=1e-5)
    # the real layers are back afterwards
    assert all(type(m).__name__ != "_Passthrough" for m in lm.arch.layers())
