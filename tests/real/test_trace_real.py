"""Causal tracing on the real gemma-3-270m: the engine equals the reference on a real prompt."""

from __future__ import annotations

import pytest
import torch

from factedit.hooks import count_hooks
from factedit.tokens import locate_subject
from factedit.trace import engine, reference
from factedit.trace.fact import build_problem
from factedit.trace.patching import Site

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("one_thread")]

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "The Eiffel Tower"


@pytest.fixture(scope="module")
def eiffel(gemma):
    located = locate_subject(gemma.tokenizer, PROMPT, SUBJECT)
    with torch.inference_mode():
        problem, _ = build_problem(
            gemma, located, target=None, samples=3, noise="3x", window=10, seed=0
        )
    return problem


def test_gemma_knows_the_eiffel_tower(gemma, eiffel):
    assert gemma.tokenizer.decode([eiffel.answer_id]).strip() == "Paris"
    assert eiffel.p_clean > 0.5
    assert eiffel.prompt.subject_span == (1, 4)  # <bos> The Eiffel Tower


def test_engine_equals_reference_on_a_real_prompt(gemma, eiffel):
    last_subject, last = eiffel.prompt.subject_span[1] - 1, eiffel.num_tokens - 1
    sites = [
        *(Site("hidden", (t,), layer) for t in (2, last_subject, last) for layer in (0, 6, 12)),
        *(Site("mlp", (last_subject,), layer) for layer in (2, 9)),
        *(Site("attn", (last,), layer) for layer in (8, 14)),
    ]
    p_corrupt, fast = engine.run_sites(gemma, eiffel, sites)
    slow = reference.reference_sites(gemma, eiffel, sites)
    torch.testing.assert_close(
        p_corrupt, reference.reference_corrupt(gemma, eiffel), atol=2e-5, rtol=0
    )
    torch.testing.assert_close(fast, slow, atol=2e-5, rtol=0)
    assert p_corrupt.mean() < 0.1 * eiffel.p_clean  # the noise hides the subject
    assert count_hooks(gemma.model) == 0


def test_restoring_a_whole_layer_gives_back_p_clean(gemma, eiffel):
    every = tuple(range(eiffel.num_tokens))
    _, probs = engine.run_sites(gemma, eiffel, [Site("hidden", every, 6)])
    torch.testing.assert_close(probs, torch.full_like(probs, eiffel.p_clean), atol=2e-5, rtol=0)
