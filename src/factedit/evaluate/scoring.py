"""Batched teacher-forced scoring of target strings after prompts.

``score_continuations(lm, items)`` returns, for every ``(prompt_ids, target_ids)`` pair, the
log-probability of each target token given the prompt and the target tokens before it, and
whether that token was the model's top-1 prediction (teacher forcing). Ids are never
re-tokenised: the prompt's ids (BOS included) are followed by the target's ids.

How the work is batched (each prompt is run once, however many targets it has):

1. The distinct prompts are sorted by length and cut into buckets that minimise padded
   tokens plus a per-pass overhead (:func:`plan_buckets`): CounterFact mixes 5-token
   neighborhood prompts with 30-token paraphrases, and one padded batch would be mostly pad.
2. A bucket's prompts run in one pass, *left*-padded so every prompt ends in the last column
   (attention mask hides the pads; position ids are ``cumsum(mask) - 1``, so each row sees
   exactly what it would unbatched). Only that column goes through the LM head
   (``logits_to_keep=1``; with a 262k vocabulary the head is most of the cost): it scores
   the first token of every target of every prompt.
3. Targets longer than one token continue from the prompts' KV cache (rows re-indexed, one
   per prompt x target): ``target[:-1]`` is fed right-padded and its logits score
   ``target[1:]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from factedit.batching import pad_left, pad_right, pad_token_id
from factedit.kvcache import cache_argument, output_cache
from factedit.models.loading import LoadedModel

Item = tuple[Sequence[int], Sequence[int]]

#: Upper bound on the float32 logits of one continuation pass (bytes); more rows are split.
LOGITS_BUDGET_BYTES = 256 * 2**20
#: What one extra forward pass costs, in padded prompt tokens (per device type).
PASS_OVERHEAD_TOKENS = {"cpu": 8}
PASS_OVERHEAD_TOKENS_DEFAULT = 1024


@dataclass(frozen=True)
class TokenScores:
    """Teacher-forced scores of one target after one prompt.

    ``logprobs[j]``: natural-log probability of target token ``j``; ``correct[j]``: whether it
    was the arg-max prediction. Both have one entry per target token.
    """

    logprobs: tuple[float, ...]
    correct: tuple[bool, ...]

    @property
    def n_tokens(self) -> int:
        return len(self.logprobs)

    @property
    def nll(self) -> float:
        """Length-normalised NLL: mean over target tokens of -log p (the CounterFact
        score, Meng et al. 2022, §4.2)."""
        return -sum(self.logprobs) / len(self.logprobs)

    @property
    def logprob(self) -> float:
        """Log-probability of the whole target string (sum over its tokens)."""
        return sum(self.logprobs)

    @property
    def prob(self) -> float:
        """``exp(-nll)``: the per-token geometric-mean probability (ROME's magnitudes)."""
        return math.exp(-self.nll)

    @property
    def accuracy(self) -> float:
        """Fraction of target tokens predicted top-1 under teacher forcing."""
        return sum(self.correct) / len(self.correct)


# --------------------------------------------------------------------------- helpers


def pass_overhead(lm: LoadedModel) -> int:
    return PASS_OVERHEAD_TOKENS.get(lm.device.type, PASS_OVERHEAD_TOKENS_DEFAULT)


def plan_buckets(
    lengths: Sequence[int], *, overhead: int, max_rows: int | None = None
) -> list[tuple[int, int]]:
    """Cut ``lengths`` (sorted ascending) into [start, stop) runs, one forward pass each.

    Minimises ``sum(rows * longest) + overhead * passes`` exactly (dynamic programming over
    the sorted lengths), with at most ``max_rows`` rows per run.
    """
    n = len(lengths)
    best = [0.0] + [math.inf] * n  # best[j]: cost of the first j lengths
    cut = [0] * (n + 1)
    for stop in range(1, n + 1):
        lowest = 0 if max_rows is None else max(0, stop - max_rows)
        for start in range(lowest, stop):
            cost = best[start] + (stop - start) * lengths[stop - 1] + overhead
            if cost < best[stop]:
                best[stop], cut[stop] = cost, start
    runs, stop = [], n
    while stop > 0:
        runs.append((cut[stop], stop))
        stop = cut[stop]
    return runs[::-1]


# --------------------------------------------------------------------------- scoring


@torch.no_grad()
def _score_bucket(
    lm: LoadedModel, prompts: Sequence[Sequence[int]], targets: Sequence[Sequence[Sequence[int]]]
) -> list[list[TokenScores]]:
    """Scores of ``targets[i][k]`` after ``prompts[i]``; one prompt pass (+ one continuation)."""
    device = lm.device
    ids, mask, positions = pad_left(prompts, pad_token_id(lm.tokenizer), device)
    longer = [(i, t) for i, ts in enumerate(targets) for t in ts if len(t) > 1]
    out = lm.model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        use_cache=bool(longer),
        logits_to_keep=1,
    )
    first = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)  # [B, V]
    first_top = first.argmax(dim=-1).tolist()
    rest: dict[int, tuple[list[float], list[bool]]] = {}
    if longer:
        rest = _continue(lm, output_cache(out), mask, positions[:, -1], longer)
    results, k = [], 0
    for i, ts in enumerate(targets):
        row = []
        for t in ts:
            head_lp, head_ok = first[i, t[0]].item(), first_top[i] == t[0]
            tail_lp, tail_ok = rest.get(k, ([], [])) if len(t) > 1 else ([], [])
            row.append(TokenScores((head_lp, *tail_lp), (head_ok, *tail_ok)))
            k += len(t) > 1
        results.append(row)
    return results


def _continue(
    lm: LoadedModel,
    cache: Any,
    prompt_mask: torch.Tensor,
    last_pos: torch.Tensor,
    longer: Sequence[tuple[int, Sequence[int]]],
) -> dict[int, tuple[list[float], list[bool]]]:
    """Scores of ``target[1:]`` for each (prompt row, target) in ``longer``, from the cache."""
    device = prompt_mask.device
    rows = torch.tensor([i for i, _ in longer], dtype=torch.long, device=device)
    cache.reorder_cache(rows)  # one cache row per (prompt, target) pair
    ids, cont_mask = pad_right(
        [t[:-1] for _, t in longer], pad_token_id(lm.tokenizer), device
    )  # [M, W]
    gold, _ = pad_right([t[1:] for _, t in longer], 0)  # [M, W]: the tokens to score
    width = ids.shape[1]
    positions = last_pos[rows][:, None] + 1 + torch.arange(width, device=device)[None, :]
    out = lm.model(
        input_ids=ids,
        attention_mask=torch.cat([prompt_mask[rows], cont_mask], dim=1),
        position_ids=positions,
        use_cache=True,
        **{cache_argument(lm.model): cache},
    )
    logits = out.logits.float()  # [M, W, V]: column j predicts target token j + 1
    gold = gold.to(logits.device)
    picked = torch.log_softmax(logits, dim=-1).gather(-1, gold[..., None])[..., 0].cpu()
    hits = (logits.argmax(dim=-1) == gold).cpu()
    return {
        r: (picked[r, : len(t) - 1].tolist(), hits[r, : len(t) - 1].tolist())
        for r, (_, t) in enumerate(longer)
    }


def _max_rows(lm: LoadedModel, targets_per_prompt: int, longest: int) -> int:
    """Prompts per pass that keep the continuation's logits under the budget."""
    vocab = int(lm.model.get_output_embeddings().weight.shape[0])
    per_prompt = 3 * 4 * vocab * max(1, targets_per_prompt) * max(1, longest - 1)
    return max(1, LOGITS_BUDGET_BYTES // per_prompt)


def score_continuations(
    lm: LoadedModel, items: Sequence[Item], *, batch_size: int | None = None
) -> list[TokenScores]:
    """Score every ``(prompt_ids, target_ids)`` pair, in as few forward passes as pay off.

    ``batch_size`` caps the distinct prompts per pass (default: as many as keep the kept
    logits under :data:`LOGITS_BUDGET_BYTES`). Results come back in the order of ``items``.
    """
    for prompt, target in items:
        if not prompt or not target:
            raise ValueError("every item needs a non-empty prompt and a non-empty target")
    if not items:
        return []
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, (prompt, _) in enumerate(items):
        groups.setdefault(tuple(prompt), []).append(index)
    prompts = sorted(groups, key=len)
    targets_per_prompt = max(len(v) for v in groups.values())
    longest = max(len(t) for _, t in items)
    cap = batch_size or _max_rows(lm, targets_per_prompt, longest)
    results: list[TokenScores | None] = [None] * len(items)
    lengths = [len(p) for p in prompts]
    for start, stop in plan_buckets(lengths, overhead=pass_overhead(lm), max_rows=cap):
        chunk = prompts[start:stop]
        scored = _score_bucket(lm, chunk, [[items[i][1] for i in groups[p]] for p in chunk])
        for prompt, row in zip(chunk, scored, strict=True):
            for index, scores in zip(groups[prompt], row, strict=True):
                results[index] = scores
    return [r for r in results if r is not None]


@torch.no_grad()
def score_unbatched(lm: LoadedModel, items: Sequence[Item]) -> list[TokenScores]:
    """The naive loop: one unpadded pass over prompt + target per item, all logits.

    The baseline of ``scripts/bench_eval.py`` and an independent oracle for the tests.
    """
    out = []
    for prompt, target in items:
        ids = torch.tensor([list(prompt) + list(target)], device=lm.device)
        logits = lm.model(input_ids=ids, use_cache=False).logits[0].float()
        rows = logits[len(prompt) - 1 : len(prompt) - 1 + len(target)]  # [T, V]
        gold = torch.tensor(list(target), device=rows.device)
        lp = torch.log_softmax(rows, dim=-1).gather(-1, gold[:, None])[:, 0]
        out.append(
            TokenScores(tuple(lp.cpu().tolist()), tuple((rows.argmax(-1) == gold).cpu().tolist()))
        )
    return out
