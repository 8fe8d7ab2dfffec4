"""Fixtures of the CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def tiny_llama(tiny, monkeypatch, corpus_path):
    """A tiny llama that every model load returns (its ``source_dir`` is the directory a
    command named, as a real load from a directory would set); C from the synthetic corpus."""
    lm = tiny("llama")

    def load(ref=None, *args, **kwargs):
        lm.source_dir = None if ref in (None, "tiny") else Path(ref)
        return lm

    monkeypatch.setattr("factedit.models.loading.load_model", load)
    monkeypatch.setenv("FACTEDIT_CORPUS", str(corpus_path))
    return lm
