"""Corpus for second-moment statistics: find it, read it, turn it into token sequences.

    resolve_corpus(paths | None) -> [Path]           explicit > $FACTEDIT_CORPUS > bundled WikiText
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
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from factedit.errors import StatsError

CORPUS_ENV = "FACTEDIT_CORPUS"
DEFAULT_CORPUS = Path("shared") / "data" / "wikitext-2-raw-test.txt"
_HEADING = re.compile(r"^\s*=\s[^=].*\s=\s*$")
_MAX_CHUNK_DOCS = 256  # chunks grow 1, 2, 4, ... documents: little is tokenized in vain


def resolve_corpus(corpus: Sequence[str | Path] | None) -> list[Path]:
    """The corpus files to read: explicit paths, else ``$FACTEDIT_CORPUS``, else WikiText-2.

    The fallback is the first existing of ``./../shared/data/wikitext-2-raw-test.txt``
    (relative to the working directory) and the same path beside the repository root.
    """
    if corpus:
        paths = [Path(p).expanduser() for p in corpus]
        source = "--corpus"
    elif os.environ.get(CORPUS_ENV):
        paths = [Path(p).expanduser() for p in os.environ[CORPUS_ENV].split(os.pathsep) if p]
        source = f"${CORPUS_ENV}"
    else:
        for candidate in _default_candidates():
            if candidate.is_file():
                return [candidate]
        raise StatsError(
            "no corpus was given for the second-moment statistics and none is available "
            'offline; give one with --corpus FILE (.txt, or .jsonl with a "text" field), '
            f"the {CORPUS_ENV} environment variable, or hparams.corpus in the edit spec"
        )
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise StatsError(f"corpus file not found ({source}): {', '.join(missing)}")
    return paths


def _default_candidates() -> list[Path]:
    candidates = [Path.cwd() / ".." / DEFAULT_CORPUS]
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file():
            candidates.append(parent.parent / DEFAULT_CORPUS)
            break
    return candidates


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
