"""Which corpus the second-moment statistics C use, decided without loading anything.

    choice = choose_corpus(None)      # CorpusChoice(kind="model", reason="offline ...", ...)
    choice = check_corpus(cli_corpus, spec.hparams)   # the same, for a command, up front
    choice.describe()                 # one line for a person

Order when no corpus is named:

1. ``--corpus FILE ...`` (or ``hparams.corpus`` in an edit spec); ``--corpus model`` (the
   string ``model``) asks for the model-sampled corpus explicitly;
2. ``$FACTEDIT_CORPUS`` (paths joined by ``os.pathsep``, or ``model``);
3. WikiText-103 (raw, train split) already downloaded under ``$FACTEDIT_HOME/corpora/``;
4. WikiText-103 downloaded now, when online: neither ``HF_HUB_OFFLINE`` nor
   ``HF_DATASETS_OFFLINE`` is set and the ``datasets`` package is installed. Only the head of
   the split is read (streaming) and written once as a plain text file (:data:`WIKITEXT_TIERS`);
5. text sampled from the model itself (:mod:`factedit.stats.sampled`), cached per model.

This module imports neither torch nor ``datasets`` (the CLI calls :func:`choose_corpus`
before any model is loaded, so a missing file fails in a second, not after a download).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factedit.errors import OutputWriteError, StatsError
from factedit.paths import atomic_file, cache_dir

CORPUS_ENV = "FACTEDIT_CORPUS"
MODEL = "model"
OFFLINE_ENVS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
WIKITEXT = ("Salesforce/wikitext", "wikitext-103-raw-v1", "train")
#: Sizes (characters) of the WikiText-103 head written to disk: the smallest that holds
#: ``CHARS_PER_TOKEN`` characters per requested token vector (2 M chars ≈ 450 k tokens).
WIKITEXT_TIERS = (2_000_000, 8_000_000, 32_000_000, 128_000_000, 512_000_000)
CHARS_PER_TOKEN = 8
#: Token vectors per statistic: any text corpus, and the model-sampled corpus (sampling costs
#: ~4 min per 50k tokens on a 2-core CPU; median cos(u_50k, u_100k) = 0.97, measured in
#: :mod:`factedit.stats.sampled`). An explicit count (--tokens, hparams.mom2_n_tokens) wins.
DEFAULT_N_TOKENS = 100_000
SAMPLED_N_TOKENS = 50_000

HOW_TO_GIVE_ONE = (
    'give one with --corpus FILE (.txt, or .jsonl with a "text" field), the '
    f"{CORPUS_ENV} environment variable or hparams.corpus in the edit spec; or, while online, "
    "`pip install datasets` to download WikiText-103 once (a few MB); or --corpus model to "
    "sample one from the model itself (works offline)"
)


@dataclass(frozen=True)
class CorpusChoice:
    """The corpus that will be used.

    ``kind``: ``"files"`` (given paths), ``"wikitext"`` (``paths[0]``, maybe not downloaded
    yet: ``download``) or ``"model"`` (sampled once the model is loaded; ``paths`` empty).
    ``source`` says where the choice came from, ``reason`` why (for the info line).
    """

    kind: str
    paths: tuple[Path, ...]
    source: str
    reason: str
    download: bool = False

    def describe(self) -> str:
        if self.kind == "files":
            return f"corpus ({self.source}): {', '.join(str(p) for p in self.paths)}"
        if self.kind == "wikitext":
            verb = "downloading the head of" if self.download else "cached"
            return f"corpus: WikiText-103 ({verb} {self.paths[0]}; {self.reason})"
        return f"corpus: sampled from the model itself ({self.reason})"


def effective_corpus(
    corpus: Sequence[str | Path] | None, hparams: Mapping[str, Any] | None = None
) -> list[str | Path] | None:
    """``--corpus`` values, else the spec's ``hparams.corpus`` (a string), else None."""
    if corpus:
        return list(corpus)
    value = (hparams or {}).get("corpus")
    return [value] if value else None


def check_corpus(
    corpus: Sequence[str | Path] | None, hparams: Mapping[str, Any] | None = None
) -> CorpusChoice:
    """The up-front check for a command: the choice for ``--corpus`` values, else the spec's
    ``hparams.corpus`` (and its ``mom2_n_tokens``). Cheap; raises :class:`StatsError` (with
    what to do) for a named file that does not exist, before any model is loaded."""
    n_tokens = (hparams or {}).get("mom2_n_tokens")
    source = "--corpus" if corpus else "hparams.corpus"
    return choose_corpus(effective_corpus(corpus, hparams), n_tokens=n_tokens, source=source)


def choose_corpus(
    corpus: Sequence[str | Path] | None = None,
    *,
    n_tokens: int | None = None,
    source: str = "--corpus",
) -> CorpusChoice:
    """The corpus for ``n_tokens`` token vectors (default :data:`DEFAULT_N_TOKENS`), cheaply.

    Reads only the environment and the file system. Raises :class:`StatsError` for a named
    file that does not exist. ``source`` names where ``corpus`` came from (in messages).
    """
    if corpus:
        return _named([str(p) for p in corpus], source)
    if os.environ.get(CORPUS_ENV):
        return _named([p for p in os.environ[CORPUS_ENV].split(os.pathsep) if p], f"${CORPUS_ENV}")
    n_tokens = n_tokens or DEFAULT_N_TOKENS
    cached = next((p for p in _wikitext_paths(n_tokens) if p.is_file()), None)
    if cached is not None:
        return CorpusChoice("wikitext", (cached,), "cache", "downloaded earlier")
    offline = [name for name in OFFLINE_ENVS if _truthy(os.environ.get(name))]
    if not offline and datasets_available():
        path = wikitext_path(n_tokens)
        return CorpusChoice("wikitext", (path,), "download", "online", download=True)
    why = (
        f"{'/'.join(offline)}=1"
        if offline
        else "the datasets package is not installed (`pip install datasets` to use it)"
    )
    return CorpusChoice(
        "model", (), "fallback", f"no --corpus or ${CORPUS_ENV}, no WikiText-103: {why}"
    )


def _named(values: list[str], source: str) -> CorpusChoice:
    if values == [MODEL]:
        return CorpusChoice("model", (), source, f"asked for with {source}")
    paths = tuple(Path(p).expanduser() for p in values)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise StatsError(
            f"corpus file not found ({source}): {', '.join(missing)}; {HOW_TO_GIVE_ONE}"
        )
    return CorpusChoice("files", paths, source, f"given with {source}")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def datasets_available() -> bool:
    """Whether ``import datasets`` would find the package (it is not imported here)."""
    if sys.modules.get("datasets") is not None:
        return True
    try:
        return importlib.util.find_spec("datasets") is not None
    except (ImportError, ValueError):
        return False


def default_n_tokens(choice: CorpusChoice) -> int:
    """Token vectors per statistic when none are asked for: fewer for a sampled corpus."""
    return SAMPLED_N_TOKENS if choice.kind == "model" else DEFAULT_N_TOKENS


def wikitext_path(n_tokens: int) -> Path:
    """Where the smallest WikiText-103 head large enough for ``n_tokens`` token vectors is
    (or will be) kept."""
    return _wikitext_paths(n_tokens)[0]


def _wikitext_paths(n_tokens: int) -> list[Path]:
    """The heads large enough for ``n_tokens`` vectors, smallest first (the largest if none)."""
    need = n_tokens * CHARS_PER_TOKEN
    sizes = [t for t in WIKITEXT_TIERS if t >= need] or [WIKITEXT_TIERS[-1]]
    root = cache_dir("corpora")
    return [root / f"wikitext-103-raw-v1-train-{size // 1_000_000}M.txt" for size in sizes]


def download_wikitext(path: Path) -> Path:
    """Write the first ``<size>`` characters of WikiText-103 (raw, train) to ``path``.

    Streams the split and stops at the first article heading after the size is reached, so
    only the head is downloaded. Raises :class:`StatsError` when ``datasets`` is missing or
    the download fails (the caller falls back to the model-sampled corpus).
    """
    size = int(path.stem.rsplit("-", 1)[-1].removesuffix("M")) * 1_000_000
    try:
        import datasets
    except ImportError as exc:
        raise StatsError(f"the datasets package cannot be imported ({exc})") from None
    try:
        records = datasets.load_dataset(*WIKITEXT[:2], split=WIKITEXT[2], streaming=True)
        with atomic_file(path, "wb") as fh:
            written = 0
            for record in records:
                text = record["text"] or "\n"
                if written >= size and text.startswith(" = ") and not text.startswith(" = = "):
                    break
                fh.write(text.encode("utf-8"))
                written += len(text)
    except OutputWriteError:
        raise
    except Exception as exc:  # network, hub, parsing: anything the download can raise
        raise StatsError(f"could not download WikiText-103 ({type(exc).__name__}: {exc})") from exc
    return path
