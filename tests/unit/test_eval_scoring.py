"""Batched scoring and generation agree with per-prompt reference computations."""

from __future__ import annotations

import itertools

import pytest
import torch

from factedit.batching import pad_left
from factedit.evaluate.generation import generate_ids, generate_text
from factedit.evaluate.scoring import (
    plan_buckets,
    score_continuations,
    score_unbatched,
)
from factedit.testing import TINY_MODEL_TYPES, tiny_model
from factedit.tokens import prompt_token_ids, target_token_ids

PROMPTS = [
    "The Eiffel Tower is located in the city of",
    "Rome",
    "Michael Jordan plays the sport of professional",
    "Which artist created Call the Doctor? It was",
]
TARGETS = ["Paris", "basketball court", "the city of London in England"]
ARCHS = ["gpt2", "llama", "gemma3_text"]


def _sharpen(lm) -> None:
    """Scale weight matrices so a random model's predictions depend strongly on context."""
    with torch.no_grad():
        for p in lm.model.parameters():
            if p.dim() > 1:
                p.mul_(6.0)


def _items(tok):
    return [(prompt_token_ids(tok, p), target_token_ids(tok, t)) for p in PROMPTS for t in TARGETS]


@torch.no_grad()
def _oracle(lm, prompt: list[int], target: list[int]) -> list[float]:
    """Per-token log-probs from one unpadded forward pass over prompt + target, full logits."""
    logits = lm.model(torch.tensor([prompt + target])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return [logprobs[len(prompt) - 1 + j, t].item() for j, t in enumerate(target)]


#: every architecture with byte-level BPE; the BOS-adding SentencePiece tokenizer on two
CASES = [(arch, "bpe") for arch in TINY_MODEL_TYPES] + [("llama", "sp"), ("gemma3_text", "sp")]


def _tokenizer(name, request):
    return request.getfixturevalue("bpe_tokenizer" if name == "bpe" else "sp_tokenizer")


@pytest.mark.parametrize(("arch", "tok_name"), CASES)
def test_batched_scores_match_unbatched_and_full_logits(arch, tok_name, request):
    tokenizer = _tokenizer(tok_name, request)
    lm = tiny_model(arch, tokenizer)
    _sharpen(lm)
    items = _items(tokenizer)
    batched = score_continuations(lm, items)
    chunked = score_continuations(lm, items, batch_size=1)
    single = score_unbatched(lm, items)
    for (prompt, target), b, c, s in zip(items, batched, chunked, single, strict=True):
        oracle = _oracle(lm, prompt, target)
        assert b.n_tokens == len(target)
        assert b.logprobs == pytest.approx(oracle, abs=1e-4)
        assert c.logprobs == pytest.approx(oracle, abs=1e-4)
        assert s.logprobs == pytest.approx(oracle, abs=1e-4)
    # the comparison can fail: the same target scores differently after different prompts
    first = [s.logprobs[0] for s in batched[:: len(TARGETS)]]
    assert max(first) - min(first) > 0.05


def test_bos_is_kept_and_targets_have_no_bos(sp_tokenizer):
    prompt = prompt_token_ids(sp_tokenizer, PROMPTS[0])
    target = target_token_ids(sp_tokenizer, "Paris")
    assert prompt[0] == sp_tokenizer.bos_token_id
    assert sp_tokenizer.bos_token_id not in target


def test_left_pad_aligns_prompt_ends():
    ids, mask, pos = pad_left([[1, 2, 3], [4]], 0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert pos.tolist() == [[0, 1, 2], [0, 0, 0]]


def test_plan_buckets_minimises_padding_plus_overhead():
    lengths = [4, 4, 5, 6, 6, 7, 18, 28]
    runs = plan_buckets(lengths, overhead=8)
    assert runs[0][0] == 0 and runs[-1][1] == len(lengths)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(runs))

    def cost(rs):
        return sum((b - a) * lengths[b - 1] + 8 for a, b in rs)

    assert cost(runs) < cost([(0, len(lengths))])  # one padded batch wastes 3/4 of it
    assert plan_buckets([5, 5, 5], overhead=1000) == [(0, 3)]
    assert plan_buckets([5, 5, 5], overhead=0, max_rows=2) in ([(0, 1), (1, 3)], [(0, 2), (2, 3)])


def test_token_scores_summaries(tiny, bpe_tokenizer):
    lm = tiny("llama")
    (s,) = score_continuations(lm, _items(bpe_tokenizer)[2:3])
    assert s.nll == pytest.approx(-sum(s.logprobs) / s.n_tokens)
    assert s.prob == pytest.approx(torch.tensor(-s.nll).exp().item())
    assert s.logprob == pytest.approx(sum(s.logprobs))
    assert 0.0 <= s.accuracy <= 1.0


def test_empty_target_rejected(tiny):
    with pytest.raises(ValueError):
        score_continuations(tiny("gpt2"), [([1, 2], [])])


@torch.no_grad()
def _greedy_oracle(lm, prompt: list[int], steps: int) -> list[int]:
    ids = list(prompt)
    for _ in range(steps):
        ids.append(int(lm.model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt) :]


@pytest.mark.parametrize(("arch", "tok_name"), [(a, "bpe") for a in ARCHS] + [("llama", "sp")])
def test_greedy_generation_batched_matches_recompute(arch, tok_name, request):
    tokenizer = _tokenizer(tok_name, request)
    lm = tiny_model(arch, tokenizer)
    _sharpen(lm)
    prompts = [prompt_token_ids(tokenizer, p) for p in PROMPTS]
    batched = generate_ids(lm, prompts, max_new_tokens=8, stop_at_eos=False)
    for prompt, got in zip(prompts, batched, strict=True):
        assert got == _greedy_oracle(lm, prompt, 8)


def test_sampling_is_seeded_and_leaves_global_rng_alone(tiny, bpe_tokenizer):
    lm = tiny("llama")
    _sharpen(lm)
    prompts = [prompt_token_ids(bpe_tokenizer, p) for p in PROMPTS]
    state = torch.random.get_rng_state()
    a = generate_ids(lm, prompts, max_new_tokens=10, greedy=False, seed=1, stop_at_eos=False)
    b = generate_ids(lm, prompts, max_new_tokens=10, greedy=False, seed=1, stop_at_eos=False)
    c = generate_ids(lm, prompts, max_new_tokens=10, greedy=False, seed=2, stop_at_eos=False)
    assert torch.equal(state, torch.random.get_rng_state())
    assert a == b
    assert a != c
    assert all(len(row) == 10 for row in a)


def test_generate_text_returns_continuations(tiny, bpe_tokenizer):
    lm = tiny("gpt2")
    texts = generate_text(lm, PROMPTS[:2], max_new_tokens=5)
    assert len(texts) == 2
    assert all(isinstance(t, str) and not t.startswith(PROMPTS[0]) for t in texts)
