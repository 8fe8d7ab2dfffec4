"""Pictures of a trace: matplotlib heatmaps (PNG + SVG) and a compact rich terminal heatmap.

    write_figures(result, out_dir / "trace")       # trace.png, trace.svg (three panels)
    err_console.print(terminal_heatmap(result))    # one character per (token, layer)

Single prompt: tokens down, layers across, subject tokens marked with ``*``, colour = p(answer)
with that site restored (the scale starts at p_corrupt). Aggregate: the six token groups down,
colour = mean indirect effect.
"""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from rich.console import Group
from rich.text import Text

from factedit.figures import FIGURE_RC
from factedit.trace.aggregate import GROUPS, AggregateResult
from factedit.trace.result import TraceResult

CMAPS = {"hidden": "Purples", "mlp": "Greens", "attn": "Reds"}
STYLES = {"hidden": "magenta", "mlp": "green", "attn": "red"}
SITE_NAMES = {"hidden": "hidden state", "mlp": "MLP output", "attn": "attention output"}
SHADES = " ░▒▓█"


def token_labels(result: TraceResult, width: int | None = None) -> list[str]:
    """Printable token labels; subject tokens end with ``*``."""
    a, b = result.subject_span
    labels = []
    for i, tok in enumerate(result.tokens):
        text = tok.replace("\n", "\\n").replace("\t", "\\t") or "''"
        if width is not None and len(text) > width:
            text = text[: width - 1] + "…"
        labels.append(text + ("*" if a <= i < b else ""))
    return labels


def _axis_title(kind: str, window: int) -> str:
    if kind == "hidden":
        return "single restored layer"
    return f"center of {window} restored {'MLP' if kind == 'mlp' else 'attention'} layers"


def layer_ticks(num_layers: int) -> range:
    """Ticks at a round step (1, 2, 5, 10, ...), at most 9 of them: readable at any depth."""
    steps = (1, 2, 5, 10, 20, 50, 100)
    step = next((s for s in steps if -(-num_layers // s) <= 9), -(-num_layers // 9))
    return range(0, num_layers, step)


def trace_figure(result: TraceResult) -> Figure:
    """Three panels (one per kind) like the ROME paper's causal-trace figure."""
    kinds = list(result.grids)
    n_tokens, n_layers = result.grids[kinds[0]].shape
    window = result.settings.get("window", 10)
    with matplotlib.rc_context(FIGURE_RC):
        fig = Figure(figsize=(3.4 * len(kinds) + 1.2, 0.26 * n_tokens + 1.9), layout="constrained")
        axes = fig.subplots(1, len(kinds), squeeze=False)[0]
        labels = token_labels(result, width=18)
        for ax, kind in zip(axes, kinds, strict=True):
            im = ax.imshow(
                result.grids[kind],
                cmap=CMAPS.get(kind, "viridis"),
                vmin=min(result.p_corrupt, float(result.grids[kind].min())),
                aspect="auto",
                interpolation="nearest",
            )
            ax.set_yticks(range(n_tokens), labels)
            ax.set_xticks(layer_ticks(n_layers))
            ax.set_xlabel(_axis_title(kind, window))
            ax.set_title(f"restoring the {SITE_NAMES.get(kind, kind)}")
            fig.colorbar(im, ax=ax, shrink=0.85).set_label(f"p({result.answer.strip()})")
        fig.suptitle(
            f'"{result.prompt}" → "{result.answer.strip()}"   '
            f"p_clean={result.p_clean:.3f}  p_corrupt={result.p_corrupt:.3f}   "
            f"({result.settings.get('model', '')}, "
            f"{result.settings.get('samples', '?')} noise samples)"
        )
    return fig


def aggregate_figure(agg: AggregateResult) -> Figure:
    """Average indirect effect per token group × layer, one panel per kind."""
    kinds = list(agg.effects)
    n_layers = agg.effects[kinds[0]].shape[1]
    with matplotlib.rc_context(FIGURE_RC):
        fig = Figure(figsize=(3.6 * len(kinds) + 1.8, 3.4), layout="constrained")
        axes = fig.subplots(1, len(kinds), squeeze=False)[0]
        window = agg.settings.get("window", 10)
        for ax, kind in zip(axes, kinds, strict=True):
            eff = agg.effects[kind]
            im = ax.imshow(
                np.ma.masked_invalid(eff),
                cmap=CMAPS.get(kind, "viridis"),
                vmin=min(0.0, float(np.nanmin(eff))),
                aspect="auto",
                interpolation="nearest",
            )
            ax.set_yticks(
                range(len(GROUPS)), [f"{g} ({c})" for g, c in zip(GROUPS, agg.counts, strict=True)]
            )
            ax.set_xticks(layer_ticks(n_layers))
            ax.set_xlabel(_axis_title(kind, window))
            ax.set_title(f"avg. indirect effect, {SITE_NAMES.get(kind, kind)}")
            fig.colorbar(im, ax=ax, shrink=0.85)
        fig.suptitle(
            f"{agg.settings.get('model', '')}: average over {len(agg.facts)} known facts "
            f"(of {agg.scanned} scanned)   p_clean={agg.p_clean:.3f}  p_corrupt={agg.p_corrupt:.3f}"
        )
    return fig


# ---- terminal --------------------------------------------------------------------------
def _shade_rows(values: np.ndarray, lo: float, hi: float, style: str) -> list[Text]:
    span = hi - lo if hi > lo else 1.0
    rows = []
    for row in values:
        text = Text()
        for v in row:
            if np.isnan(v):
                text.append("·", style="dim")
                continue
            level = int(np.clip((v - lo) / span, 0.0, 1.0) * (len(SHADES) - 1) + 0.5)
            text.append(SHADES[level], style=style)
        rows.append(text)
    return rows


def _block(
    title: str, labels: list[str], values: np.ndarray, lo: float, hi: float, style: str
) -> Group:
    width = max(len(label) for label in labels)
    n_layers = values.shape[1]
    axis = "".join(str(i % 10) for i in range(n_layers))
    lines = [Text(title, style="bold"), Text(" " * (width + 1) + axis, style="dim")]
    for label, cells in zip(labels, _shade_rows(values, lo, hi, style), strict=True):
        lines.append(Text(label.rjust(width) + " ") + cells)
    lines.append(Text(f"{'':>{width}} scale: ' ' = {lo:.3f} … '█' = {hi:.3f}", style="dim"))
    return Group(*lines)


def terminal_heatmap(result: TraceResult) -> Group:
    """One block per kind: a character per (token, layer), darker = higher p(answer)."""
    labels = token_labels(result, width=14)
    blocks = []
    for kind, grid in result.grids.items():
        title = f"{kind}: p({result.answer.strip()}) with the {SITE_NAMES.get(kind, kind)} restored"
        blocks.append(
            _block(title, labels, grid, result.p_corrupt, float(grid.max()), STYLES.get(kind, ""))
        )
        blocks.append(Text(""))
    return Group(*blocks)


def terminal_aggregate(agg: AggregateResult) -> Group:
    """One block per kind: token groups × layers, darker = larger mean indirect effect."""
    labels = list(GROUPS)
    blocks = []
    for kind, eff in agg.effects.items():
        title = f"{kind}: average indirect effect of the {SITE_NAMES.get(kind, kind)}"
        hi = float(np.nanmax(eff)) if not np.isnan(eff).all() else 0.0
        blocks.append(_block(title, labels, eff, 0.0, hi, STYLES.get(kind, "")))
        blocks.append(Text(""))
    return Group(*blocks)
