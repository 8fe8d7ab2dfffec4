"""Weights have one name however they are loaded; the recorded edit layer follows them."""

from __future__ import annotations

import shutil

import torch

import factedit.models.presets as presets
from factedit.delta import apply_deltas
from factedit.models import load_model
from factedit.models.identity import weight_fingerprints
from factedit.models.presets import Preset
from factedit.testing import small_delta
from factedit.trace.recommend import resolve_layers


def _saved(lm, path):
    lm.model.save_pretrained(path)
    lm.tokenizer.save_pretrained(path)
    return path


def test_fingerprints_name_the_weights_not_the_place_or_the_dtype(tiny, tmp_path):
    lm = tiny("llama")
    first = _saved(lm, tmp_path / "a")
    copy = shutil.copytree(first, tmp_path / "elsewhere" / "b")
    a, b = load_model(str(first), device="cpu"), load_model(str(copy), device="cpu")
    assert a.identity == b.identity == f"weights:{weight_fingerprints(lm.model)[0]}"
    half = load_model(str(first), device="cpu", dtype="bfloat16")
    assert half.identity != a.identity  # other numbers: statistics are kept apart
    assert weight_fingerprints(half.model)[1] == weight_fingerprints(a.model)[1]
    other = tiny("llama", seed=1)
    assert weight_fingerprints(other.model) != weight_fingerprints(lm.model)


def test_an_edit_changes_the_exact_fingerprint(tiny):
    lm = tiny("gpt2")
    before = weight_fingerprints(lm.model)
    with apply_deltas(lm.model, [small_delta(lm, scale=1e-2)]):
        edited = weight_fingerprints(lm.model)
    assert edited[0] != before[0]
    assert weight_fingerprints(lm.model) == before  # reverted bit for bit


def test_layers_auto_gives_the_recorded_layer_however_the_weights_are_loaded(
    tiny, tmp_path, monkeypatch
):
    lm = tiny("llama")
    rounded = weight_fingerprints(lm.model)[1]
    recorded = Preset("tiny-preset", "", {"kind": "pip-package"}, edit_layer=2, weights=rounded)
    monkeypatch.setattr(presets, "list_presets", lambda: {"tiny-preset": recorded})
    first = _saved(lm, tmp_path / "a")
    copy = shutil.copytree(first, tmp_path / "b")
    for source, dtype in ((first, "float32"), (copy, "float32"), (first, "bfloat16")):
        loaded = load_model(str(source), device="cpu", dtype=dtype)
        assert (loaded.default_layer, loaded.preset) == (2, "tiny-preset")
        layers, why = resolve_layers(loaded, "auto", [])
        assert layers == (2,) and "recorded for these weights by preset tiny-preset" in why
    unrelated = load_model(str(_saved(tiny("llama", seed=1), tmp_path / "c")), device="cpu")
    assert unrelated.default_layer is None and unrelated.preset is None


def test_fingerprint_skips_values_that_are_not_in_memory(tiny):
    lm = tiny("llama")
    sd_names = list(lm.model.state_dict())
    with torch.device("meta"):
        ghost = type(lm.model)(lm.model.config)
    fp_ghost = weight_fingerprints(ghost)
    assert fp_ghost != weight_fingerprints(lm.model)
    assert list(ghost.state_dict()) == sd_names
