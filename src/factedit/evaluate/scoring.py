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

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

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
        """Length-normalised NLL: mean over target tokens of -log p (SPEC §6 ``score``)."""
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


def pad_id(lm: LoadedModel) -> int:
    """A token id to put under masked positions (its value never matters)."""
    tok = lm.tokenizer
    for candidate in (tok.pad_token_id, tok.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def left_pad(
    rows: Sequence[Sequence[int]], pad: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``input_ids``, ``attention_mask``, ``position_ids``, each [B, P]; rows end in column P-1."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids, mask, (mask.cumsum(dim=1) - 1).clamp(min=0)


def cache_kwarg(model: torch.nn.Module) -> str:
    """The forward argument that takes the KV cache (``cache`` in recent transformers 5.x)."""
    params = inspect.signature(type(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def returned_cache(output: Any) -> Any:
    """The KV cache of a model output, under either of its transformers names."""
    return output["cache"] if "cache" in output else output["past_key_values"]


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
    ids, mask, positions = (t.to(device) for t in left_pad(prompts, pad_id(lm)))
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
        rest = _continue(lm, returned_cache(out), mask, positions[:, -1], longer)
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
    width = max(len(t) for _, t in longer) - 1
    ids = torch.full((len(longer), width), pad_id(lm), dtype=torch.long)
    cont_mask = torch.zeros((len(longer), width), dtype=torch.long)
    gold = torch.zeros((len(longer), width), dtype=torch.long)
    for r, (_, t) in enumerate(longer):
        ids[r, : len(t) - 1] = torch.tensor(list(t[:-1]), dtype=torch.long)
        cont_mask[r, : len(t) - 1] = 1
        gold[r, : len(t) - 1] = torch.tensor(list(t[1:]), dtype=torch.long)
    positions = last_pos[rows][:, None] + 1 + torch.arange(width, device=device)[None, :]
    out = lm.model(
        input_ids=ids.to(device),
        attention_mask=torch.cat([prompt_mask[rows], cont_mask.to(device)], dim=1),
        position_ids=positions,
        use_cache=True,
        **{cache_kwarg(lm.model): cache},
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
