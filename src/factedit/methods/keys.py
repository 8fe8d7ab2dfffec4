"""Activations at the subject's last token, for many prompts at once (chunked passes).

    K = compute_keys(lm, requests, layer, templates, w) # [n, d_in]: W's input, template mean
    z = residual_at_subject(lm, requests, layer)        # [n, d]: decoder ``layer``'s output

Both run the prompts in chunks of ``rows_per_pass`` right-padded rows, and each pass stops
right after the module it reads (the layers above never run). ROME's k* is
``compute_keys`` of one request; MEMIT recomputes both on the partially edited model before
each layer's update.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from factedit.batching import pad_right, pad_token_id
from factedit.hooks import Trace
from factedit.methods.value import rewrite_prompts
from factedit.models.loading import LoadedModel
from factedit.spec import EditRequest
from factedit.tokens import SubjectPrompt

#: Prompts per forward pass when the caller does not say.
ROWS_PER_PASS = 256


@torch.no_grad()
def activations_at_subject(
    lm: LoadedModel,
    prompts: Sequence[SubjectPrompt],
    module_name: str,
    *,
    module_input: bool,
    rows_per_pass: int = ROWS_PER_PASS,
) -> torch.Tensor:
    """The input (``module_input``) or output of ``module_name`` at each prompt's last subject
    token: [len(prompts), d] float32, on the model's device."""
    pad = pad_token_id(lm.tokenizer)
    out = []
    for start in range(0, len(prompts), rows_per_pass):
        chunk = prompts[start : start + rows_per_pass]
        ids, mask = pad_right([p.input_ids for p in chunk], pad, lm.device)
        with Trace(
            lm.model,
            module_name,
            retain_input=module_input,
            retain_output=not module_input,
            stop=True,
        ) as tr:
            lm.model(input_ids=ids, attention_mask=mask, use_cache=False)
        values = tr.input if module_input else tr.output
        assert values is not None, f"{module_name} did not run"
        rows = torch.arange(len(chunk), device=values.device)
        last = torch.tensor([p.last_subject_index for p in chunk], device=values.device)
        out.append(values[rows, last].float().to(lm.device))  # the layer's device may differ
    return torch.cat(out)


def compute_keys(
    lm: LoadedModel,
    requests: Sequence[EditRequest],
    layer: int,
    templates: Sequence[str],
    weights: torch.Tensor | None = None,
    *,
    rows_per_pass: int = ROWS_PER_PASS,
) -> torch.Tensor:
    """k for each request: W's input at the last subject token, averaged over the context
    templates with ``weights`` [len(templates)] (None: alike; see
    :func:`factedit.methods.templates.template_weights`) -> [len(requests), d_in] float32."""
    prompts = [p for r in requests for p in rewrite_prompts(lm, r, templates)]
    keys = activations_at_subject(
        lm,
        prompts,
        lm.arch.down_proj_name(layer),
        module_input=True,
        rows_per_pass=rows_per_pass,
    )
    return template_mean(keys, len(requests), weights)


def template_mean(
    keys: torch.Tensor, n_requests: int, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Keys of every request × template, request-major [n * T, d] -> their mean over the
    templates [n, d], weighted by ``weights`` [T] summing to 1 (None: alike)."""
    per_request = keys.reshape(n_requests, keys.shape[0] // n_requests, -1)
    if weights is None:
        return per_request.mean(dim=1)
    return torch.einsum("ntd,t->nd", per_request, weights.to(keys.device, keys.dtype))


def residual_at_subject(
    lm: LoadedModel,
    requests: Sequence[EditRequest],
    layer: int,
    *,
    rows_per_pass: int = ROWS_PER_PASS,
) -> torch.Tensor:
    """The residual stream after decoder ``layer`` at the last subject token of each bare
    edit prompt (no context template) -> [len(requests), d] float32."""
    prompts = [p for r in requests for p in rewrite_prompts(lm, r, ["{}"])]
    return activations_at_subject(
        lm, prompts, lm.arch.layer_name(layer), module_input=False, rows_per_pass=rows_per_pass
    )
