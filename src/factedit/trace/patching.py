"""What the fast engine and the reference share: sites, the clean run, and the two edits.

    problem = prepare(lm, subject_prompt, answer_id=None, noise=eps * std, window=10)
    Site("mlp", tokens=(4,), layer=6)         # restore MLP outputs at token 4, layers 1..10
    site_modules(lm.arch, site, window)       # [(layer, module name), ...] patched for a site

One generic patch routine serves every kind: a site kind is just the function that names the
module whose output is restored (the decoder layer itself for ``hidden``, its MLP or its
attention for ``mlp`` / ``attn``; the latter two over a window of layers around ``layer``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from factedit.hooks import EditFn, Trace, TraceDict
from factedit.models.arch import Architecture
from factedit.models.loading import LoadedModel
from factedit.tokens import SubjectPrompt

KINDS: tuple[str, ...] = ("hidden", "mlp", "attn")


@dataclass(frozen=True)
class Site:
    """Restore the clean output of ``kind`` at ``tokens`` (token indices) around ``layer``."""

    kind: str
    tokens: tuple[int, ...]
    layer: int


def kind_module_name(arch: Architecture, kind: str) -> Callable[[int], str]:
    """layer index -> name of the module whose output a ``kind`` site restores."""
    names = {"hidden": arch.layer_name, "mlp": arch.mlp_name, "attn": arch.attn_name}
    if kind not in names:
        raise ValueError(f"unknown site kind {kind!r}; choose from {', '.join(KINDS)}")
    return names[kind]


def window_layers(layer: int, window: int, num_layers: int) -> range:
    """Layers ``layer - window//2 .. layer - window//2 + window - 1``, clipped to the model."""
    lo = layer - window // 2
    return range(max(0, lo), min(num_layers, lo + window))


def site_modules(arch: Architecture, site: Site, window: int) -> list[tuple[int, str]]:
    """(layer index, module name) of every module output that ``site`` restores."""
    name = kind_module_name(arch, site.kind)
    if site.kind == "hidden":
        return [(site.layer, name(site.layer))]
    return [(j, name(j)) for j in window_layers(site.layer, window, arch.num_layers)]


@dataclass
class TraceProblem:
    """One prompt ready to trace.

    ``clean``: module name -> clean output at every token, ``[T, D]``, for the decoder layers,
    MLPs and attentions of every layer. ``noise``: ``[S, n_subject_tokens, D]`` (already
    scaled) added to the embedding output at the subject span in noise sample ``s``.
    """

    prompt: SubjectPrompt
    answer_id: int
    p_clean: float
    noise: torch.Tensor
    window: int
    clean: dict[str, torch.Tensor]

    @property
    def input_ids(self) -> torch.Tensor:
        """``[1, T]`` token ids (CPU)."""
        return torch.tensor([self.prompt.input_ids])

    @property
    def num_tokens(self) -> int:
        return len(self.prompt.input_ids)

    @property
    def samples(self) -> int:
        return self.noise.shape[0]


def all_module_names(arch: Architecture) -> list[str]:
    return [kind_module_name(arch, k)(layer) for k in KINDS for layer in range(arch.num_layers)]


@torch.inference_mode()
def prepare(
    lm: LoadedModel,
    prompt: SubjectPrompt,
    *,
    answer_id: int | None,
    noise: torch.Tensor,
    window: int,
) -> TraceProblem:
    """Run the clean forward pass once; ``answer_id=None`` takes the model's greedy answer."""
    if window < 1:
        raise ValueError("window must be >= 1")
    ids = torch.tensor([prompt.input_ids], device=lm.device)
    with TraceDict(lm.model, all_module_names(lm.arch), detach=True, clone=True) as td:
        logits = last_logits(lm, ids)
    probs = torch.softmax(logits[0], dim=-1)
    if answer_id is None:
        answer_id = int(probs.argmax())
    clean = {name: t.output[0] for name, t in td.items()}
    return TraceProblem(prompt, answer_id, float(probs[answer_id]), noise, window, clean)


@functools.cache
def keeps_logits(forward_cls: type) -> bool:
    return "logits_to_keep" in inspect.signature(forward_cls.forward).parameters


def _contiguous(t: torch.Tensor, _name: str) -> torch.Tensor:
    return t.contiguous()


def last_logits(lm: LoadedModel, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
    """Float32 logits at the last position, ``[B, V]`` (only that position is projected).

    The LM head receives the last position as a contiguous ``[B, 1, D]`` tensor: a strided
    slice sends ``linear`` down a batched-matmul path that is ~10× slower on CPU.
    """
    kwargs.setdefault("use_cache", False)
    if not keeps_logits(type(lm.model)):
        return lm.model(input_ids=input_ids, **kwargs).logits[:, -1].float()
    kwargs["logits_to_keep"] = 1
    with Trace(lm.model, lm.arch.paths.lm_head, edit_input=_contiguous, retain_output=False):
        return lm.model(input_ids=input_ids, **kwargs).logits[:, -1].float()


def plain_answer_probs(
    model: torch.nn.Module, input_ids: torch.Tensor, answer_id: int
) -> torch.Tensor:
    """p(answer) ``[B]`` from a plain forward pass (logits at every position, as HF does)."""
    logits = model(input_ids=input_ids, use_cache=False).logits[:, -1].float()
    return torch.softmax(logits, dim=-1)[:, answer_id]


def noise_editor(span: tuple[int, int], noise_rows: torch.Tensor) -> EditFn:
    """Edit for the embedding output ``[B, T, D]``: add ``noise_rows`` ``[B, n, D]`` at span."""
    start, end = span

    def edit(out: torch.Tensor, _name: str) -> torch.Tensor:
        out = out.clone()
        out[:, start:end] += noise_rows.to(device=out.device, dtype=out.dtype)
        return out

    return edit


def restore_editor(masks: dict[str, torch.Tensor], clean: dict[str, torch.Tensor]) -> EditFn:
    """Edit for any restored module: ``out[b, t] = clean[t]`` where ``masks[name][b, t]``.

    ``masks[name]``: bool ``[B, T]``; ``clean[name]``: ``[T, D]``; ``out``: ``[B, T, D]``.
    """

    def edit(out: torch.Tensor, name: str) -> torch.Tensor:
        mask = masks.get(name)
        if mask is None:
            return out
        value = clean[name].to(device=out.device, dtype=out.dtype)
        return torch.where(mask.to(out.device)[..., None], value[None], out)

    return edit


def site_masks(
    arch: Architecture, rows: Sequence[Site], num_tokens: int, window: int
) -> dict[str, torch.Tensor]:
    """Per module name, bool ``[B, T]``: which (row, token) takes the clean output."""
    masks: dict[str, torch.Tensor] = {}
    for b, site in enumerate(rows):
        for _layer, name in site_modules(arch, site, window):
            if name not in masks:
                masks[name] = torch.zeros(len(rows), num_tokens, dtype=torch.bool)
            masks[name][b, list(site.tokens)] = True
    return masks
