"""Load a model from a preset name, a Hugging Face hub id, a local directory or a ``.gguf``.

GGUF weights are dequantised once (transformers, ~40-100 s on 2 cores) and cached as a plain
Hugging Face directory in safetensors under ``$FACTEDIT_HOME/models/gguf-<sha>/``, so later
loads take about a second. Weights are read from safetensors or GGUF only (a ``.bin`` goes
through ``torch.load(weights_only=True)`` inside transformers); ``trust_remote_code`` is off
unless asked for.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from factedit.console import info
from factedit.errors import FactEditError, ModelLoadError
from factedit.models.arch import Architecture, resolve_architecture
from factedit.models.identity import weight_fingerprints
from factedit.models.presets import (
    DEFAULT_MODEL,
    IDENTITY_FILE,
    KnownAnswer,
    Preset,
    fetch_preset,
    get_preset,
    list_presets,
    preset_for_weights,
    sha256_file,
)
from factedit.paths import atomic_dir, atomic_write_text, cache_dir
from factedit.threads import use_given_cores
from factedit.tokens import prompt_token_ids, target_token_ids

if TYPE_CHECKING:
    from factedit.spec import EditSpec

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    """A model ready for tracing and editing.

    ``identity`` names the exact weights, however they were loaded (``weights:<hash>``, see
    :mod:`factedit.models.identity`; the key of statistics, templates and traces); while
    factedit deltas are applied it names them too (``weights:<hash>+edits:<digest>``, see
    :func:`factedit.delta.applied_digest`), so nothing computed on an edited model is cached
    under the unedited model's key. ``base_identity`` is the weights as loaded.
    ``default_layer`` is the edit layer recorded for these weights by the preset ``preset``
    whose weights they are (None for other weights), ``default_window`` the layer window
    it records for the multi-layer methods (MEMIT, AlphaEdit, EMMET) and
    ``default_memit_hparams`` their hyper-parameters recorded for these weights (the spec's
    ``hparams:`` override them). ``source_dir`` is
    the local model directory it was read from (where a saved edit state may lie), if any.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    arch: Architecture
    name: str
    base_identity: str
    default_layer: int | None = None
    preset: str | None = None
    default_window: tuple[int, ...] | None = None
    default_memit_hparams: Mapping[str, Any] | None = None
    source_dir: Path | None = None

    @property
    def identity(self) -> str:
        from factedit.delta import applied_digest

        edits = applied_digest(self.model)
        return self.base_identity if edits is None else f"{self.base_identity}+edits:{edits}"

    @property
    def device(self) -> torch.device:
        """Where inputs go: the input embedding's device (with a device map, the device its
        accelerate hook runs it on, which moves activations on from there)."""
        embed = self.arch.embed()
        hook_device = getattr(getattr(embed, "_hf_hook", None), "execution_device", None)
        if hook_device is not None:
            return torch.device(hook_device)
        return next(embed.parameters(), next(self.model.parameters())).device

    @property
    def max_length(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was requested but no CUDA device is available")
    return torch.device(device)


def resolve_dtype(dtype: str) -> torch.dtype:
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ModelLoadError(
            f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}"
        ) from None


def load_model(
    ref: str | None = None,
    *,
    device: str = "auto",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    architecture: Mapping[str, str] | None = None,
    device_map: str | Mapping[str, Any] | None = None,
    max_memory: Mapping[Any, str] | None = None,
) -> LoadedModel:
    """Resolve ``ref`` and load model + tokenizer in eval mode with gradients off.

    ``device_map`` (``"auto"`` or accelerate's {module: device} dict, with ``max_memory``
    per device) spreads the layers over devices through accelerate, offloading what does not
    fit to the CPU or the disk (``$FACTEDIT_HOME/offload``); ``device`` is then unused."""
    ref = ref or DEFAULT_MODEL
    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    preset = get_preset(ref)
    hf_dir, name = _locate(ref, preset)
    source = str(hf_dir) if hf_dir is not None else ref
    if hf_dir is None:
        info(f"loading {ref} from the Hugging Face hub (network)")
    placement = None if device_map is None else {"device_map": device_map, "max_memory": max_memory}
    model, tokenizer = _load_hf(source, torch_dtype, trust_remote_code, placement)
    if placement is None:
        model.to(torch_device)
    if torch_device.type == "cpu" or placement is not None:
        use_given_cores()
    arch = resolve_architecture(model, architecture)
    exact, rounded = weight_fingerprints(model)
    recorded = preset_for_weights(rounded)
    if preset is not None and recorded is None:
        info(
            f"these weights of {preset.name} differ from the ones its edit layer was recorded "
            "for (another transformers release?); layers: auto will trace instead"
        )
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        arch=arch,
        name=name,
        base_identity=f"weights:{exact}",
        default_layer=None if recorded is None else recorded.edit_layer,
        preset=None if recorded is None else recorded.name,
        default_window=None if recorded is None else recorded.memit_layers,
        default_memit_hparams=None if recorded is None else recorded.memit_hparams,
        source_dir=Path(ref).expanduser()
        if preset is None and Path(ref).expanduser().is_dir()
        else None,
    )


def _locate(ref: str, preset: Preset | None) -> tuple[Path | None, str]:
    """(the local Hugging Face directory to read, or None for a hub id; the model's name)."""
    if preset is not None:
        return ensure_preset(preset), preset.name
    path = Path(ref).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ensure_gguf_converted(path), path.stem
    if path.is_dir():
        return _local_dir(path), path.name
    if path.exists():
        raise ModelLoadError(
            f"{ref} is not a model: give a .gguf file, a Hugging Face model directory, "
            "a hub id or a preset"
        )
    if _looks_like_hub_id(ref):
        return None, ref
    presets = ", ".join(list_presets())
    raise ModelLoadError(
        f'unknown model "{ref}": not a preset ({presets}), not an existing path, '
        "not a hub id (owner/name)"
    )


def _looks_like_hub_id(ref: str) -> bool:
    parts = ref.split("/")
    return len(parts) == 2 and all(parts) and not ref.startswith((".", "/", "~"))


def _local_dir(path: Path) -> Path:
    if (path / "config.json").is_file():
        return path
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ensure_gguf_converted(ggufs[0])
    raise ModelLoadError(
        f"{path} is not a model directory: it has no config.json (and not exactly one .gguf)"
    )


def _load_hf(
    source: str,
    dtype: torch.dtype,
    trust_remote_code: bool,
    placement: Mapping[str, Any] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer from ``source``; ``placement``: ``device_map`` and ``max_memory``
    for accelerate (offloaded weights under ``$FACTEDIT_HOME/offload/<digest of source>``)."""
    extra: dict[str, Any] = {}
    if placement is not None:
        folder = cache_dir("offload") / hashlib.sha256(source.encode()).hexdigest()[:16]
        extra = {**placement, "offload_folder": str(folder)}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoModelForCausalLM.from_pretrained(
                source, dtype=dtype, trust_remote_code=trust_remote_code, **extra
            )
    except FactEditError:
        raise
    except Exception as exc:  # transformers/safetensors raise many types for a bad model
        text = str(exc).strip()
        first = f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
        raise ModelLoadError(f"cannot load model from {source}: {first}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer


# ---- GGUF -> cached safetensors directory ---------------------------------------------------


def ensure_preset(preset: Preset) -> Path:
    """The cached HF directory of a preset, fetching and converting on first use."""
    gguf = fetch_preset(preset)
    return ensure_gguf_converted(gguf, sha256=preset.source.get("sha256"), check=preset.check)


def ensure_gguf_converted(
    gguf: Path, *, sha256: str | None = None, check: KnownAnswer | None = None
) -> Path:
    """Dequantise ``gguf`` into a cached HF directory (once) and return that directory.

    With ``check``, the converted model must give that known answer before it is cached.
    """
    digest = sha256 or sha256_file(gguf)
    out = cache_dir("models") / f"gguf-{digest[:16]}"
    if (out / IDENTITY_FILE).is_file():
        return out
    info(f"dequantising {gguf.name} once (about a minute); cached in {out}")
    try:
        convert_gguf(gguf, out, identity=f"gguf:{digest[:16]}:{gguf.name}", check=check)
    except FactEditError:
        raise
    except Exception as exc:  # a corrupt or foreign file surfaces in many ways
        raise ModelLoadError(f"{gguf} could not be read as a GGUF model: {exc}") from exc
    return out


def convert_gguf(gguf: Path, out: Path, *, identity: str, check: KnownAnswer | None = None) -> None:
    """Load a GGUF with transformers, rebuild the plain model, save safetensors atomically.

    ``check`` (a preset's known answer) is verified on the rebuilt model before anything is
    written, so a conversion that went wrong is never cached.
    """
    folder, name = str(gguf.parent), gguf.name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        quantised = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=torch.float32
        )
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantised.state_dict(), strict=False)
    missing = [k for k in missing if k not in _tied_keys(plain)]
    if missing or unexpected:
        raise ModelLoadError(
            f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}"
        )
    plain.tie_weights()
    if check is not None:
        verify_known_answer(plain, tokenizer, check, source=gguf.name)
    with atomic_dir(out, overwrite=True) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_text(
            tmp / IDENTITY_FILE,
            json.dumps({"identity": identity, "gguf": str(gguf)}, indent=2),
        )


@torch.no_grad()
def verify_known_answer(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, check: KnownAnswer, *, source: str
) -> None:
    """The model's greedy next token after ``check.prompt`` must be ``check.answer``'s first.

    A dequantised GGUF that fails this is broken (for example, some transformers releases
    convert Gemma 3 GGUF files wrongly): raise instead of handing back a silently wrong model.
    """
    ids = torch.tensor([prompt_token_ids(tokenizer, check.prompt)])
    predicted = int(model(input_ids=ids).logits[0, -1].argmax())
    expected = target_token_ids(tokenizer, check.answer)[0]
    if predicted != expected:
        got = tokenizer.decode([predicted])
        raise ModelLoadError(
            f'{source} converted with transformers {transformers.__version__} predicts "{got}" '
            f'instead of "{check.answer.strip()}" after "{check.prompt}", so the conversion is '
            "wrong and was not cached; install another transformers release (factedit is "
            "tested with 5.24)"
        )


def _tied_keys(model: PreTrainedModel) -> set[str]:
    keys = getattr(model, "_tied_weights_keys", None) or []
    if isinstance(keys, dict):
        return set(keys)
    return set(keys)


def load_for_spec(
    reference: str | None,
    spec: EditSpec,
    *,
    device: str,
    dtype: str,
    trust: bool,
    device_map: str | Mapping[str, Any] | None = None,
    max_memory: Mapping[Any, Any] | None = None,
) -> LoadedModel:
    """Load ``reference`` (a ``--model`` value; None: the spec's model, else the default
    preset) with the spec's ``architecture:`` map, and ``device_map`` / ``max_memory``
    (the command line's, else the spec's)."""
    return load_model(
        reference or spec.model,
        device=device,
        dtype=dtype,
        trust_remote_code=trust,
        architecture=spec.architecture,
        device_map=device_map if device_map is not None else spec.device_map,
        max_memory=max_memory if max_memory is not None else spec.max_memory,
    )
