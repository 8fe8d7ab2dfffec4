"""Writing matplotlib figures the same way everywhere (traces, stream curves, probes).

    with matplotlib.rc_context(FIGURE_RC): fig = ...     # draw
    paths = write_figure(fig, out / "trace")             # trace.png, trace.svg

Text stays text in the SVG (no math parsing of "$", fonts not turned into paths).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from factedit.paths import atomic_file

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: matplotlib settings of every figure factedit draws.
FIGURE_RC = {"text.parse_math": False, "svg.fonttype": "none", "font.size": 9}


def write_figure(fig: Figure, stem: Path, *, dpi: int = 110) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg``, each atomically (a temporary sibling renamed into
    place), then clear ``fig`` (never registered with pyplot: clearing frees it); returns
    both paths."""
    import matplotlib

    paths = []
    try:
        with matplotlib.rc_context(FIGURE_RC):
            for ext in ("png", "svg"):
                path = stem.with_name(f"{stem.name}.{ext}")
                with atomic_file(path, "wb") as fh:
                    fig.savefig(fh, format=ext, dpi=dpi)
                paths.append(path)
    finally:
        fig.clear()
    return paths
