"""Patches: the file round trip, the checks that refuse what does not fit, exact revert,
merging and state composition, and the PEFT export (logits against the patched model)."""

from __future__ import annotations

import json

import pytest
import torch

from factedit.delta import AppliedDeltas, WeightDelta
from factedit.errors import PatchError
from factedit.patch import Patch
from factedit.patch.compose import compose_states, merge
from factedit.patch.fingerprint import tensor_sha256
from factedit.patch.peft_export import export_peft


def _delta(lm, layer: int, rank: int = 1, seed: int = 0, scale: float = 1e-2) -> WeightDelta:
    name = lm.arch.down_proj_weight_name(layer)
    rows, cols = lm.model.get_parameter(name).shape
    g = torch.Generator().manual_seed(seed)
    left = torch.randn(rows, rank, generator=g) * scale
    return WeightDelta(name, left, torch.randn(cols, rank, generator=g), {"layer": layer})


def _make(lm, deltas, **kw) -> Patch:
    """A patch of ``deltas`` made the way a session makes one: applied, then recorded."""
    applied = AppliedDeltas(lm.model)
    for d in deltas:
        applied.add(d)
    before = {name: applied.original(name) for name in applied.params}
    patch = Patch.from_deltas(lm, deltas, before, method="test", layers=[1], **kw)
    applied.revert()
    return patch


def _weights(lm) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in lm.model.named_parameters()}


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_round_trip_keeps_deltas_provenance_and_is_small(tiny, tmp_path):
    lm = tiny("llama")
    patch = _make(lm, [_delta(lm, 1)], edits=[{"subject": "Eiffel Tower"}])
    size = patch.save(tmp_path / "p.safetensors")
    assert size == (tmp_path / "p.safetensors").stat().st_size < 8_000
    back = Patch.load(tmp_path / "p.safetensors")
    (d,) = back.deltas
    assert torch.equal(d.dense(), patch.deltas[0].dense()) and d.meta == {"layer": 1}
    base = back.info["base"]
    assert base["model_type"] == "llama" and len(base["config_sha256"]) == 64
    name = lm.arch.down_proj_weight_name(1)
    assert base["tensors"][name]["sha256"] == tensor_sha256(lm.model.get_parameter(name))
    assert base["tensors"][name]["module"] == "Linear"
    assert back.info["edits"] == [{"subject": "Eiffel Tower"}] and back.info["factedit"]


def test_a_delta_above_half_rank_is_stored_dense_and_round_trips(tiny, tmp_path):
    lm = tiny("llama")
    name = lm.arch.down_proj_weight_name(1)
    rows, cols = lm.model.get_parameter(name).shape
    wide = _delta(lm, 1, rank=min(rows, cols))
    patch = _make(lm, [wide])
    patch.save(tmp_path / "p.safetensors")
    listed = json.loads(_header(tmp_path / "p.safetensors")["factedit.deltas"])
    assert listed[0]["kind"] == "dense"
    back = Patch.load(tmp_path / "p.safetensors")
    assert torch.allclose(back.deltas[0].dense(), wide.dense(), atol=1e-6)


def _header(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return fh.metadata()


def test_apply_and_revert_in_process_are_bit_exact(tiny, tmp_path):
    lm = tiny("llama")
    original = _weights(lm)
    patch = _make(lm, [_delta(lm, 1), _delta(lm, 2, seed=1)])
    with patch.applied(lm):
        name = lm.arch.down_proj_weight_name(1)
        assert not torch.equal(lm.model.get_parameter(name), original[name])
        assert tensor_sha256(lm.model.get_parameter(name)) == patch.info["after"][name]
    assert _same(original, _weights(lm))
    with pytest.raises(RuntimeError, match="inside"), patch.applied(lm):
        raise RuntimeError("inside")
    assert _same(original, _weights(lm)), "reverted on an exception too"


@pytest.mark.parametrize("keep", [True, False])
def test_revert_from_a_loaded_patch(tiny, tmp_path, keep):
    lm = tiny("llama")
    original = _weights(lm)
    _make(lm, [_delta(lm, 1, scale=0.3)], keep_original=keep).save(tmp_path / "p.safetensors")
    Patch.load(tmp_path / "p.safetensors").apply(lm)
    fresh = Patch.load(tmp_path / "p.safetensors")  # as in another process: no handle
    exact = fresh.revert(lm)
    name = lm.arch.down_proj_weight_name(1)
    now = lm.model.get_parameter(name)
    if keep:
        assert exact and _same(original, _weights(lm))
    else:
        assert torch.allclose(now, original[name], atol=1e-6)
        assert exact == torch.equal(now, original[name])
    with pytest.raises(PatchError, match="does not carry this patch"):
        fresh.revert(lm)


def test_tampered_and_truncated_files_are_refused(tiny, tmp_path):
    lm = tiny("llama")
    path = tmp_path / "p.safetensors"
    _make(lm, [_delta(lm, 1)]).save(path)
    data = bytearray(path.read_bytes())
    flipped = tmp_path / "flipped.safetensors"
    data[-3] ^= 0x40  # a byte of the last tensor
    flipped.write_bytes(bytes(data))
    with pytest.raises(PatchError, match="checksum mismatch"):
        Patch.load(flipped)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(PatchError, match="not a readable patch"):
        Patch.load(cut)
    with pytest.raises(PatchError, match="no such patch"):
        Patch.load(tmp_path / "missing.safetensors")


def test_another_model_or_a_changed_weight_is_refused_unless_forced(tiny, capsys):
    lm = tiny("llama")
    patch = _make(lm, [_delta(lm, 1)])
    other_arch = tiny("qwen2")
    with pytest.raises(PatchError, match="for a llama model, this one is qwen2"):
        patch.apply(other_arch)
    other_weights = tiny("llama", seed=7)
    before = _weights(other_weights)
    with pytest.raises(PatchError, match="differs from the weight the patch was made on"):
        patch.apply(other_weights)
    assert _same(before, _weights(other_weights)), "nothing applied"
    conflicting = AppliedDeltas(lm.model)
    conflicting.add(_delta(lm, 1, seed=5))
    with pytest.raises(PatchError, match="already carries an edit"):
        patch.apply(lm)
    carrying = _weights(lm)
    patch.apply(lm, force=True)
    assert "applying anyway (--force)" in capsys.readouterr().err
    assert not _same(carrying, _weights(lm))
    patch.revert(lm)
    assert _same(carrying, _weights(lm))
    conflicting.revert()


def test_merge_applies_as_one_after_the_other(tiny, tmp_path):
    lm = tiny("llama")
    original = _weights(lm)
    first = _make(lm, [_delta(lm, 1)])
    first.apply(lm)
    second = _make(lm, [_delta(lm, 1, seed=3), _delta(lm, 2, seed=4)])  # made on the first
    second.apply(lm)
    both = _weights(lm)
    second.revert(lm)
    first.revert(lm)
    assert _same(original, _weights(lm))
    merged = merge([first, second])
    merged.save(tmp_path / "m.safetensors")
    Patch.load(tmp_path / "m.safetensors").apply(lm)
    assert _same(both, _weights(lm))
    independent = _make(lm, [_delta(lm, 1, seed=9)])  # on the model carrying the merge
    with pytest.raises(PatchError, match="not made on the result"):
        merge([independent, first])


def _state(n: int, before: int, value: float) -> tuple:
    grams = {"gram.1": torch.full((2, 2), value, dtype=torch.float64)}
    return grams, {"method": "alphaedit", "layers": [1], "n_edits": n, "n_edits_before": before}


def test_sequential_states_compose_continue_or_add():
    continued = compose_states([_state(2, 0, 1.0), _state(5, 2, 3.0)])
    assert continued[1]["n_edits"] == 5 and torch.equal(
        continued[0]["gram.1"], torch.full((2, 2), 3.0, dtype=torch.float64)
    )
    added = compose_states([_state(2, 0, 1.0), None, _state(3, 0, 2.0)])
    assert added[1]["n_edits"] == 5 and float(added[0]["gram.1"][0, 0]) == 3.0
    with pytest.raises(PatchError, match="continues a stream of 4 edits"):
        compose_states([_state(2, 0, 1.0), _state(6, 4, 1.0)])
    other = ({"gram.2": torch.zeros(2, 2)}, {**_state(1, 0, 0)[1], "layers": [2]})
    with pytest.raises(PatchError, match="cannot be joined"):
        compose_states([_state(2, 0, 1.0), other])


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_peft_export_reproduces_the_patched_logits(tiny, tmp_path, model_type):
    peft = pytest.importorskip("peft")
    lm = tiny(model_type)
    patch = _make(lm, [_delta(lm, 1, rank=2, scale=0.2), _delta(lm, 1, seed=2), _delta(lm, 2)])
    config = export_peft(patch, tmp_path / "adapter")
    assert config["r"] == 3 and config["fan_in_fan_out"] == (model_type == "gpt2")
    ids = torch.tensor([[1, 5, 9, 14, 3, 7]])
    unedited = lm.model(ids).logits
    with patch.applied(lm):
        patched = lm.model(ids).logits
    assert not torch.allclose(patched, unedited, atol=1e-4)
    adapted = peft.PeftModel.from_pretrained(lm.model, str(tmp_path / "adapter"))
    with torch.no_grad():
        served = adapted(input_ids=ids).logits
    assert torch.allclose(served, patched, atol=1e-5), (served - patched).abs().max()
