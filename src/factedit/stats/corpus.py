"""Corpus for second-moment statistics: find it, read it, turn it into token sequences.

    resolve_corpus(paths | None, lm=lm) -> [Path]    explicit > $FACTEDIT_CORPUS > WikiText-103
                                                     > sampled from lm (stats/choice.py)
    corpus_digest(paths) -> str                      sha256 over the files' contents (cache key)
    token_sequences(tokenizer, paths, n_tokens, seq_len) -> LongTensor [n_seq, seq_len]

A ``.jsonl`` file holds one JSON object with a ``"text"`` field per line; any other file is
plain text, split into documents at blank lines and at WikiText top-level headings
(`` = Title = ``). Documents are tokenized in chunks (one batched tokenizer call per chunk;
chunks double in size and only as many as needed are tokenized) and joined into one
deterministic stream with the tokenizer's EOS between documents.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import PreTrainedTokenizerBase

from factedit.console import info, warn
from factedit.errors import StatsError
from factedit.stats.choice import (
    HOW_TO_GIVE_ONE,
    CorpusChoice,
    choose_corpus,
    default_n_tokens,
    download_wikitext,
)

if TYPE_CHECKING:
    from factedit.models.loading import LoadedModel

_DOWNLOAD_FAILED: dict[Path, str] = {}  # a failed download is not retried in this process
_HEADING = re.compile(r"^\s*=\s[^=].*\s=\s*$")
_MAX_CHUNK_DOCS = 256  # chunks grow 1, 2, 4, ... documents: little is tokenized in vain


def resolve_corpus(
    corpus: Sequence[str | Path] | None,
    *,
    lm: LoadedModel | None = None,
    n_tokens: int | None = None,
    seq_len: int = 256,
    show_progress: bool = True,
) -> list[Path]:
    """The corpus files to read (order: :mod:`factedit.stats.choice`), downloaded or sampled
    from ``lm`` when needed; without ``lm`` a model-sampled corpus is a :class:`StatsError`."""
    choice = choose_corpus(corpus, n_tokens=n_tokens)
    ready, _ = prepare_corpus(
        choice, lm=lm, n_tokens=n_tokens, seq_len=seq_len, show_progress=show_progress
    )
    return list(ready.paths)


def prepare_corpus(
    choice: CorpusChoice,
    *,
    lm: LoadedModel | None,
    n_tokens: int | None,
    seq_len: int,
    show_progress: bool = True,
) -> tuple[CorpusChoice, int]:
    """Make ``choice`` real -> (the choice with its files on disk, the token count to use).

    WikiText-103 is downloaded when it is not cached yet; when that fails, a warning says why
    and the model-sampled corpus is used. ``n_tokens`` None takes the corpus kind's default.
    """
    if choice.kind == "wikitext" and choice.download:
        path = choice.paths[0]
        failed = _DOWNLOAD_FAILED.get(path)
        if failed is None:
            info(f"downloading the head of WikiText-103 (raw, train) once to {path}")
            try:
                download_wikitext(path)
            except StatsError as exc:
                failed = _DOWNLOAD_FAILED[path] = str(exc)
                warn(f"{exc}; using a corpus sampled from the model instead")
        if failed is not None:
            choice = CorpusChoice("model", (), "fallback", f"WikiText-103 unavailable: {failed}")
    elif choice.kind == "wikitext":
        info(choice.describe())
    n_tokens = n_tokens or default_n_tokens(choice)
    if choice.kind != "model":
        return choice, n_tokens
    if lm is None:
        raise StatsError(
            f"no corpus for the second-moment statistics ({choice.reason}); {HOW_TO_GIVE_ONE}"
        )
    from factedit.stats.sampled import sampled_corpus

    path = sampled_corpus(
        lm, n_tokens=n_tokens, seq_len=seq_len, show_progress=show_progress, reason=choice.reason
    )
    return CorpusChoice("model", (path,), choice.source, choice.reason), n_tokens


def corpus_digest(paths: Sequence[Path]) -> str:
    """sha256 over the files' kinds and contents, in order (names and places do not count)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{_kind(path)}\0".encode())
        digest.update(bytes.fromhex(_file_sha256(path)))
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    return _file_sha256_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _file_sha256_cached(path: str, _size: int, _mtime_ns: int) -> str:
    """A file's sha256, remembered while its size and mtime stay the same."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _kind(path: Path) -> str:
    return "jsonl" if path.suffix.lower() == ".jsonl" else "text"


def iter_documents(paths: Sequence[Path]) -> Iterator[str]:
    """Documents of every file in order; empty documents are skipped."""
    for path in paths:
        reader = _jsonl_documents if _kind(path) == "jsonl" else _text_documents
        for doc in reader(path):
            if doc.strip():
                yield doc


def _text_documents(path: Path) -> Iterator[str]:
    lines: list[str] = []
    for raw in _read_text(path).splitlines():
        line = raw.strip()
        if not line or _HEADING.match(raw):
            if lines:
                yield "\n".join(lines)
            lines = [line] if line else []
        else:
            lines.append(line)
    if lines:
        yield "\n".join(lines)


def _jsonl_documents(path: Path) -> Iterator[str]:
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            text = record["text"]
        except (json.JSONDecodeError, TypeError, KeyError):
            raise StatsError(
                f'{path}:{number}: each line must be a JSON object with a "text" field'
            ) from None
        if not isinstance(text, str):
            raise StatsError(f'{path}:{number}: "text" must be a string')
        yield text


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StatsError(f"cannot read corpus file {path}: {exc}") from None


def adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """True when the tokenizer prepends its BOS token to ordinary text (Gemma, Llama)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == bos


def token_stream(
    tokenizer: PreTrainedTokenizerBase, paths: Sequence[Path], n_stream: int
) -> list[int]:
    """The first ``n_stream`` ids of the corpus: documents joined by EOS (or BOS)."""
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
    stream: list[int] = []
    docs, size = iter_documents(paths), 1
    while len(stream) < n_stream:
        chunk = [doc for _, doc in zip(range(size), docs, strict=False)]
        if not chunk:
            break
        size = min(2 * size, _MAX_CHUNK_DOCS)
        for ids in tokenizer(chunk, add_special_tokens=False)["input_ids"]:
            if stream and sep is not None:
                stream.append(sep)
            stream.extend(ids)
    return stream[:n_stream]


def token_sequences(
    tokenizer: PreTrainedTokenizerBase, paths: Sequence[Path], n_tokens: int, seq_len: int
) -> torch.Tensor:
    """Sequences covering at least ``n_tokens`` positions -> LongTensor [n_seq, seq_len].

    Each row starts with BOS when the tokenizer adds one normally, then ``seq_len - 1``
    stream tokens (else ``seq_len`` stream tokens). Rows are consecutive slices of the stream.
    """
    if n_tokens <= 0 or seq_len < 2:
        raise StatsError(f"need n_tokens > 0 and seq_len >= 2 (got {n_tokens}, {seq_len})")
    bos = adds_bos(tokenizer)
    body = seq_len - int(bos)
    n_seq = -(-n_tokens // seq_len)
    stream = token_stream(tokenizer, paths, n_seq * body)
    if len(stream) < n_seq * body:
        enough = (len(stream) // body) * seq_len
        names = ", ".join(p.name for p in paths)
        raise StatsError(
            f"the corpus ({names}) has only {len(stream)} tokens, enough for about {enough} "
            f"token vectors at sequence length {seq_len}, fewer than the {n_tokens} asked for; "
            "give a larger --corpus or fewer --tokens"
        )
    rows = torch.tensor(stream, dtype=torch.long).view(n_seq, body)
    if bos:
        first = torch.full((n_seq, 1), tokenizer.bos_token_id, dtype=torch.long)
        rows = torch.cat([first, rows], dim=1)
    return rows


def stream_tokens_used(tokenizer: PreTrainedTokenizerBase, n_tokens: int, seq_len: int) -> int:
    """How many stream tokens :func:`token_sequences` takes for ``n_tokens`` at ``seq_len``
    (the held-out text of :mod:`factedit.evaluate.perplexity` starts after them)."""
    return -(-n_tokens // seq_len) * (seq_len - int(adds_bos(tokenizer)))
