"""The layer window of the multi-layer methods (MEMIT, AlphaEdit, EMMET) from a trace.

    window = plateau_window(curve)     # e.g. (2, 3, 4, 5, 6, 7)

Rule: the consecutive layers around the peak whose MLP indirect effect at the last subject
token (averaged over *known* facts, never over the facts being evaluated) is at least
:data:`PLATEAU_FRACTION` of the peak. MEMIT's window for GPT-J (layers 3-8) is where its
trace has that plateau.
"""

from __future__ import annotations

from collections.abc import Sequence

PLATEAU_FRACTION = 0.75
LAST_SUBJECT_GROUP = "last subject token"


def plateau_window(curve: Sequence[float], fraction: float = PLATEAU_FRACTION) -> tuple[int, ...]:
    """The run of consecutive layers containing the peak of ``curve`` [L] with values at
    least ``fraction`` × the peak."""
    if not curve:
        raise ValueError("empty layer profile")
    peak = max(range(len(curve)), key=lambda i: curve[i])
    bar = fraction * curve[peak]
    start, end = peak, peak
    while start > 0 and curve[start - 1] >= bar:
        start -= 1
    while end + 1 < len(curve) and curve[end + 1] >= bar:
        end += 1
    return tuple(range(start, end + 1))


def aggregate_mlp_curve(aggregate: dict) -> list[float] | None:
    """The MLP effect at the last subject token per layer from a cached aggregate trace
    (``factedit trace --facts``), or None when it lacks one."""
    try:
        group = aggregate["groups"].index(LAST_SUBJECT_GROUP)
        return [float(x) for x in aggregate["effects"]["mlp"][group]]
    except (KeyError, ValueError, IndexError, TypeError):
        return None
