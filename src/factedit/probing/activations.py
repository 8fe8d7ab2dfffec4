"""The span's representation at every layer: one forward pass per batch, cached on disk.

    acts = read_activations(lm, examples, site="residual", token="last")
    acts.values        # [N, L, d] float32 on the CPU: example x layer x hidden
    acts.cached        # True when read from the cache (no forward pass ran)

Sites: ``residual`` (a decoder layer's output, the residual stream after layer l), ``mlp``
(the MLP module's output, before any norm on it) and ``attn`` (the attention module's
output). Token: ``last`` (the span's last token) or ``mean`` (the mean over its tokens).
Every layer of a batch is read in the same forward pass, which stops after the last layer's
site (the LM head never runs). Rows are right-padded, so a row's real tokens never see the
padding and a batched read equals an unbatched one.

The cache: ``$FACTEDIT_HOME/probe/<key>.safetensors``, ``key`` the sha256 of the model's
identity (its exact weights, edits included: :attr:`LoadedModel.identity`), the texts and
spans (:func:`~factedit.probing.data.data_hash`), the site and the token. Relabelling a task,
or probing it with other seeds or settings, costs no forward pass.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import safetensors
import safetensors.torch
import torch

from factedit.batching import pad_right, pad_token_id
from factedit.console import progress
from factedit.errors import ProbeDataError
from factedit.hooks import TraceDict
from factedit.models.arch import Architecture
from factedit.models.loading import LoadedModel
from factedit.paths import atomic_file, cache_dir
from factedit.probing.data import ProbeExample, data_hash

SITES: tuple[str, ...] = ("residual", "mlp", "attn")
TOKENS: tuple[str, ...] = ("last", "mean")
#: Bump when what is stored changes: older entries are then recomputed.
CACHE_VERSION = 1


@dataclass
class Activations:
    """``values`` [N, L, d] float32 (CPU); ``key`` names the cache entry."""

    values: torch.Tensor
    key: str
    cached: bool


def site_names(arch: Architecture, site: str) -> list[str]:
    """The module read at each layer for ``site``, layer 0 first."""
    if site not in SITES:
        raise ProbeDataError(f"--site {site}: choose one of {', '.join(SITES)}")
    name = {"residual": arch.layer_name, "mlp": arch.mlp_name, "attn": arch.attn_name}[site]
    return [name(layer) for layer in range(arch.num_layers)]


def span_tokens(tokenizer, example: ProbeExample, index: int) -> tuple[list[int], int, int]:
    """(token ids of the text, BOS included; first and one-past-last token of the span)."""
    enc = tokenizer(example.text, return_offsets_mapping=True, add_special_tokens=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    special = set(tokenizer.all_special_ids)
    inside = [
        i
        for i, (s, e) in enumerate(offsets)
        if e > s and s < example.end and e > example.start and ids[i] not in special
    ]
    if not inside:
        raise ProbeDataError(
            f'example #{index}: the span "{example.group}" maps to no token of its text'
        )
    return ids, inside[0], inside[-1] + 1


def cache_key(lm: LoadedModel, examples: Sequence[ProbeExample], site: str, token: str) -> str:
    """sha256 of (model identity, data hash, site, token, format version)."""
    key = {
        "model": lm.identity,
        "data": data_hash(examples),
        "site": site,
        "token": token,
        "version": CACHE_VERSION,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def pool(hidden: torch.Tensor, spans: Sequence[tuple[int, int]], token: str) -> torch.Tensor:
    """[B, T, d] -> [B, d]: each row's span ``(a, b)`` pooled by ``token`` (last / mean)."""
    if token == "last":
        rows = torch.arange(hidden.shape[0])
        return hidden[rows, torch.tensor([b - 1 for _, b in spans])]
    return torch.stack([hidden[i, a:b].mean(dim=0) for i, (a, b) in enumerate(spans)])


@torch.no_grad()
def forward_batch(
    lm: LoadedModel,
    rows: Sequence[Sequence[int]],
    spans: Sequence[tuple[int, int]],
    names: Sequence[str],
    token: str,
) -> torch.Tensor:
    """One forward pass over ``rows``: the pooled output of every module in ``names``,
    [B, len(names), d] float32 on the CPU."""
    ids, mask = pad_right(rows, pad_token_id(lm.tokenizer), lm.device)
    with TraceDict(lm.model, names, detach=True, stop=True) as td:
        lm.model(input_ids=ids, attention_mask=mask, use_cache=False)
    per_layer = [pool(td[n].output.float().cpu(), spans, token) for n in names]
    return torch.stack(per_layer, dim=1)


def compute_activations(
    lm: LoadedModel, examples: Sequence[ProbeExample], site: str, token: str, batch_size: int
) -> torch.Tensor:
    """[N, L, d]: the forward passes, with a progress bar over batches."""
    if token not in TOKENS:
        raise ProbeDataError(f"--token {token}: choose one of {', '.join(TOKENS)}")
    names = site_names(lm.arch, site)
    located = [span_tokens(lm.tokenizer, e, i) for i, e in enumerate(examples)]
    parts = []
    starts = range(0, len(located), batch_size)
    with progress() as bar:
        task = bar.add_task(f"activations ({site}, {token} token)", total=len(starts))
        for s in starts:
            chunk = located[s : s + batch_size]
            rows = [ids for ids, _, _ in chunk]
            spans = [(a, b) for _, a, b in chunk]
            parts.append(forward_batch(lm, rows, spans, names, token))
            bar.advance(task)
    return torch.cat(parts)


def _load_cached(path, key: str, n: int) -> torch.Tensor | None:
    """The cached [N, L, d] at ``path`` if it is complete and for ``key``; else None."""
    if not path.is_file():
        return None
    try:
        with safetensors.safe_open(str(path), framework="pt") as fh:
            if (fh.metadata() or {}).get("key") != key:
                return None
            values = fh.get_tensor("activations")
    except (OSError, ValueError, safetensors.SafetensorError):
        return None
    return values if values.shape[0] == n else None


def read_activations(
    lm: LoadedModel,
    examples: Sequence[ProbeExample],
    site: str = "residual",
    token: str = "last",
    *,
    batch_size: int = 16,
    cache: bool = True,
) -> Activations:
    """The [N, L, d] activations of ``examples``: from the cache, or computed and cached."""
    key = cache_key(lm, examples, site, token)
    path = cache_dir("probe") / f"{key}.safetensors"
    if cache and (values := _load_cached(path, key, len(examples))) is not None:
        return Activations(values, key, cached=True)
    values = compute_activations(lm, examples, site, token, max(1, batch_size)).contiguous()
    if cache:
        meta = {"key": key, "model": lm.identity, "site": site, "token": token}
        data = safetensors.torch.save({"activations": values}, metadata=meta)
        with atomic_file(path, "wb") as fh:
            fh.write(data)
    return Activations(values, key, cached=False)
