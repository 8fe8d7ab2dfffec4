"""`factedit edit apply --patch`, `factedit patch ...` and `factedit generate --patch` through
Typer's CliRunner, on tiny random models saved as real model directories."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from factedit.cli.main import app
from factedit.delta import AppliedDeltas, WeightDelta
from factedit.models import load_model
from factedit.patch import Patch

SPEC = """
model: tiny
layers: [1]
hparams: {mom2_n_tokens: 2000, v_num_grad_steps: 4, context_templates_per_length: 2}
edits:
  - subject: Eiffel Tower
    prompt: "The {} is located in the city of"
    target_new: Rome
    target_true: Paris
"""


def _run(*args: str, code: int = 0):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result


def _saved(lm, path):
    lm.model.save_pretrained(path)
    lm.tokenizer.save_pretrained(path)
    return path


def _weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


@pytest.fixture
def base_dir(tiny, tmp_path):
    return _saved(tiny("llama"), tmp_path / "base")


def _patch_for(model_dir, path, *, seed=0, keep_original=True):
    """A one-delta patch made on the model in ``model_dir`` (loaded the way the CLI loads it)."""
    lm = load_model(str(model_dir), device="cpu")
    name = lm.arch.down_proj_weight_name(1)
    rows, cols = lm.model.get_parameter(name).shape
    g = torch.Generator().manual_seed(seed)
    delta = WeightDelta(
        name, torch.randn(rows, 1, generator=g) * 0.05, torch.randn(cols, 1, generator=g)
    )
    applied = AppliedDeltas(lm.model)
    applied.add(delta)
    patch = Patch.from_deltas(
        lm,
        [delta],
        {name: applied.original(name)},
        keep_original=keep_original,
        model=lm.name,
        method="rome",
        layers=[1],
        edits=[{"subject": "Eiffel Tower", "prompt": "The {} is in", "target_new": "Rome"}],
    )
    patch.save(path)
    return lm, name


def test_edit_apply_writes_a_small_patch_that_show_describes(tiny_llama, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    patch_path = tmp_path / "eiffel.patch.safetensors"
    result = _run("edit", "apply", str(spec), "--patch", str(patch_path), "--keep-original")
    assert "wrote the patch" in result.output
    patch = Patch.load(patch_path)
    assert patch.info["method"] == "rome" and patch.info["edits"][0]["target_new"] == "Rome"
    assert patch.info["evaluation"]["edits"] == 1 and "after" in patch.info["evaluation"]
    assert set(patch.originals) == {tiny_llama.arch.down_proj_weight_name(1)}
    shown = json.loads(_run("patch", "show", str(patch_path), "--json").stdout)
    (weight,) = shown["weights"]
    assert weight["rank"] == 1 and weight["layer"] == 1
    assert weight["relative_norm"] == pytest.approx(patch.deltas[0].meta["relative_norm"], rel=1e-4)
    assert "Eiffel Tower" in _run("patch", "show", str(patch_path)).output


def test_apply_then_revert_round_trips_bit_for_bit(base_dir, tmp_path):
    patch_path = tmp_path / "p.safetensors"
    lm, name = _patch_for(base_dir, patch_path)
    patched_dir, reverted_dir = tmp_path / "patched", tmp_path / "reverted"
    _run("patch", "apply", str(patch_path), "--model", str(base_dir), "--out", str(patched_dir))
    expected = dict(lm.model.named_parameters())[name]  # the in-process application
    assert torch.equal(_weights(patched_dir)[name], expected)
    carried = Patch.load(patched_dir / "factedit-patch.safetensors")
    assert len(carried.deltas) == 1
    result = _run(
        "patch", "revert", str(patch_path), "--model", str(patched_dir), "--out", str(reverted_dir)
    )
    assert "bit for bit" in result.output
    base, reverted = _weights(base_dir), _weights(reverted_dir)
    assert all(torch.equal(base[k], reverted[k]) for k in base)


def test_bad_patches_are_refused_with_one_line_and_nothing_written(base_dir, tiny, tmp_path):
    patch_path = tmp_path / "p.safetensors"
    _patch_for(base_dir, patch_path)
    tampered = tmp_path / "tampered.safetensors"
    data = bytearray(patch_path.read_bytes())
    data[-5] ^= 0x01
    tampered.write_bytes(bytes(data))
    out = tmp_path / "out"
    result = _run(
        "patch", "apply", str(tampered), "--model", str(base_dir), "--out", str(out), code=2
    )
    assert "checksum mismatch" in result.output and not out.exists()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(patch_path.read_bytes()[:200])
    result = _run("patch", "show", str(truncated), code=2)
    assert result.output.count("error:") == 1 and "not a readable patch" in result.output
    other = _saved(tiny("qwen2"), tmp_path / "qwen")
    result = _run(
        "patch", "apply", str(patch_path), "--model", str(other), "--out", str(out), code=2
    )
    assert "for a llama model, this one is qwen2" in result.output and not out.exists()
    # the same model already carrying another edit of that weight
    conflicting = tmp_path / "conflicting.safetensors"
    _patch_for(base_dir, conflicting, seed=3)
    patched = tmp_path / "patched"
    _run("patch", "apply", str(conflicting), "--model", str(base_dir), "--out", str(patched))
    result = _run(
        "patch", "apply", str(patch_path), "--model", str(patched), "--out", str(out), code=2
    )
    assert "already carries an edit" in result.output and not out.exists()
    result = _run(
        "patch", "apply", str(patch_path), "--model", str(patched), "--out", str(out), "--force"
    )
    assert "applying anyway (--force)" in result.output and out.is_dir()


def test_merge_export_and_generate(base_dir, tmp_path):
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    _patch_for(base_dir, first)
    once = tmp_path / "once"
    _run("patch", "apply", str(first), "--model", str(base_dir), "--out", str(once))
    _patch_for(once, second, seed=4)  # made on the model carrying the first
    merged = tmp_path / "ab.safetensors"
    _run("patch", "merge", str(first), str(second), "--out", str(merged))
    twice, via_merge = tmp_path / "twice", tmp_path / "via-merge"
    _run("patch", "apply", str(first), str(second), "--model", str(base_dir), "--out", str(twice))
    _run("patch", "apply", str(merged), "--model", str(base_dir), "--out", str(via_merge))
    a, b = _weights(twice), _weights(via_merge)
    assert all(torch.equal(a[k], b[k]) for k in a)
    _run("patch", "merge", str(second), str(first), "--out", str(tmp_path / "x"), code=2)

    adapter = tmp_path / "adapter"
    _run("patch", "export", str(merged), "--format", "peft", "--out", str(adapter))
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 2
    assert config["target_modules"] == ["model.layers.1.mlp.down_proj"]

    result = _run(
        "generate",
        "--model",
        str(base_dir),
        "--patch",
        str(first),
        "The Eiffel Tower is in",
        "--compare",
        "--max-new-tokens",
        "4",
    )
    assert "without the patch" in result.output and "a.safetensors" in result.output
