"""The value optimisation shared by ROME and MEMIT: find, for each fact, the vector δ that,
added at its hook site at the subject's last token, makes the model say ``target_new``.

    batch = ValueBatch.build(lm, requests, templates)             # rows of every fact
    site = HookSite.down_proj(lm, layer)     # ROME: W's output; HookSite.residual: MEMIT
    values = optimise_values(lm, batch, site, hp)                 # one ValueResult per fact

For each fact (ROME, Meng et al. 2022, Eq. 4; MEMIT, Meng et al. 2023, Eq. 16):

    loss = NLL(target_new | template + prompt, δ)   averaged over the fact's templates
         + kl_factor · KL(p_new ‖ p_orig)            next-token distribution of "{subject} is a"
         + v_weight_decay · ‖δ‖ / ‖v_orig‖²
    after each Adam step ‖δ‖ ≤ clamp_norm_factor · ‖v_orig‖; a fact stops (its δ is frozen)
    once its total loss < loss_stop.

All facts share one forward pass per step; each δ is added only at its own rows, and each
fact's loss depends on its own δ alone, so the batched result equals one fact at a time
(Adam is element-wise; a finished fact's δ is held fixed and its rows leave the batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from factedit.batching import pad_right, pad_token_id
from factedit.forward import PrefixCache, hidden_at, resume_from_layer
from factedit.hooks import Trace
from factedit.methods.hparams import ValueHParams
from factedit.methods.log_probs import TargetLogProb, kl_new_orig
from factedit.models.loading import LoadedModel
from factedit.spec import EditRequest
from factedit.tokens import SubjectPrompt, locate_subject, target_token_ids

#: The "essence" prompt whose next-token distribution the KL term keeps (ROME §3).
KL_TEMPLATE = "{} is a"


def rewrite_prompts(
    lm: LoadedModel, request: EditRequest, templates: Sequence[str]
) -> list[SubjectPrompt]:
    """Every context template around the edit prompt, tokenised, with its subject span."""
    out = []
    for template in templates:
        full = template.replace("{}", request.prompt, 1)
        text = full.replace("{}", request.subject, 1)
        out.append(locate_subject(lm.tokenizer, text, request.subject, template=full))
    return out


def suffix_length(lm: LoadedModel, request: EditRequest) -> int:
    """Tokens a rewrite row of ``request`` runs above its hook site: the bare prompt from its
    last subject token on, then target_new but its last token (the same in every template).

    Rows of one forward pass are padded to the longest suffix, so facts with equal suffix
    lengths are best optimised together (:func:`factedit.methods.spread.compute_targets`).
    """
    prompt = rewrite_prompts(lm, request, ["{}"])[0]
    target = target_token_ids(lm.tokenizer, request.target_new)
    return len(prompt.input_ids) - prompt.last_subject_index + len(target) - 1


@dataclass(frozen=True)
class HookSite:
    """Where δ is added: the output of module ``name``, which lives in decoder ``layer``."""

    name: str
    layer: int

    @classmethod
    def down_proj(cls, lm: LoadedModel, layer: int) -> HookSite:
        """ROME: the output of the MLP down-projection W (v = W k)."""
        return cls(lm.arch.down_proj_name(layer), layer)

    @classmethod
    def residual(cls, lm: LoadedModel, layer: int) -> HookSite:
        """MEMIT: the output of decoder ``layer`` (the residual stream after it)."""
        return cls(lm.arch.layer_name(layer), layer)


@dataclass
class ValueBatch:
    """Token rows of several facts: each fact's rewrite rows, then one KL row per fact.

    ``rows[r]``: token ids; ``split[r]``: index of its last subject token (the hook position);
    ``owner[r]``: the fact it belongs to; ``kl_rows[i]``: fact i's KL row; ``targets[i]``: fact
    i's target token ids; ``prompt_lengths[r]``: tokens before the target (rewrite rows).
    """

    rows: list[list[int]]
    split: list[int]
    owner: list[int]
    kl_rows: list[int]
    targets: list[list[int]]
    prompt_lengths: list[int]

    @classmethod
    def build(
        cls, lm: LoadedModel, requests: Sequence[EditRequest], templates: Sequence[str]
    ) -> ValueBatch:
        batch = cls([], [], [], [], [], [])
        for i, request in enumerate(requests):
            target = target_token_ids(lm.tokenizer, request.target_new)
            batch.targets.append(target)
            for p in rewrite_prompts(lm, request, templates):
                batch._add(list(p.input_ids) + target[:-1], p.last_subject_index, i)
                batch.prompt_lengths.append(len(p.input_ids))
        for i, request in enumerate(requests):
            text = KL_TEMPLATE.replace("{}", request.subject)
            kl = locate_subject(lm.tokenizer, text, request.subject, template=KL_TEMPLATE)
            batch.kl_rows.append(len(batch.rows))
            batch._add(list(kl.input_ids), kl.last_subject_index, i)
        return batch

    def _add(self, row: list[int], split: int, owner: int) -> None:
        self.rows.append(row)
        self.split.append(split)
        self.owner.append(owner)

    @property
    def n_facts(self) -> int:
        return len(self.targets)

    @property
    def n_rewrite(self) -> int:
        return len(self.prompt_lengths)


class _Forward:
    """Runs the batch with an output edit at the hook site; returns the logits at
    ``positions`` (a [N, 2] tensor of (row, position in the row)), split in two: the first
    ``n_first`` positions [n_first, V] and the rest [N − n_first, V], float32 (two blocks, so
    that no gradient of a slice of one [N, V] block is ever zero-filled at full size).

    ``prefix=True``: the tokens before each row's last subject token are computed once
    (:class:`PrefixCache`), and so are the layers below the hook site; each call runs the
    layers from the site up over the row suffixes, with LM-head logits only at
    ``positions``. ``prefix=False``: the plain full forward pass with full logits (the
    benchmark baseline; the same numbers up to float rounding).
    """

    def __init__(self, lm: LoadedModel, batch: ValueBatch, site: HookSite, prefix: bool) -> None:
        self.lm, self.site, self.prefix = lm, site, prefix
        device, pad = lm.device, pad_token_id(lm.tokenizer)
        if prefix:
            self.cache = PrefixCache(lm.arch.base_model(), batch.rows, batch.split, pad, device)
            self.offsets = list(batch.split)
            self.start = (
                hidden_at(lm.arch, site.layer, **self.cache.inputs()) if site.layer > 0 else None
            )
        else:
            self.ids, self.mask = pad_right(batch.rows, pad, device)
            self.offsets = [0] * len(batch.rows)
        #: the hook position of every row, in the coordinates the model sees
        self.lookup = torch.tensor(
            [s - o for s, o in zip(batch.split, self.offsets, strict=True)], device=device
        )

    def __call__(
        self, edit: Any, positions: torch.Tensor, rows: torch.Tensor, n_first: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Only the batch rows ``rows`` [R] run (the others' facts are finished);
        ``positions`` index into them (row i of ``positions`` is batch row ``rows[i]``)."""
        lm = self.lm
        first, rest = positions[:n_first], positions[n_first:]
        with Trace(lm.model, self.site.name, retain_output=False, edit_output=edit):
            if not self.prefix:
                out = lm.model(
                    input_ids=self.ids[rows], attention_mask=self.mask[rows], use_cache=False
                ).logits
                return out[first[:, 0], first[:, 1]].float(), out[rest[:, 0], rest[:, 1]].float()
            start = None if self.start is None else self.start[rows]
            with resume_from_layer(lm.arch, self.site.layer, start):
                hidden = lm.arch.base_model()(**self.cache.inputs(rows)).last_hidden_state
        return (
            lm.arch.logits(hidden[first[:, 0], first[:, 1]]).float(),
            lm.arch.logits(hidden[rest[:, 0], rest[:, 1]]).float(),
        )


@dataclass
class ValueResult:
    """One fact's optimised value: ``v_star`` = ``v_orig`` + δ, [d_site] float32."""

    v_star: torch.Tensor
    v_orig: torch.Tensor
    log: dict[str, Any] = field(default_factory=dict)


def _target_positions(
    batch: ValueBatch, offsets: Sequence[int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(positions [N, 2], target ids [N], row of each position [N]) for every target token:
    position ``len(prompt) - 1 + j`` of a rewrite row predicts its fact's target token j."""
    pos, ids, row_of = [], [], []
    for r in range(batch.n_rewrite):
        target = batch.targets[batch.owner[r]]
        for j, token in enumerate(target):
            pos.append((r, batch.prompt_lengths[r] - 1 + j - offsets[r]))
            ids.append(token)
            row_of.append(r)
    return (
        torch.tensor(pos, device=device),
        torch.tensor(ids, device=device),
        torch.tensor(row_of, device=device),
    )


class _Loss:
    """Per-fact loss terms from one forward pass (see the module docstring)."""

    def __init__(self, batch: ValueBatch, hp: ValueHParams, device: torch.device) -> None:
        self.hp = hp
        self.n = batch.n_facts
        owner = torch.tensor(batch.owner, device=device)
        self.row_owner = owner[: batch.n_rewrite]
        lengths = torch.tensor([len(t) for t in batch.targets], device=device, dtype=torch.float)
        self.row_length = lengths[self.row_owner]
        self.rows_per_fact = torch.bincount(self.row_owner, minlength=self.n).float()
        self.kl_init: torch.Tensor | None = None

    def __call__(
        self,
        target_logp: torch.Tensor,
        row_of: torch.Tensor,
        kl_logp: torch.Tensor,
        kl_facts: torch.Tensor,
        delta: torch.Tensor,
        v_orig_norm: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """``target_logp`` [N] log p(target token) of rewrite rows ``row_of`` [N];
        ``kl_logp`` [F, V] of facts ``kl_facts`` [F]; ``delta`` [n_facts, d];
        ``v_orig_norm`` [n_facts]. Returns per-fact terms [n_facts] (0 for facts not run)."""
        if self.kl_init is None:
            self.kl_init = kl_logp.detach().clone()  # the first call runs every fact
        zeros = torch.zeros(len(self.row_owner), device=target_logp.device)
        row_nll = zeros.index_add(0, row_of, -target_logp) / self.row_length
        nll = torch.zeros(self.n, device=row_nll.device).index_add(0, self.row_owner, row_nll)
        nll = nll / self.rows_per_fact
        kl = torch.zeros(self.n, device=kl_logp.device, dtype=kl_logp.dtype)
        kl = kl.index_put((kl_facts,), kl_new_orig(kl_logp, self.kl_init[kl_facts]))
        decay = delta.norm(dim=-1) / v_orig_norm**2
        total = nll + self.hp.kl_factor * kl + self.hp.v_weight_decay * decay
        return {"nll": nll, "kl": kl, "decay": decay, "total": total}


class _ValueProblem:
    """δ [n_facts, d] at the hook site, and the loss terms of one forward pass with it."""

    def __init__(
        self, lm: LoadedModel, batch: ValueBatch, site: HookSite, hp: ValueHParams, prefix: bool
    ) -> None:
        device = lm.device
        self.forward = _Forward(lm, batch, site, prefix)
        self.positions, self.target_ids, self.row_of = _target_positions(
            batch, self.forward.offsets, device
        )
        kl_rows = torch.tensor(batch.kl_rows, device=device)
        kl_positions = torch.stack([kl_rows, self.forward.lookup[kl_rows]], dim=1)
        self.all_positions = torch.cat([self.positions, kl_positions])
        self.row_index = torch.arange(len(batch.rows), device=device)
        self.owner = torch.tensor(batch.owner, device=device)
        self.first_row = torch.tensor(
            [batch.owner.index(i) for i in range(batch.n_facts)], device=device
        )
        width = _site_width(lm, site)
        self.delta = torch.zeros(batch.n_facts, width, device=device, requires_grad=True)
        self.v_orig: torch.Tensor | None = None
        self.loss = _Loss(batch, hp, device)
        self.target_lengths = [len(t) for t in batch.targets]

    def _add_delta(self, out: torch.Tensor, _name: str) -> torch.Tensor:
        """δ of each running row's fact at its hook position (``out`` [R, T, d])."""
        # under a device map the site's layer may sit on another device than the inputs
        rows = self._rows.to(out.device)
        lookup = self.forward.lookup.to(out.device)[rows]
        if self.v_orig is None:  # the first pass runs every row with δ = 0: unedited outputs
            first = self.first_row.to(out.device)
            v_orig = out[first, lookup[first]].detach().float().clone()
            self.v_orig = v_orig.to(self.delta.device)
        out = out.clone()
        at = torch.arange(len(rows), device=out.device)
        delta = self.delta[self.owner[self._rows]].to(out.device, out.dtype)
        out[at, lookup] = out[at, lookup] + delta
        return out

    def terms(self, active: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-fact ``nll``, ``kl``, ``decay`` and ``total`` [n_facts] at the current δ.

        ``active`` [n_facts] bool: only those facts' rows run (a finished fact's rows cannot
        change another fact's loss); the others' ``nll`` and ``kl`` are 0. The first call
        runs every fact (it records v_orig and the KL reference).
        """
        keep = self.row_index if active is None else torch.nonzero(active[self.owner]).flatten()
        remap = torch.full_like(self.row_index, -1)
        remap[keep] = torch.arange(len(keep), device=keep.device)
        picked = remap[self.all_positions[:, 0]] >= 0
        positions = torch.stack(
            [remap[self.all_positions[picked, 0]], self.all_positions[picked, 1]], dim=1
        )
        self._rows = keep
        n_targets = int(picked[: len(self.target_ids)].sum())
        target_logits, kl_logits = self.forward(self._add_delta, positions, keep, n_targets)
        target_ids = self.target_ids[picked[: len(self.target_ids)]]
        facts = self.owner[self.all_positions[len(self.target_ids) :, 0]][
            picked[len(self.target_ids) :]
        ]
        assert self.v_orig is not None
        return self.loss(
            TargetLogProb.apply(target_logits, target_ids),
            self.row_of[picked[: len(self.target_ids)]],
            torch.log_softmax(kl_logits, dim=-1),
            facts,
            self.delta,
            self.v_orig.norm(dim=-1),
        )


def optimise_values(
    lm: LoadedModel,
    batch: ValueBatch,
    site: HookSite,
    hp: ValueHParams,
    *,
    prefix: bool = True,
) -> list[ValueResult]:
    """v* for every fact of ``batch``, optimised jointly (one forward pass per step)."""
    problem = _ValueProblem(lm, batch, site, hp, prefix)
    history = _adam_loop(hp, problem)
    delta = problem.delta.detach().float()
    assert problem.v_orig is not None
    results = []
    for i, v_orig in enumerate(problem.v_orig):
        log = {
            "losses": history[i],
            "steps": len(history[i]),
            "delta_norm": float(delta[i].norm()),
            "v_orig_norm": float(v_orig.norm()),
            "target_tokens": problem.target_lengths[i],
        }
        results.append(ValueResult(v_star=v_orig + delta[i], v_orig=v_orig, log=log))
    return results


def optimise_value(
    lm: LoadedModel,
    request: EditRequest,
    site: HookSite,
    templates: Sequence[str],
    hp: ValueHParams,
    *,
    prefix: bool = True,
) -> ValueResult:
    """v* of one fact (a batch of one; see :func:`optimise_values`)."""
    batch = ValueBatch.build(lm, [request], templates)
    return optimise_values(lm, batch, site, hp, prefix=prefix)[0]


def _site_width(lm: LoadedModel, site: HookSite) -> int:
    """The hidden size at the hook site (W's output width for ROME, d_model for MEMIT)."""
    if site.name == lm.arch.down_proj_name(site.layer):
        weight = lm.arch.down_proj(site.layer).weight
        return weight.shape[1 if lm.arch.weight_is_in_out(site.layer) else 0]
    return lm.model.config.hidden_size


def _adam_loop(hp: ValueHParams, problem: _ValueProblem) -> list[list[dict[str, float]]]:
    """Adam on δ; a fact whose total loss < ``loss_stop`` is frozen there (ROME's stop).

    Like the reference, the loss is checked before each update and the last step only
    measures. Returns each fact's loss terms per step it ran.
    """
    delta = problem.delta
    optimizer = torch.optim.Adam([delta], lr=hp.v_lr)
    done = torch.zeros(delta.shape[0], dtype=torch.bool, device=delta.device)
    history: list[list[dict[str, float]]] = [[] for _ in range(delta.shape[0])]
    for step in range(hp.v_num_grad_steps):
        optimizer.zero_grad()
        terms = problem.terms(None if step == 0 else ~done)
        for i in torch.nonzero(~done).flatten().tolist():
            history[i].append({k: float(v[i].detach()) for k, v in terms.items()})
        done = done | (terms["total"].detach() < hp.loss_stop)
        if bool(done.all()) or step == hp.v_num_grad_steps - 1:
            break
        frozen = delta.detach()[done].clone()
        terms["total"][~done].sum().backward()
        optimizer.step()
        assert problem.v_orig is not None
        with torch.no_grad():
            max_norm = hp.clamp_norm_factor * problem.v_orig.norm(dim=-1)
            norm = delta.norm(dim=-1)
            delta.mul_(torch.where(norm > max_norm, max_norm / norm, 1.0)[:, None])
            delta[done] = frozen
    return history
