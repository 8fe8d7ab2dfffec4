"""From a wanted change of the residual stream to a wanted change of W's output.

MEMIT asks each edited layer's MLP to move the residual stream by r (its share of z − z_cur).
Where the down-projection's output v = W k joins the residual stream as it is (GPT-2, GPT-J,
Llama, ...), the wanted change of v is r itself. Gemma 2/3 and OLMo 2 apply an RMS norm
first (``post_feedforward_layernorm``): the residual stream receives n(v) = g ⊙ v / rms(v),
which is not linear in v and ignores v's size. There the wanted output is o* = n(v) + r and
v* must satisfy n(v*) ≈ o*. The norm's image is the ellipsoid {g ⊙ u : rms(u) = 1}, so

    u   = the point with g ⊙ u closest to o* on it (:func:`_onto_image`; exact when o* is on it)
    v*  = c u,  c > 0 the scale closest to v (n(c u) = g ⊙ u for every c > 0)
    r_W = v* − v

The part of r that leaves the image cannot be delivered by any ΔW; projecting in *output*
space puts that loss on the low-gain coordinates and keeps the ones the norm writes through a
large gain — on gemma-3-270m a massive activation (≈ 5,900 of ‖z‖ ≈ 6,500 at layer 7) that
the u-space rescaling would move by hundreds. Where the norm's ε matters (tiny outputs, as in
random test models) o* can be met exactly and is (:func:`_exact_scale`). The later layers of
the window see what is left in their own residual. :func:`output_change` measures, through
the model's own norm module, what a ΔW really does to the residual stream, so every delta
records the share its layer reached.
"""

from __future__ import annotations

import torch
from torch import nn

from factedit.errors import UnsupportedArchitectureError
from factedit.models.loading import LoadedModel

#: Gains smaller than this fraction of the largest are not inverted (the coordinate keeps
#: its current normalised value).
_MIN_GAIN = 1e-4


def _outputs(module: nn.Module, keys: torch.Tensor, in_out: bool) -> torch.Tensor:
    """W k for keys [n, d_in] -> [n, d_out] float64 (the module's weight, no bias)."""
    weight = module.weight.detach().double().to(keys.device)
    return keys.double() @ (weight if in_out else weight.T)


@torch.no_grad()
def rms_gain(norm: nn.Module, width: int, device: torch.device) -> torch.Tensor:
    """g of an RMS norm n(v) = g ⊙ v / rms(v): n(1) = g -> [width] float64.

    Raises UnsupportedArchitectureError when ``norm`` is not of that form (checked on two
    random vectors and a rescaled one), rather than inverting it wrongly.
    """
    ones = torch.ones(1, width, device=device)
    gain = norm(ones.to(_dtype(norm))).double()[0]
    probe = torch.randn(2, width, generator=torch.Generator().manual_seed(0)).to(device)
    want = gain * probe.double() / _rms(probe.double())
    for scale in (1.0, 7.0):
        got = norm((probe * scale).to(_dtype(norm))).double()
        if not torch.allclose(got, want, rtol=2e-2, atol=1e-3 * float(gain.abs().max())):
            raise UnsupportedArchitectureError(
                f"the norm on the MLP output ({type(norm).__name__}) is not an RMS norm "
                "g ⊙ v / rms(v); MEMIT cannot map residual targets through it"
            )
    return gain


def _dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters(), torch.zeros(())).dtype


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean(-1, keepdim=True).sqrt()


@torch.no_grad()
def weight_space_residuals(
    lm: LoadedModel, layer: int, keys: torch.Tensor, residuals: torch.Tensor
) -> torch.Tensor:
    """The change of W k that moves the residual stream by ``residuals``.

    ``keys`` [n, d_in], ``residuals`` [n, d] -> [n, d_out] float64 (see the module docstring).
    """
    norm = lm.arch.mlp_out_norm(layer)
    if norm is None:
        return residuals.double()
    module = lm.arch.down_proj(layer)
    v = _outputs(module, keys, lm.arch.weight_is_in_out(layer))
    gain = rms_gain(norm, v.shape[1], keys.device)
    target = norm(v.to(_dtype(norm))).double() + residuals.double()
    usable = gain.abs() > _MIN_GAIN * gain.abs().max()
    safe_gain = torch.where(usable, gain, 1.0)
    inside = torch.where(usable, target / safe_gain, v / _rms(v))
    exact = _exact_scale(inside, v, _epsilon(norm))
    on_sphere = torch.where(usable, _onto_image(target, safe_gain), v / _rms(v))
    closest = _closest_scale(on_sphere, v)
    return torch.where(exact > 0, exact * inside, closest * on_sphere) - v


def _onto_image(target: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """u with rms(u) = 1 whose image g ⊙ u is the point of the norm's image closest to
    ``target`` [n, d] (``gain`` [d]): u = g ⊙ t / (g² + μ), μ found by bisection.

    The output-space projection keeps the high-gain coordinates (a massive activation that
    the norm writes through a large gain) and lets the low-gain ones absorb the length the
    norm fixes; projecting in u-space instead would scale the massive coordinate with the
    rest and move it by hundreds."""
    g2, gt = gain.pow(2), gain * target
    width = target.shape[-1]
    low = torch.full_like(target[:, :1], -float(g2.min()) * (1 - 1e-12))
    high = gt.norm(dim=-1, keepdim=True) / width**0.5 + float(g2.max())
    for _ in range(200):
        mid = (low + high) / 2
        too_long = (gt / (g2 + mid)).pow(2).mean(-1, keepdim=True) > 1.0
        low, high = torch.where(too_long, mid, low), torch.where(too_long, high, mid)
    return gt / (g2 + (low + high) / 2)


def _epsilon(norm: nn.Module) -> float:
    """The ε of n(x) = g x / sqrt(mean(x²) + ε) (0 when the module does not name one)."""
    for name in ("eps", "variance_epsilon", "epsilon"):
        value = getattr(norm, name, None)
        if isinstance(value, (int, float)):
            return float(value)
    return 0.0


def _closest_scale(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The c > 0 with c u closest to v (``u``, ``v`` [n, d]) -> [n, 1]: the smallest change
    of W k with the same normalised output (ε negligible)."""
    c = (u * v).sum(-1, keepdim=True) / u.pow(2).sum(-1, keepdim=True)
    return torch.where(c > 0, c, v.norm(dim=-1, keepdim=True) / u.norm(dim=-1, keepdim=True))


def _exact_scale(d: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
    """c [n, 1] with n(c d) = g ⊙ d exactly, or 0 where there is none worth taking.

    n(c d) = g d · c / sqrt(c² m + ε), m = mean(d²): with m < 1 the target is met at
    c = sqrt(ε / (1 − m)); taken only where that c is at most 10× the scale of v (where ε is
    negligible, m < 1 asks for an ever larger W k and the sphere projection is used).
    """
    m = d.pow(2).mean(-1, keepdim=True)
    exact = torch.sqrt(eps / (1.0 - m).clamp_min(1e-300))
    ok = (m < 1.0) & (exact <= 10.0 * _closest_scale(d, v)) & (eps > 0)
    return torch.where(ok, exact, torch.zeros_like(exact))


@torch.no_grad()
def output_change(
    lm: LoadedModel, layer: int, keys: torch.Tensor, delta_dense: torch.Tensor
) -> torch.Tensor:
    """How the residual stream moves at ``keys`` [n, d_in] when W += ``delta_dense`` (stored
    orientation): n(W'k) − n(Wk) through the model's own norm module, or (W' − W)k without
    an output norm -> [n, d] float64."""
    in_out = lm.arch.weight_is_in_out(layer)
    change = keys.double() @ (delta_dense.double() if in_out else delta_dense.double().T)
    norm = lm.arch.mlp_out_norm(layer)
    if norm is None:
        return change
    v = _outputs(lm.arch.down_proj(layer), keys, in_out)
    dtype = _dtype(norm)
    return norm((v + change).to(dtype)).double() - norm(v.to(dtype)).double()
