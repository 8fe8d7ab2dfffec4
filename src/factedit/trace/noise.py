"""The corruption: Gaussian noise added to the embedding output at the subject's tokens.

    std = noise_std(lm, "3x", subject_token_ids)   # 3 × std of the embedding outputs
    eps = sample_noise(samples=10, tokens=3, dim=640, seed=0)   # [10, 3, 640], N(0, 1)

    std = model_noise_std(lm, "3x")   # 3 × std over a fixed sample of subjects, per model

The std is measured on the *output* of the embedding module (Gemma scales its embeddings
inside that module, so the raw embedding matrix would give the wrong scale). As in the ROME
paper (§2.1, the reference's ``collect_embedding_std`` over the known-facts subjects) it is a
property of the model, measured once over a sample of subjects: a single fact's trace uses
the fixed sample :data:`factedit.trace.subjects.SUBJECTS`, an aggregate trace the subjects of
the facts it traces. Either way one fact's trace never depends on its own tokens' scale.
Randomness comes only from a seeded ``torch.Generator``: the same seed gives the same noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from factedit.errors import FactEditError
from factedit.models.loading import LoadedModel
from factedit.trace.subjects import SUBJECTS

DEFAULT_NOISE = "3x"


def parse_noise(spec: str | float) -> tuple[str, float]:
    """Parse ``--noise``: ``"3x"`` -> ("relative", 3.0); ``"0.1"`` -> ("absolute", 0.1)."""
    text = str(spec).strip().lower()
    try:
        if text.endswith("x"):
            mode, value = "relative", float(text[:-1])
        else:
            mode, value = "absolute", float(text)
    except ValueError:
        raise FactEditError(
            f"--noise {spec!r}: give a multiple of the embedding std like 3x, or a number"
        ) from None
    if not value >= 0 or value == float("inf"):
        raise FactEditError(f"--noise {spec!r}: the noise level must be a finite number >= 0")
    return mode, value


@torch.no_grad()
def embedding_std(lm: LoadedModel, token_ids: Sequence[int]) -> float:
    """Std over all elements of the embedding module's output for ``token_ids`` (float32)."""
    if not token_ids:
        raise FactEditError("cannot measure the embedding std: no subject tokens")
    ids = torch.tensor([list(token_ids)], device=lm.device)
    return float(lm.arch.embed()(ids).float().std())


def noise_std(lm: LoadedModel, spec: str | float, token_ids: Sequence[int]) -> float:
    """The absolute noise std that ``spec`` asks for, measured on ``token_ids`` if relative."""
    mode, value = parse_noise(spec)
    return value * embedding_std(lm, token_ids) if mode == "relative" else value


def subject_token_ids(lm: LoadedModel, subjects: Sequence[str] = SUBJECTS) -> list[int]:
    """The tokens of ``subjects`` as they appear inside a sentence (after a space)."""
    tok = lm.tokenizer
    return [i for s in subjects for i in tok(" " + s, add_special_tokens=False)["input_ids"]]


_MODEL_STD: dict[str, float] = {}


def model_noise_std(lm: LoadedModel, spec: str | float) -> float:
    """The absolute std ``spec`` asks for; a relative one (``"3x"``) is a multiple of the
    embedding std over :data:`SUBJECTS` (measured once per model)."""
    mode, value = parse_noise(spec)
    if mode == "absolute":
        return value
    if lm.identity not in _MODEL_STD:
        _MODEL_STD[lm.identity] = embedding_std(lm, subject_token_ids(lm))
    return value * _MODEL_STD[lm.identity]


def sample_noise(samples: int, tokens: int, dim: int, seed: int) -> torch.Tensor:
    """Standard normal noise ``[samples, tokens, dim]`` (float32, CPU) from a seeded generator."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(samples, tokens, dim, generator=gen, dtype=torch.float32)
