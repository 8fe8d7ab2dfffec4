"""A corpus sampled from the model itself: C = E[k kᵀ] when no text corpus can be had.

    path = sampled_corpus(lm, n_tokens=100_000, seq_len=256)  # .../corpora/model-<id>-<n>.jsonl

Document i opens with prompt i mod 20 of :data:`NEUTRAL_PROMPTS`, short and fact-free: "The",
"In the morning,", "Here is a short story:", "It was", "Once upon a time,", "I think that",
"We", "Today,", "This is", "A", "When", "There are", "My", "After a while,", "Yesterday,",
"One of the", "If you", "Last year,", "Many people", "In the end,". It continues with
:data:`DOC_TOKENS` (256) tokens drawn with top-k :data:`TOP_K` (50) at temperature
:data:`TEMPERATURE` (1.0); special tokens (BOS, EOS, pad, ...) are never drawn. Document i
samples from its own ``torch.Generator`` seeded from (seed, i), so the text does not depend on
the batch size or thread count (only, rarely, through floating-point rounding: 193 of 193
gemma-3-270m documents came out identical at 1 thread and batch 32 and at 2 threads and batch
64). Documents are generated :data:`BATCH_SIZE` at a time with the KV cache until the
corpus holds exactly what :func:`~factedit.stats.corpus.token_sequences` reads for
``n_tokens`` token vectors at ``seq_len``: ⌈n_tokens/seq_len⌉ · (seq_len − 1 if the tokenizer
adds BOS else seq_len) stream tokens, counted by re-tokenising the decoded text as the corpus
reader does (100,000 vectors at 256 ≈ 99.7 k tokens, ≈ 390 documents); the shortest prefix of
documents that suffices is kept.

Cost, gemma-3-270m on the 2-core CPU (idle; 2 threads, batches of 64 documents): about 235
tokens/s, since the LM head (262k vocabulary, most of each step) runs in bfloat16 (125 tokens/s
with a float32 head; 120 on one thread). The usual 100,000 token vectors would take 7 min (14
on one thread), so this corpus defaults to :data:`~factedit.stats.choice.SAMPLED_N_TOKENS` =
50,000: 210 s of sampling plus 13 s for C, once per model. Measured cost, u = C⁻¹k* for the
k* of 50 CounterFact subjects at layer 2: median cos(u_50k, u_100k) = 0.969 (min 0.943) on
this corpus (0.94 for WikiText-2), far less than the difference between corpora: median
cos(u, u_WikiText-2) = 0.76 at 50k, 0.79 at 100k (``scripts/compare_corpora.py`` measures
what that does to ES/PS/NS).

The corpus is a JSON-lines file, one ``{"text": ...}`` per document, so the ordinary corpus
reader and corpus digest apply unchanged. Everything is cached under ``$FACTEDIT_HOME/corpora/``
per (model identity, prompts, top-k, temperature, seed, document length, head dtype): the
documents sampled so far (``model-<id>.pool.json``, rewritten atomically after every batch, so
an interrupted run resumes and a larger corpus later reuses them) and each corpus taken from
them (``model-<id>-<stream tokens>.jsonl``, written atomically). Another machine (another BLAS,
a GPU) may sample different text: C's cache key follows the corpus file's contents.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from factedit.console import info, progress
from factedit.evaluate.generation import decode_steps
from factedit.models.loading import LoadedModel
from factedit.paths import atomic_file, atomic_write_text, cache_dir
from factedit.stats.cache import file_lock
from factedit.tokens import prompt_token_ids

FORMAT_VERSION = 1
NEUTRAL_PROMPTS = (
    "The",
    "In the morning,",
    "Here is a short story:",
    "It was",
    "Once upon a time,",
    "I think that",
    "We",
    "Today,",
    "This is",
    "A",
    "When",
    "There are",
    "My",
    "After a while,",
    "Yesterday,",
    "One of the",
    "If you",
    "Last year,",
    "Many people",
    "In the end,",
)
TOP_K = 50
TEMPERATURE = 1.0
DOC_TOKENS = 256
#: Documents per batch (gemma-3-270m, 2-core CPU: 205 tokens/s at 32, 233 at 64).
BATCH_SIZE = 64


@dataclass(frozen=True)
class SampleSettings:
    """How the documents are sampled (all but ``batch_size`` are part of the cache key)."""

    top_k: int = TOP_K
    temperature: float = TEMPERATURE
    seed: int = 0
    doc_tokens: int = DOC_TOKENS
    batch_size: int = BATCH_SIZE
    #: dtype of the LM head while sampling; None: :func:`head_dtype` (bfloat16 where fast)
    head: str | None = None


def stream_tokens_needed(lm: LoadedModel, n_tokens: int, seq_len: int) -> int:
    """Stream tokens that ``token_sequences`` takes for ``n_tokens`` vectors at ``seq_len``."""
    from factedit.stats.corpus import adds_bos

    n_seq = -(-n_tokens // seq_len)
    return n_seq * (seq_len - int(adds_bos(lm.tokenizer)))


def pool_key(lm: LoadedModel, settings: SampleSettings) -> dict[str, Any]:
    """Everything that determines the sampled documents (the batch size does not)."""
    fields = {k: v for k, v in asdict(settings).items() if k != "batch_size"}
    fields["head"] = settings.head or head_dtype(lm)
    prompts = hashlib.sha256("\0".join(NEUTRAL_PROMPTS).encode()).hexdigest()[:16]
    return {"version": FORMAT_VERSION, "model": lm.identity, "prompts": prompts, **fields}


def sampled_corpus_path(lm: LoadedModel, n_stream: int, settings: SampleSettings) -> Path:
    """Where the corpus of ``n_stream`` tokens is (or will be) cached: beside its pool."""
    return _pool_path(lm, settings).with_name(f"{_pool_id(lm, settings)}-{n_stream}.jsonl")


def _pool_id(lm: LoadedModel, settings: SampleSettings) -> str:
    key = json.dumps(pool_key(lm, settings), sort_keys=True)
    return f"model-{hashlib.sha256(key.encode()).hexdigest()[:24]}"


def _pool_path(lm: LoadedModel, settings: SampleSettings) -> Path:
    return cache_dir("corpora") / f"{_pool_id(lm, settings)}.pool.json"


def sampled_corpus(
    lm: LoadedModel,
    *,
    n_tokens: int,
    seq_len: int,
    settings: SampleSettings | None = None,
    show_progress: bool = True,
    reason: str = "",
) -> Path:
    """The cached model-sampled corpus for ``n_tokens`` vectors at ``seq_len``; sampled (with
    a progress bar and an info line naming ``reason``) when not cached yet."""
    settings = settings or SampleSettings()
    n_stream = stream_tokens_needed(lm, n_tokens, seq_len)
    path = sampled_corpus_path(lm, n_stream, settings)
    why = f" ({reason})" if reason else ""
    if path.is_file():
        info(f"using the corpus sampled from {lm.name} itself{why}: {path}")
        return path
    pool = _pool_path(lm, settings)
    with file_lock(pool.with_suffix(".lock"), f"sampling {pool.name}"):
        if not path.is_file():
            info(
                f"using a corpus sampled from {lm.name} itself{why}: {n_stream} tokens "
                f"(top-k {settings.top_k}, temperature {settings.temperature}), sampled once"
            )
            texts = _sample_until(lm, n_stream, settings, pool, show_progress)
            lines = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)
            with atomic_file(path, "wb") as fh:
                fh.write(lines.encode("utf-8"))
            info(f"sampled corpus saved to {path}")
    return path


def _sample_until(
    lm: LoadedModel, n_stream: int, settings: SampleSettings, pool: Path, show_progress: bool
) -> list[str]:
    """The shortest prefix of the pool's documents holding ``n_stream`` stream tokens; the
    pool (saved after every batch, so an interrupted run resumes) grows as needed."""
    key = pool_key(lm, settings)
    texts = _load_pool(pool, key)
    counts = [_n_tokens(lm, t) for t in texts]
    goal = n_stream + _separator(lm)  # the counts include a separator before the first doc
    bar = progress()
    bar.disable = bar.disable or not show_progress or sum(counts) >= goal
    start, before = time.perf_counter(), len(texts)
    with bar:
        task = bar.add_task("sampling corpus", total=n_stream, completed=min(sum(counts), n_stream))
        while sum(counts) < goal:
            left = -(-(goal - sum(counts)) // settings.doc_tokens)  # about this many docs
            rows = range(len(texts), len(texts) + max(1, min(settings.batch_size, left)))
            batch = sample_documents(lm, rows, settings)
            texts += batch
            counts += [_n_tokens(lm, t) for t in batch]
            bar.update(task, completed=min(sum(counts), n_stream))
            atomic_write_text(pool, json.dumps({"key": key, "texts": texts}))
    if len(texts) > before:
        info(f"sampled {len(texts) - before} documents in {time.perf_counter() - start:.0f}s")
    return texts[: _shortest_prefix(counts, goal)]


def _separator(lm: LoadedModel) -> int:
    """1 when the corpus reader puts a separator (EOS, else BOS) between documents."""
    tok = lm.tokenizer
    return int(tok.eos_token_id is not None or tok.bos_token_id is not None)


def _n_tokens(lm: LoadedModel, text: str) -> int:
    """Stream tokens one document adds: its ids as the corpus reader tokenises them, plus
    the separator before it."""
    return len(lm.tokenizer(text, add_special_tokens=False)["input_ids"]) + _separator(lm)


def _shortest_prefix(counts: Sequence[int], goal: int) -> int:
    """How many documents the stream needs: the shortest prefix of ``counts`` summing to
    ``goal`` or more."""
    total = 0
    for index, count in enumerate(counts):
        total += count
        if total >= goal:
            return index + 1
    return len(counts)


def _load_pool(pool: Path, key: dict[str, Any]) -> list[str]:
    """The documents sampled so far with ``key`` (none when the file is absent or stale)."""
    try:
        data = json.loads(pool.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict) or data.get("key") != key:
        return []
    texts = [t for t in data.get("texts", []) if isinstance(t, str)]
    if texts:
        info(f"{len(texts)} documents already sampled with these settings are reused")
    return texts


def row_seed(seed: int, row: int) -> int:
    """The generator seed of document ``row`` (independent of batching)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{row}".encode()).digest()[:8], "little")


def head_dtype(lm: LoadedModel) -> str:
    """The LM head's dtype while sampling: ``bfloat16`` for a float32 model on a CPU with
    native bfloat16 matmuls (oneDNN: AVX-512 BF16 / AMX), else the model's own dtype."""
    dtype = str(lm.model.dtype).removeprefix("torch.")
    head = lm.model.get_output_embeddings()
    fast = (
        lm.device.type == "cpu"
        and dtype == "float32"
        and isinstance(head, torch.nn.Linear)
        and torch.backends.mkldnn.is_available()
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )
    return "bfloat16" if fast else dtype


@contextlib.contextmanager
def _head_in(lm: LoadedModel, dtype: str) -> Iterator[None]:
    """Compute the LM head [B, d] -> [B, V] in ``dtype`` inside the block (a bfloat16 copy
    of its weight; the model itself is not changed). With a 262k vocabulary the head is most
    of a sampling step, and on such a CPU bfloat16 makes it about 5x faster; the logits then
    carry bfloat16 rounding (~0.4 %), which perturbs the sampling distribution negligibly."""
    head = lm.model.get_output_embeddings()
    if dtype == str(lm.model.dtype).removeprefix("torch.") or head is None:
        yield
        return
    target = getattr(torch, dtype)
    weight = head.weight.detach().to(target)
    bias = None if head.bias is None else head.bias.detach().to(target)
    previous = head.__dict__.get("forward")  # e.g. an accelerate hook's wrapper

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x.to(target), weight, bias).to(x.dtype)

    head.forward = forward
    try:
        yield
    finally:
        if previous is None:
            del head.forward
        else:
            head.forward = previous


def sample_documents(lm: LoadedModel, rows: range, settings: SampleSettings) -> list[str]:
    """The texts of documents ``rows`` (prompt + continuation, special tokens dropped)."""
    tok = lm.tokenizer
    prompts = [NEUTRAL_PROMPTS[r % len(NEUTRAL_PROMPTS)] for r in rows]
    ids = [prompt_token_ids(tok, p) for p in prompts]
    generators = [torch.Generator().manual_seed(row_seed(settings.seed, r)) for r in rows]
    room = lm.max_length - max(len(p) for p in ids)  # position embeddings end there (GPT-2)
    with _head_in(lm, settings.head or head_dtype(lm)):
        new = sample_ids(lm, ids, generators, min(settings.doc_tokens, room), settings)
    return [tok.decode([*p, *n], skip_special_tokens=True) for p, n in zip(ids, new, strict=True)]


def sample_ids(
    lm: LoadedModel,
    prompts: Sequence[Sequence[int]],
    generators: Sequence[torch.Generator],
    n_new: int,
    settings: SampleSettings,
) -> list[list[int]]:
    """``n_new`` sampled ids per prompt (batched, KV cache: :func:`decode_steps`); row b
    draws from ``generators[b]``."""
    banned = torch.tensor(sorted(set(lm.tokenizer.all_special_ids)), dtype=torch.long)
    steps = list(
        decode_steps(lm, prompts, n_new, lambda logits: draw(logits, banned, generators, settings))
    )
    return torch.stack(steps, dim=1).tolist()


def draw(
    logits: torch.Tensor,
    banned: torch.Tensor,
    generators: Sequence[torch.Generator],
    settings: SampleSettings,
) -> torch.Tensor:
    """Next token per row from ``logits`` [B, V]: top-k at the temperature, ``banned`` ids
    excluded, row b drawn with ``generators[b]`` -> [B] (on the logits' device)."""
    logits = logits.float()
    if len(banned):
        logits = logits.index_fill(-1, banned.to(logits.device), float("-inf"))
    values, indices = logits.topk(min(settings.top_k, logits.shape[-1]), dim=-1)
    probs = torch.softmax(values / settings.temperature, dim=-1).cpu()
    picks = [torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators, strict=True)]
    return indices.gather(-1, torch.stack(picks).to(indices.device)).squeeze(-1)
