"""The plain, obviously-correct causal trace: one full forward pass per (site, noise sample).

Slow by design — (tokens × layers × kinds × samples) forward passes of batch 1 — and kept as
the yardstick the fast engine (:mod:`factedit.trace.engine`) is tested and benchmarked
against.
"""

from __future__ import annotations

import torch

from factedit.hooks import Trace, TraceDict
from factedit.models.loading import LoadedModel
from factedit.trace.patching import (
    Site,
    TraceProblem,
    noise_editor,
    plain_answer_probs,
    restore_editor,
    site_masks,
    site_modules,
)


@torch.inference_mode()
def run_one(lm: LoadedModel, problem: TraceProblem, sample: int, site: Site | None) -> float:
    """p(answer) in noise sample ``sample`` with ``site`` restored (None: nothing restored)."""
    ids = problem.input_ids.to(lm.device)
    noise = noise_editor(problem.prompt.subject_span, problem.noise[sample : sample + 1])
    sites = [] if site is None else [site]
    masks = site_masks(lm.arch, sites, problem.num_tokens, problem.window)
    names = [name for s in sites for _, name in site_modules(lm.arch, s, problem.window)]
    with (
        Trace(lm.model, lm.arch.paths.embed, edit_output=noise, retain_output=False),
        TraceDict(
            lm.model, names, edit_output=restore_editor(masks, problem.clean), retain_output=False
        ),
    ):
        return float(plain_answer_probs(lm.model, ids, problem.answer_id)[0])


def reference_sites(lm: LoadedModel, problem: TraceProblem, sites: list[Site]) -> torch.Tensor:
    """``[len(sites), S]``: p(answer) per site and noise sample, one forward pass each."""
    return torch.tensor(
        [[run_one(lm, problem, s, site) for s in range(problem.samples)] for site in sites]
    )


def reference_corrupt(lm: LoadedModel, problem: TraceProblem) -> torch.Tensor:
    """``[S]``: p(answer) in each corrupted run with nothing restored."""
    return torch.tensor([run_one(lm, problem, s, None) for s in range(problem.samples)])


def reference_grid(lm: LoadedModel, problem: TraceProblem, kind: str) -> torch.Tensor:
    """``[T, L]``: mean over noise samples of p(answer) with (token, layer) of ``kind`` restored."""
    num_layers = lm.arch.num_layers
    sites = [
        Site(kind, (t,), layer) for t in range(problem.num_tokens) for layer in range(num_layers)
    ]
    probs = reference_sites(lm, problem, sites).mean(dim=1)
    return probs.reshape(problem.num_tokens, num_layers)
