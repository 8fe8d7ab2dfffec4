"""Context templates: "{}" plus short prefixes sampled from the model itself.

    templates = context_templates(lm, lengths=(10,), per_length=5)   # ["{}", "<p1>. {}", ...]
    w = template_weights((10,), 5, "by_type")                         # [6]: 1/2, then 1/10 each

Each sampled prefix becomes ``prefix + ". {}"``; the key and the value are averaged /
optimised over all templates so the edit does not depend on one exact context. Templates are
sampled with top-k 5 from a seeded generator and cached per (model identity, settings).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import torch

from factedit.methods.hparams import KEY_TEMPLATE_MEANS
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


def template_weights(lengths: Sequence[int], per_length: int, mean: str) -> torch.Tensor:
    """Weights [1 + len(lengths) * per_length] float32 summing to 1 over the templates of
    :func:`context_templates`, in its order.

    ``"uniform"``: every template alike (ROME's k*, kmeng01/rome ``compute_u``).
    ``"by_type"``: the mean over context *types* — the bare prompt, then one type per prefix
    length — of the mean within each type (MEMIT's keys, kmeng01/memit ``compute_ks``, copied by
    AlphaEdit): with one prefix length the bare prompt weighs 1/2 and each prefix
    1/(2 per_length).
    """
    if mean not in KEY_TEMPLATE_MEANS:
        raise ValueError(f"key template mean {mean!r}: expected one of {KEY_TEMPLATE_MEANS}")
    sizes = [1] + [per_length] * len(lengths)
    if mean == "uniform":
        return torch.full((sum(sizes),), 1.0 / sum(sizes))
    return torch.cat([torch.full((size,), 1.0 / (len(sizes) * size)) for size in sizes])


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
