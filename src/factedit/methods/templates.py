"""Context templates for ROME: "{}" plus short prefixes sampled from the model itself.

Each sampled prefix becomes ``prefix + ". {}"``; the key k* and the value v* are averaged /
optimised over all templates so the edit does not depend on one exact context. Templates are
sampled with top-k 5 from a seeded generator and cached per (model identity, settings).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import torch

from factedit.models.loading import LoadedModel
from factedit.paths import atomic_write_text, cache_dir

_MEMO: dict[str, list[str]] = {}


def context_templates(
    lm: LoadedModel,
    lengths: Sequence[int] = (5, 10),
    per_length: int = 10,
    *,
    seed: int = 0,
    top_k: int = 5,
) -> list[str]:
    """``["{}", prefix_1 + ". {}", ...]``: 1 + len(lengths) * per_length templates."""
    key = json.dumps(
        {"model": lm.identity, "lengths": list(lengths), "n": per_length, "seed": seed, "k": top_k}
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    if digest in _MEMO:
        return list(_MEMO[digest])
    path = cache_dir("templates") / f"{digest}.json"
    if path.is_file():
        templates = json.loads(path.read_text())["templates"]
    else:
        generator = torch.Generator(device="cpu").manual_seed(seed)
        templates = ["{}"]
        for length in lengths:
            for prefix in sample_prefixes(lm, per_length, length, generator, top_k):
                templates.append(prefix.replace("{", " ").replace("}", " ") + ". {}")
        atomic_write_text(path, json.dumps({"key": json.loads(key), "templates": templates}))
    _MEMO[digest] = list(templates)
    return templates


SEED_WORDS = ("The", "Therefore", "Because", "I", "You")


@torch.no_grad()
def sample_prefixes(
    lm: LoadedModel, n: int, length: int, generator: torch.Generator, top_k: int
) -> list[str]:
    """``n`` texts of ``length`` tokens (top-k sampling) opening with common seed words.

    Starting from plain words (cycled from :data:`SEED_WORDS`) rather than a start-of-text
    token keeps the prefixes natural on models whose tokenizer adds no BOS. Sampling state
    comes only from ``generator``.
    """
    tok = lm.tokenizer
    banned = [[i] for i in sorted(set(tok.all_special_ids))]
    words = [SEED_WORDS[i % len(SEED_WORDS)] for i in range(n)]
    side = tok.padding_side
    tok.padding_side = "left"
    try:
        batch = tok(words, return_tensors="pt", padding=True).to(lm.device)
    finally:
        tok.padding_side = side
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = lm.model.generate(
            **batch,
            do_sample=True,
            top_k=top_k,
            max_new_tokens=length,
            min_new_tokens=length,
            bad_words_ids=banned,
            pad_token_id=tok.pad_token_id,
        )
    return [text.strip() for text in tok.batch_decode(out, skip_special_tokens=True)]
