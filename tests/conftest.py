"""Shared fixtures: data paths, offline tokenizers, tiny random models, real models.

Benchmark data (``data_file(name)``, ``wikitext_path``) comes from ``$FACTEDIT_DATA`` or
``<repo>/../shared/data``; a test that needs a missing file is skipped with one line naming it.
The tiny tokenizers and the ``corpus_path`` statistics corpus are synthetic and need no data.

Real models (marker ``real``) load through the normal preset path into a persistent test
cache (``$FACTEDIT_TEST_HOME``, default ``<repo>/.test-home``) so they are fetched and
dequantised once per machine; everything else runs offline in seconds.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Where the benchmark data (CounterFact, zsRE, known facts, WikiText-2) is looked for unless
#: ``$FACTEDIT_DATA`` names another folder: ``../shared/data`` beside the repository.
DEFAULT_DATA = REPO.parent / "shared" / "data"
DATA_ENV = "FACTEDIT_DATA"
#: Articles in the synthetic statistics corpus (about 120,000 characters, 40,000 tokens).
CORPUS_ARTICLES = 100
TEST_HOME = Path(os.environ.get("FACTEDIT_TEST_HOME", REPO / ".test-home"))
os.environ["FACTEDIT_HOME"] = str(TEST_HOME)
os.environ.setdefault("FACTEDIT_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def data_root() -> Path:
    """The benchmark data folder: ``$FACTEDIT_DATA`` when set, else :data:`DEFAULT_DATA`."""
    value = os.environ.get(DATA_ENV)
    return Path(value).expanduser() if value else DEFAULT_DATA


def data_path(name: str) -> Path:
    """The benchmark file ``name`` in :func:`data_root`; skips the calling test (or fixture)
    with one line naming the missing file and how to provide it."""
    path = data_root() / name
    if not path.is_file():
        pytest.skip(
            f"benchmark data not found: {path} (set {DATA_ENV} to the folder holding it; "
            'see README "Tests")'
        )
    return path


@pytest.fixture(scope="session")
def data_file():
    """``data_file("counterfact-dev.json")``: that benchmark file's path (see
    :func:`data_path`), or the test is skipped. Call it from a fixture: pytest then reports
    the skip at the test, not at this file."""
    return data_path


@pytest.fixture(scope="session")
def wikitext_path() -> Path:
    """The real WikiText-2 test split (benchmark data): statistics for the real models."""
    return data_path("wikitext-2-raw-test.txt")


@pytest.fixture(scope="session")
def corpus_path(tmp_path_factory) -> Path:
    """A synthetic corpus file in raw WikiText-2 layout (headings, blank-line paragraphs),
    written once per session from :mod:`factedit.testing.corpus`: no data needed."""
    from factedit.testing.corpus import write_corpus

    path = tmp_path_factory.mktemp("corpus") / "synthetic-wikitext.txt"
    return write_corpus(path, CORPUS_ARTICLES, seed=1)


@pytest.fixture(scope="session")
def bpe_tokenizer():
    """The tiny GPT-2 style byte-level BPE (trained on the packaged synthetic text)."""
    from factedit.testing import byte_bpe_tokenizer

    return byte_bpe_tokenizer()


@pytest.fixture(scope="session")
def sp_tokenizer():
    """The tiny Llama/SentencePiece style tokenizer (trained on the packaged synthetic text)."""
    from factedit.testing import sentencepiece_tokenizer

    return sentencepiece_tokenizer()


@pytest.fixture
def tiny(bpe_tokenizer):
    """Factory: ``tiny("llama")`` -> a random LoadedModel with ~0.3M parameters."""
    from factedit.testing import tiny_model

    def make(model_type: str, **kw):
        lm = tiny_model(model_type, bpe_tokenizer, **kw)
        assert sum(p.numel() for p in lm.model.parameters()) < 2_000_000
        return lm

    return make


_REAL: dict[str, object] = {}


def load_real(name: str):
    """A real preset model, loaded once per test session (marker ``real``)."""
    if name not in _REAL:
        from factedit.models import load_model

        _REAL[name] = load_model(name, device="cpu")
    return _REAL[name]


@pytest.fixture(scope="session")
def gemma():
    return load_real("gemma-3-270m")


@pytest.fixture(scope="session")
def smollm():
    return load_real("smollm2-135m")


# ---- failing writes (full disk, Ctrl-C) ---------------------------------------------------


class _FailingFile:
    """A file whose first ``write`` stores half the data, then raises ``exc``."""

    def __init__(self, fh, exc: BaseException) -> None:
        self._fh, self._exc = fh, exc

    def write(self, data):
        self._fh.write(data[: len(data) // 2])
        self._fh.flush()
        raise self._exc

    def __getattr__(self, name: str):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


def disk_full_error() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def failing_writes(monkeypatch):
    """``failing_writes(exc, path=None)``: from then on, each file written through
    ``factedit.paths`` (only ``path``'s, when given) receives half of its first write, then
    ``exc`` is raised (default: ENOSPC, a full disk; ``KeyboardInterrupt()``: Ctrl-C)."""
    import factedit.paths

    real_mkstemp, real_fdopen = tempfile.mkstemp, os.fdopen
    temporaries: dict[int, Path] = {}

    def mkstemp(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        temporaries[fd] = Path(name)
        return fd, name

    def arm(exc: BaseException | None = None, path: Path | None = None) -> None:
        error = exc if exc is not None else disk_full_error()

        def fdopen(fd, *args, **kwargs):
            fh = real_fdopen(fd, *args, **kwargs)
            tmp = temporaries.pop(fd, None)
            targeted = path is None or (
                tmp is not None
                and tmp.parent == path.parent
                and tmp.name.startswith(f".{path.name}.")
            )
            return _FailingFile(fh, error) if targeted else fh

        monkeypatch.setattr(factedit.paths.tempfile, "mkstemp", mkstemp)
        monkeypatch.setattr(factedit.paths.os, "fdopen", fdopen)

    return arm


@pytest.fixture
def snapshot():
    """``snapshot(path)``: {relative path: bytes} of a file or of every file under a directory,
    to assert that a failed write left the previous output byte-identical."""

    def take(path: Path) -> dict[str, bytes]:
        if path.is_file():
            return {".": path.read_bytes()}
        return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}

    return take


@pytest.fixture
def leftovers():
    """``leftovers(directory)``: hidden temporaries (``.NAME.*.tmp``, ``.NAME.old``) left there."""

    def find(directory: Path) -> list[str]:
        return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))

    return find


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh FACTEDIT_HOME and an empty in-process memo of the statistics."""
    from factedit.stats import clear_memo

    path = tmp_path / "home"
    monkeypatch.setenv("FACTEDIT_HOME", str(path))
    clear_memo()
    yield path
    clear_memo()


@pytest.fixture
def one_thread():
    """One torch thread for tests of many tiny forward passes: on a shared 2-core box, extra
    threads only oversubscribe (up to 10x slower). Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
