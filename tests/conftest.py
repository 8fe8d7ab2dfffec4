"""Shared fixtures: data paths, offline tokenizers, tiny random models, real models.

Real models (marker ``real``) load through the normal preset path into a persistent test
cache (``$FACTEDIT_TEST_HOME``, default ``<repo>/.test-home``) so they are fetched and
dequantised once per machine; everything else runs offline in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
TEST_HOME = Path(os.environ.get("FACTEDIT_TEST_HOME", REPO / ".test-home"))
os.environ["FACTEDIT_HOME"] = str(TEST_HOME)
os.environ.setdefault("FACTEDIT_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"benchmark data not found at {DATA}")
    return DATA


@pytest.fixture(scope="session")
def corpus_path(data_dir: Path) -> Path:
    return data_dir / "wikitext-2-raw-test.txt"


@pytest.fixture(scope="session")
def bpe_tokenizer():
    from factedit.testing import byte_bpe_tokenizer

    return byte_bpe_tokenizer(DATA / "wikitext-2-raw-test.txt")


@pytest.fixture(scope="session")
def sp_tokenizer():
    from factedit.testing import sentencepiece_tokenizer

    return sentencepiece_tokenizer(DATA / "wikitext-2-raw-test.txt")


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
