"""How well-conditioned a second moment C is, and the guard that refuses one too singular.

    info = conditioning(C, n_tokens)      # eigenvalue range, condition number, token count
    check_conditioning(C, layer, n_tokens)  # raises IllConditionedStatistics above the limit

ROME solves u = C⁻¹ k* (Meng et al. 2022, Eq. 2). When C is near-singular — fewer token
vectors than dimensions, or a corpus that never visits some directions — u is dominated by
the directions with the smallest eigenvalues, which the corpus barely measured, and the
update generalises from noise. Such a C is reported, never silently used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from factedit.errors import StatsError

#: λ_max / λ_min above which C is refused. Real C at the presets' layers from 100k WikiText
#: tokens are near 10⁴ (gemma-3-270m layer 2: 1.9·10⁴; smollm2-135m layer 4: 4·10²); a C from
#: fewer vectors than dimensions is singular (10¹⁶ and up).
MAX_CONDITION = 1e10


class IllConditionedStatistics(StatsError):
    """C is too ill-conditioned to solve against (see :data:`MAX_CONDITION`)."""


@dataclass(frozen=True)
class Conditioning:
    """The eigenvalue range of C [d, d] and the number of token vectors it averages."""

    n_tokens: int
    dim: int
    eig_min: float
    eig_max: float

    @property
    def condition(self) -> float:
        return self.eig_max / self.eig_min if self.eig_min > 0 else float("inf")

    def to_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "condition": self.condition}


@torch.no_grad()
def conditioning(C: torch.Tensor, n_tokens: int) -> Conditioning:
    """Eigenvalues of the symmetric C, in float64."""
    eig = torch.linalg.eigvalsh(C.double())
    return Conditioning(n_tokens, C.shape[0], float(eig[0]), float(eig[-1]))


def check_conditioning(C: torch.Tensor, layer: int, n_tokens: int) -> Conditioning:
    """:func:`conditioning`, raising :class:`IllConditionedStatistics` above the limit."""
    info = conditioning(C, n_tokens)
    if info.condition > MAX_CONDITION:
        raise IllConditionedStatistics(
            f"the statistics C of layer {layer} are too ill-conditioned to edit with "
            f"(condition number {info.condition:.2e} > {MAX_CONDITION:.0e}, from {n_tokens} "
            f"token vectors in {info.dim} dimensions): collect C over more tokens "
            "(hparams.mom2_n_tokens, several times the dimension) or from a more varied corpus"
        )
    return info
