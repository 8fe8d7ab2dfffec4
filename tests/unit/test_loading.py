"""Model references resolve to clear errors when they cannot be loaded; the arch map."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from factedit.errors import ModelLoadError, UnsupportedArchitectureError
from factedit.models import ARCHITECTURES, load_model, resolve_architecture
from factedit.models.loading import verify_known_answer
from factedit.models.presets import KnownAnswer, list_presets
from factedit.testing import TINY_MODEL_TYPES
from factedit.tokens import target_token_ids


def test_presets_are_listed():
    presets = list_presets()
    assert {"gemma-3-270m", "smollm2-135m"} <= set(presets)
    assert all(p.edit_layer >= 0 for p in presets.values())


def test_unknown_model_names_presets():
    with pytest.raises(ModelLoadError, match="gemma-3-270m"):
        load_model("no-such-model", device="cpu")


def test_file_that_is_not_a_model(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ModelLoadError, match="not a model"):
        load_model(str(path), device="cpu")
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_model(str(tmp_path), device="cpu")


def test_corrupt_gguf_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("FACTEDIT_HOME", str(tmp_path / "home"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="could not be read as a GGUF"):
        load_model(str(bad), device="cpu")
    assert not list((tmp_path / "home" / "models").glob("gguf-*/config.json"))


def test_corrupt_safetensors_is_reported(tmp_path, tiny):
    lm = tiny("llama")
    lm.model.save_pretrained(tmp_path / "m")
    lm.tokenizer.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(ModelLoadError, match="cannot load model"):
        load_model(str(tmp_path / "m"), device="cpu")


def test_local_directory_round_trip(tmp_path, tiny):
    lm = tiny("qwen2")
    lm.model.save_pretrained(tmp_path / "m")
    lm.tokenizer.save_pretrained(tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"), device="cpu", dtype="bfloat16")
    assert loaded.arch.model_type == "qwen2"
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    assert loaded.identity.startswith("weights:")  # named by its weights, not its place


def test_bad_dtype_and_device():
    with pytest.raises(ModelLoadError, match="dtype"):
        load_model("gemma-3-270m", dtype="int3")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA"):
            load_model("gemma-3-270m", device="cuda")


def test_architecture_map_covers_required_types():
    assert set(TINY_MODEL_TYPES) <= set(ARCHITECTURES)


def test_unsupported_architecture_names_type_and_keys():
    config = AutoConfig.for_model("bloom", vocab_size=100, hidden_size=32, n_layer=2, n_head=4)
    model = AutoModelForCausalLM.from_config(config)
    with pytest.raises(UnsupportedArchitectureError) as err:
        resolve_architecture(model)
    assert '"bloom"' in str(err.value) and "down_proj" in str(err.value)
    arch = resolve_architecture(
        model,
        {
            "layers": "transformer.h",
            "mlp": "mlp",
            "down_proj": "mlp.dense_4h_to_h",
            "attn": "self_attention",
            "embed": "transformer.word_embeddings",
            "final_norm": "transformer.ln_f",
            "lm_head": "lm_head",
        },
    )
    assert arch.down_proj(1).weight.shape == (32, 128)


class _FixedAnswer(torch.nn.Module):
    """Stands in for a model: always predicts ``token`` next (logits [1, T, vocab])."""

    def __init__(self, token: int, vocab: int) -> None:
        super().__init__()
        self.token, self.vocab = token, vocab

    def forward(self, input_ids: torch.Tensor) -> SimpleNamespace:
        logits = torch.zeros(1, input_ids.shape[1], self.vocab)
        logits[0, -1, self.token] = 1.0
        return SimpleNamespace(logits=logits)


def test_a_conversion_that_forgot_a_known_fact_is_refused(bpe_tokenizer):
    check = KnownAnswer("The Eiffel Tower is located in the city of", " Paris")
    paris = target_token_ids(bpe_tokenizer, "Paris")[0]
    rome = target_token_ids(bpe_tokenizer, "Rome")[0]
    vocab = len(bpe_tokenizer)
    verify_known_answer(_FixedAnswer(paris, vocab), bpe_tokenizer, check, source="ok.gguf")
    with pytest.raises(ModelLoadError, match=r'bad\.gguf .* predicts .* instead of "Paris"'):
        verify_known_answer(_FixedAnswer(rome, vocab), bpe_tokenizer, check, source="bad.gguf")


def test_presets_carry_a_known_answer():
    for preset in list_presets().values():
        assert preset.check is not None and preset.check.answer.strip()


class _Payload:
    """Unpickling this writes a marker file: proof that a checkpoint was unpickled unsafely."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "executed"))


def test_a_pickled_checkpoint_is_never_unpickled_unsafely(tmp_path, tiny):
    lm = tiny("llama")
    model_dir = tmp_path / "m"
    lm.model.save_pretrained(model_dir)
    lm.tokenizer.save_pretrained(model_dir)
    (model_dir / "model.safetensors").unlink()
    marker = tmp_path / "marker"
    state = {k: v for k, v in lm.model.state_dict().items()}
    state["payload"] = _Payload(marker)
    torch.save(state, model_dir / "pytorch_model.bin")
    with pytest.raises(ModelLoadError):
        load_model(str(model_dir), device="cpu")
    assert not marker.exists()


def test_remote_code_is_off_unless_asked_and_the_hub_is_announced(tmp_path, monkeypatch, capsys):
    seen: list[bool] = []

    def fake(source, **kw):
        seen.append(kw["trust_remote_code"])
        raise OSError("stop here")

    monkeypatch.setattr("factedit.models.loading.AutoTokenizer.from_pretrained", fake)
    monkeypatch.delenv("FACTEDIT_QUIET", raising=False)
    for flag in (False, True):
        with pytest.raises(ModelLoadError):
            load_model("someone/some-model", device="cpu", trust_remote_code=flag)
    with pytest.raises(ModelLoadError):
        load_model("someone/some-model", device="cpu")
    assert seen == [False, True, False]
    assert "from the Hugging Face hub (network)" in capsys.readouterr().err


def test_spec_accepts_exactly_the_architecture_map_keys():
    """factedit.spec keeps its own copy of the keys (no torch import to validate a spec)."""
    from factedit.models.arch import ARCH_KEYS as MAP_KEYS
    from factedit.spec import ARCH_KEYS as SPEC_KEYS

    assert SPEC_KEYS == MAP_KEYS
