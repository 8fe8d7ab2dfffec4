"""ROME: one fact, one rank-one update of an MLP down-projection (SPEC §2, r-ROME fix).

    k*  = mean over context templates of the down-projection's input at the subject's last
          token                                                         [d_in]
    v*  = v_orig + δ, δ optimised so the model predicts target_new (NLL + KL + weight decay,
          clamped)                                                      [d_out]
    ΔW  = (v* − W k*) uᵀ / (uᵀ k*),  u = C⁻¹ k*                         rank one

The same averaged k* is used in u, in the residual and in the denominator (r-ROME): mixing in
the bare-prompt key is what produces "disabling edits". The model is never changed: the
result is a :class:`~factedit.delta.WeightDelta`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
import torch.nn.functional as F

from factedit.batching import pad_right
from factedit.delta import WeightDelta
from factedit.forward import PrefixCache, hidden_at, resume_from_layer
from factedit.hooks import Trace
from factedit.models.loading import LoadedModel
from factedit.spec import EditRequest
from factedit.tokens import SubjectPrompt, locate_subject, target_token_ids

KL_TEMPLATE = "{} is a"


@dataclass(frozen=True)
class RomeHParams:
    """ROME hyper-parameters (defaults: the reference values, SPEC §2)."""

    v_num_grad_steps: int = 20
    v_lr: float = 0.5
    v_weight_decay: float = 0.5
    clamp_norm_factor: float = 4.0
    kl_factor: float = 0.0625
    nll_stop: float = 0.05
    context_template_lengths: tuple[int, ...] = (5, 10)
    context_templates_per_length: int = 10
    mom2_n_tokens: int = 100_000
    mom2_dtype: str = "float32"
    corpus: str | None = None
    #: where the MLP output is normalised before the residual add, give v* the norm of W k*
    #: (see :func:`match_output_scale`); False keeps the optimised v* as it is
    rescale_normed_value: bool = True

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any] | None) -> RomeHParams:
        known = {f.name for f in fields(cls)}
        return replace(cls(), **{k: v for k, v in (overrides or {}).items() if k in known})


@dataclass
class RomeResult:
    """The delta plus what produced it: ``k_star`` [d_in], ``v_star`` [d_out], float32."""

    delta: WeightDelta
    k_star: torch.Tensor
    v_star: torch.Tensor
    log: dict[str, Any] = field(default_factory=dict)


def _rewrite_prompts(request: EditRequest, templates: Sequence[str]) -> list[tuple[str, str]]:
    """(text, template-with-one-"{}") for every context template around the edit prompt."""
    out = []
    for template in templates:
        full = template.replace("{}", request.prompt, 1)
        out.append((full.replace("{}", request.subject, 1), full))
    return out


def located_rewrites(
    lm: LoadedModel, request: EditRequest, templates: Sequence[str]
) -> list[SubjectPrompt]:
    """Every context template around the edit prompt, tokenised, with its subject span."""
    tok = lm.tokenizer
    return [
        locate_subject(tok, text, request.subject, template=tmpl)
        for text, tmpl in _rewrite_prompts(request, templates)
    ]


@torch.no_grad()
def compute_key(
    lm: LoadedModel, request: EditRequest, layer: int, templates: Sequence[str]
) -> torch.Tensor:
    """k*: the down-projection's input at the last subject token, template-averaged [d_in]."""
    prompts = located_rewrites(lm, request, templates)
    ids, mask = pad_right([p.input_ids for p in prompts], lm.tokenizer.pad_token_id, lm.device)
    with Trace(
        lm.model, lm.arch.down_proj_name(layer), retain_input=True, retain_output=False, stop=True
    ) as tr:
        lm.model(input_ids=ids, attention_mask=mask, use_cache=False)
    rows = torch.arange(len(prompts), device=lm.device)
    last = torch.tensor([p.last_subject_index for p in prompts], device=lm.device)
    return tr.input[rows, last].float().mean(dim=0)


def compute_value(
    lm: LoadedModel,
    request: EditRequest,
    layer: int,
    templates: Sequence[str],
    hp: RomeHParams,
    *,
    fast: bool = True,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """v* [d_out]: the down-projection output that makes the model say ``target_new``.

    One batch holds every rewriting prompt (template + prompt + target[:-1]) and the KL
    prompt "{subject} is a". Only the last subject token and what follows it change between
    optimisation steps, so the fast path (a) computes the keys and values of every row's
    tokens before its last subject token once (:class:`~factedit.forward.PrefixCache`),
    (b) computes the layers below ``layer`` once, and (c) takes LM-head logits only at the
    positions that predict target tokens (and the KL position). Each step then runs layers
    ``layer`` and up over the row suffixes alone. ``fast=False`` runs the plain full
    forward pass with full logits instead (the baseline the benchmark compares against;
    same numbers up to float rounding).
    """
    tok, device = lm.tokenizer, lm.device
    target = target_token_ids(tok, request.target_new)
    prompts = located_rewrites(lm, request, templates)
    kl = locate_subject(
        tok, KL_TEMPLATE.replace("{}", request.subject), request.subject, template=KL_TEMPLATE
    )
    rows = [list(p.input_ids) + target[:-1] for p in prompts] + [list(kl.input_ids)]
    split = [p.last_subject_index for p in prompts] + [kl.last_subject_index]
    n = len(prompts)
    if fast:
        # suffix position 0 of every row is its last subject token
        batch = PrefixCache(lm.arch.base_model(), rows, split, tok.pad_token_id, device)
        offsets, lookup = split, torch.zeros(n + 1, dtype=torch.long, device=device)
    else:
        ids, mask = pad_right(rows, tok.pad_token_id, device)
        offsets, lookup = [0] * (n + 1), torch.tensor(split, device=device)
    batch_rows = torch.arange(n + 1, device=device)
    # positions whose next-token prediction is a target token: [n, len(target)]
    pred_pos = torch.tensor(
        [
            [len(p.input_ids) - 1 + j - offset for j in range(len(target))]
            for p, offset in zip(prompts, offsets[:n], strict=True)
        ],
        device=device,
    )
    target_ids = torch.tensor(target, device=device).expand(n, -1)

    start = hidden_at(lm.arch, layer, **batch.inputs()) if fast and layer > 0 else None
    down_name = lm.arch.down_proj_name(layer)
    delta = torch.zeros(
        lm.arch.down_proj(layer).weight.shape[1 if lm.arch.weight_is_in_out(layer) else 0],
        device=device,
        requires_grad=True,
    )
    state: dict[str, torch.Tensor] = {}

    def add_delta(out: torch.Tensor, _name: str) -> torch.Tensor:
        if "v_orig" not in state:
            state["v_orig"] = out[0, lookup[0]].detach().float().clone()
        out = out.clone()
        out[batch_rows, lookup] = out[batch_rows, lookup] + delta.to(out.dtype)
        return out

    def forward() -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probs at target positions [n, len(target), V], KL log-probs [V])."""
        rows_n = torch.arange(n, device=device)[:, None]
        with Trace(lm.model, down_name, retain_output=False, edit_output=add_delta):
            if not fast:
                logits = lm.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                logp = torch.log_softmax(logits[rows_n, pred_pos].float(), dim=-1)
                return logp, torch.log_softmax(logits[n, lookup[n]].float(), dim=-1)
            with resume_from_layer(lm.arch, layer, start):
                hidden = lm.arch.base_model()(**batch.inputs()).last_hidden_state
        # one LM-head product for the target positions and the KL position
        wanted = torch.cat([hidden[rows_n, pred_pos].flatten(0, 1), hidden[n, lookup[n]][None]])
        logp = torch.log_softmax(lm.arch.logits(wanted).float(), dim=-1)
        return logp[:-1].view(n, len(target), -1), logp[-1]

    optimizer = torch.optim.Adam([delta], lr=hp.v_lr)
    kl_init: torch.Tensor | None = None
    history: list[float] = []
    for step in range(hp.v_num_grad_steps):
        optimizer.zero_grad()
        logp, kl_logp = forward()
        if kl_init is None:
            kl_init = kl_logp.detach().clone()
        nll = -(logp.gather(2, target_ids[..., None]).squeeze(2).mean(dim=1)).mean()
        kl_loss = hp.kl_factor * F.kl_div(
            kl_logp[None], kl_init[None], log_target=True, reduction="batchmean"
        )
        v_norm = state["v_orig"].norm()
        decay = hp.v_weight_decay * delta.norm() / v_norm**2
        loss = nll + kl_loss + decay
        history.append(float(nll.detach()))
        if history[-1] < hp.nll_stop or step == hp.v_num_grad_steps - 1:
            break
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            max_norm = hp.clamp_norm_factor * v_norm
            if delta.norm() > max_norm:
                delta.mul_(max_norm / delta.norm())
    v_star = state["v_orig"] + delta.detach().float()
    log = {
        "nll": history,
        "steps": len(history),
        "delta_norm": float(delta.detach().norm()),
        "v_orig_norm": float(state["v_orig"].norm()),
        "target_tokens": len(target),
    }
    return v_star, log


@torch.no_grad()
def rank_one_delta(
    lm: LoadedModel, layer: int, C: torch.Tensor, k_star: torch.Tensor, v_star: torch.Tensor
) -> tuple[WeightDelta, dict[str, float]]:
    """ΔW = (v* − W k*) uᵀ / (uᵀ k*), u = C⁻¹ k*, in the weight's own orientation.

    ``C`` [d_in, d_in], ``k_star`` [d_in], ``v_star`` [d_out]; solved in float64.
    """
    module = lm.arch.down_proj(layer)
    weight = module.weight
    k64 = k_star.double().to(C.device)
    u = torch.linalg.solve(C.double(), k64)
    denom = torch.dot(u, k64)
    current = _output_for(module, k_star)
    residual = (v_star.to(current.device) - current).double() / denom
    u32, r32 = u.float().to(weight.device), residual.float().to(weight.device)
    if lm.arch.weight_is_in_out(layer):  # Conv1D: W is [in, out], ΔW = u rᵀ
        left, right = u32[:, None], r32[:, None]
    else:  # Linear: W is [out, in], ΔW = r uᵀ
        left, right = r32[:, None], u32[:, None]
    rel = float(left.norm() * right.norm() / weight.float().norm())
    norms = {
        "delta_norm": float(left.norm() * right.norm()),
        "relative_norm": rel,
        "residual_norm": float(residual.norm() * denom),
    }
    delta = WeightDelta(lm.arch.down_proj_weight_name(layer), left, right)
    return delta, norms


@torch.no_grad()
def match_output_scale(
    lm: LoadedModel, layer: int, k_star: torch.Tensor, v_star: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """v* [d_out] rescaled to the norm of the current output W k* (``k_star`` [d_in]).

    Where the MLP output is normalised before it joins the residual stream (Gemma 2/3,
    OLMo 2), the layer sees only the direction of W's output: v* and c·v* (c > 0) are the
    same target at the edited token. The v* optimisation cannot feel the size of δ there,
    so δ grows until the clamp stops it (about 4 ‖v‖), and every other key k receives its
    share uᵀk / uᵀk* of that needlessly large v* − W k*. The representative with the current
    output's norm behaves identically at k* and moves other keys several times less.
    Returns the rescaled v* and the factor ‖v*‖ / ‖W k*‖ it was divided by.
    """
    factor = float(v_star.norm() / _output_for(lm.arch.down_proj(layer), k_star).norm())
    return v_star / factor, factor


def _output_for(module: torch.nn.Module, key: torch.Tensor) -> torch.Tensor:
    """W key [d_out], float32, for ``key`` [d_in] (in the module's own dtype and device)."""
    weight = module.weight
    return module(key.to(weight.device, weight.dtype)[None]).float()[0]


def compute_rome(
    lm: LoadedModel,
    request: EditRequest,
    layer: int,
    C: torch.Tensor,
    templates: Sequence[str],
    hp: RomeHParams,
) -> RomeResult:
    """The full ROME update for one request at ``layer``; the model is left unchanged."""
    k_star = compute_key(lm, request, layer, templates)
    v_star, log = compute_value(lm, request, layer, templates, hp)
    if hp.rescale_normed_value and lm.arch.mlp_output_is_normed():
        v_star, log["v_rescaled_by"] = match_output_scale(lm, layer, k_star, v_star)
    delta, norms = rank_one_delta(lm, layer, C, k_star, v_star)
    delta.meta = {
        "method": "rome",
        "layer": layer,
        "subject": request.subject,
        "target_new": request.target_new,
        **norms,
        "v_steps": log["steps"],
        "final_nll": log["nll"][-1] if log["nll"] else None,
        "v_rescaled_by": log.get("v_rescaled_by", 1.0),
    }
    return RomeResult(delta=delta, k_star=k_star, v_star=v_star, log={**log, **norms})
