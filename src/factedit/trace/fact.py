"""Trace one prompt: ``trace_fact(lm, prompt, subject) -> TraceResult``.

    result = trace_fact(lm, "The Eiffel Tower is located in the city of", "The Eiffel Tower")
    result.grids["mlp"]          # [T, L] p(answer) with the MLP restored at (token, layer)
    result.recommended_layer()   # (layer, indirect effect) of the MLP at the last subject token

The subject is located before any forward pass (a missing subject raises
SubjectNotFoundError). Without ``target`` the answer is the model's own greedy next token;
with a multi-token target, the probability of its first token is traced.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from factedit.errors import FactEditError
from factedit.models.loading import LoadedModel
from factedit.tokens import SubjectPrompt, locate_subject, target_token_ids
from factedit.trace import engine, reference
from factedit.trace.noise import DEFAULT_NOISE, model_noise_std, parse_noise, sample_noise
from factedit.trace.patching import KINDS, Site, TraceProblem, prepare
from factedit.trace.result import TraceResult

ENGINES = ("fast", "reference")


def check_settings(kinds: Sequence[str], samples: int, window: int, engine_name: str) -> None:
    """Raise FactEditError naming the bad option."""
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise FactEditError(f"--kind {','.join(kinds)}: choose from {','.join(KINDS)}")
    if samples < 1:
        raise FactEditError("--samples must be at least 1")
    if window < 1:
        raise FactEditError("--window must be at least 1")
    if engine_name not in ENGINES:
        raise FactEditError(f"unknown engine {engine_name!r}; choose from {', '.join(ENGINES)}")


def build_problem(
    lm: LoadedModel,
    prompt: SubjectPrompt,
    *,
    target: str | None,
    samples: int,
    noise: str | float,
    window: int,
    seed: int,
) -> tuple[TraceProblem, float]:
    """The clean run and the seeded noise for ``prompt``; returns (problem, noise std).

    ``noise``: a multiple of the model's subject-embedding std (``"3x"``, see
    :func:`~factedit.trace.noise.model_noise_std`) or an absolute std.
    """
    answer_id = target_token_ids(lm.tokenizer, target)[0] if target else None
    start, end = prompt.subject_span
    std = model_noise_std(lm, noise)
    dim = lm.arch.embed().weight.shape[1]
    eps = sample_noise(samples, end - start, dim, seed) * std
    return prepare(lm, prompt, answer_id=answer_id, noise=eps, window=window), std


def grid_sites(kind: str, num_tokens: int, num_layers: int) -> list[Site]:
    """Every (token, layer) site of one kind, token-major (reshapes to ``[T, L]``)."""
    return [Site(kind, (t,), layer) for t in range(num_tokens) for layer in range(num_layers)]


def compute_grids(
    lm: LoadedModel, problem: TraceProblem, kinds: Sequence[str], engine_name: str = "fast"
) -> tuple[float, dict[str, np.ndarray]]:
    """p_corrupt and ``{kind: [T, L]}`` mean restored probabilities."""
    T, L = problem.num_tokens, lm.arch.num_layers
    sites = [site for kind in kinds for site in grid_sites(kind, T, L)]
    if engine_name == "fast":
        p_corrupt, probs = engine.run_sites(lm, problem, sites)
    else:
        p_corrupt = reference.reference_corrupt(lm, problem)
        probs = reference.reference_sites(lm, problem, sites)
    means = probs.double().mean(dim=1).reshape(len(kinds), T, L).numpy()
    return float(p_corrupt.double().mean()), {k: means[i] for i, k in enumerate(kinds)}


def trace_fact(
    lm: LoadedModel,
    prompt: str,
    subject: str,
    target: str | None = None,
    *,
    kinds: Sequence[str] = KINDS,
    samples: int = 10,
    noise: str | float = DEFAULT_NOISE,
    window: int = 10,
    seed: int = 0,
    engine_name: str = "fast",
    template: str | None = None,
) -> TraceResult:
    """Causal trace of ``prompt`` (containing ``subject``) for hidden / MLP / attention sites."""
    kinds = tuple(kinds)
    check_settings(kinds, samples, window, engine_name)
    parse_noise(noise)
    located = locate_subject(lm.tokenizer, prompt, subject, template=template)
    with torch.inference_mode():
        problem, std = build_problem(
            lm, located, target=target, samples=samples, noise=noise, window=window, seed=seed
        )
        p_corrupt, grids = compute_grids(lm, problem, kinds, engine_name)
    tok = lm.tokenizer
    return TraceResult(
        prompt=prompt,
        subject=subject,
        tokens=[tok.decode([i]) for i in located.input_ids],
        subject_span=located.subject_span,
        answer=tok.decode([problem.answer_id]),
        answer_id=problem.answer_id,
        target=target,
        p_clean=problem.p_clean,
        p_corrupt=p_corrupt,
        grids=grids,
        settings={
            **trace_settings(lm, kinds, samples, noise, std, window, seed, engine_name),
            "answer_probability": "first answer token",
        },
    )


def trace_settings(
    lm: LoadedModel,
    kinds: Sequence[str],
    samples: int,
    noise: str | float,
    std: float,
    window: int,
    seed: int,
    engine_name: str,
) -> dict[str, Any]:
    """What a trace was run with (recorded in its JSON so it can be reproduced)."""
    return {
        "model": lm.name,
        "identity": lm.identity,
        "kinds": list(kinds),
        "samples": samples,
        "noise": str(noise),
        "noise_std": std,
        "window": window,
        "seed": seed,
        "engine": engine_name,
        "num_layers": lm.arch.num_layers,
    }
