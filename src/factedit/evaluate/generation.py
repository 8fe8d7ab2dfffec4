"""Batched text generation with the KV cache (greedy or seeded top-k sampling).

Prompts are *left*-padded (all prompts end in the last column), the attention mask hides the
pads and position ids come from the mask, so a row generates exactly what it would alone.
Each step feeds only the new token and reuses the cache; only the last column goes through
the LM head. Sampling draws from a private, seeded ``torch.Generator`` (the global RNG is
never touched), so a run is reproducible for a given seed and batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from factedit.batching import pad_left, pad_token_id
from factedit.kvcache import cache_argument, output_cache
from factedit.models.loading import LoadedModel
from factedit.tokens import prompt_token_ids, visible_text


def _choose(
    logits: torch.Tensor, greedy: bool, top_k: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Next token per row from ``logits`` [B, V]: arg-max, or a draw from the top-k. -> [B]."""
    if greedy:
        return logits.argmax(dim=-1)
    values, indices = logits.float().topk(top_k, dim=-1)
    probs = torch.softmax(values, dim=-1)
    pick = torch.multinomial(probs.cpu(), 1, generator=generator).to(indices.device)
    return indices.gather(-1, pick).squeeze(-1)


@torch.no_grad()
def decode_steps(
    lm: LoadedModel,
    prompts: Sequence[Sequence[int]],
    n_steps: int,
    pick: Callable[[torch.Tensor], torch.Tensor],
) -> Iterator[torch.Tensor]:
    """Token-by-token decoding with the KV cache: yields the token [B] that ``pick`` chooses
    from each step's next-token logits [B, V], at most ``n_steps`` times.

    The prompts are left-padded into one batch [B, P] and run once; every later step feeds
    only the new column [B, 1]. The caller may stop early (``break``): nothing runs after it.
    """
    ids, mask, positions = pad_left(prompts, pad_token_id(lm.tokenizer), lm.device)
    cache_kw = cache_argument(lm.model)
    out = lm.model(
        input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1
    )
    last_pos = positions[:, -1]
    for step in range(n_steps):
        token = pick(out.logits[:, -1, :])
        yield token
        if step == n_steps - 1:
            return
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        last_pos = last_pos + 1
        out = lm.model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=last_pos[:, None],
            use_cache=True,
            **{cache_kw: output_cache(out)},
        )


def generate_ids(
    lm: LoadedModel,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    greedy: bool = True,
    seed: int = 0,
    top_k: int = 5,
    stop_at_eos: bool = True,
) -> list[list[int]]:
    """New token ids for each prompt (prompt ids in, at most ``max_new_tokens`` out).

    With ``stop_at_eos`` a row stops after the tokenizer's EOS (which is not returned).
    """
    if not prompts or max_new_tokens <= 0:
        return [[] for _ in prompts]
    generator = None if greedy else torch.Generator().manual_seed(seed)
    eos = lm.tokenizer.eos_token_id if stop_at_eos else None
    new: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    for token in decode_steps(
        lm, prompts, max_new_tokens, lambda logits: _choose(logits, greedy, top_k, generator)
    ):
        for row, value in enumerate(token.tolist()):
            if done[row]:
                continue
            if eos is not None and value == eos:
                done[row] = True
            else:
                new[row].append(value)
        if all(done):
            break
    return new


def generate_text(
    lm: LoadedModel,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 20,
    greedy: bool = True,
    seed: int = 0,
    top_k: int = 5,
) -> list[str]:
    """The continuation of each prompt (without the prompt), without control tokens."""
    tok = lm.tokenizer
    ids = [prompt_token_ids(tok, p) for p in prompts]
    new = generate_ids(
        lm, ids, max_new_tokens=max_new_tokens, greedy=greedy, seed=seed, top_k=top_k
    )
    return [visible_text(tok, n) for n in new]
