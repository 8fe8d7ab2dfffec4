"""Probing curves from ``factedit.probe/1`` JSON (PNG + SVG, the house style of
:mod:`factedit.evaluate.plot`).

    write_figure(probe_figure(data), out / "probe")            # probe.png, probe.svg
    write_figure(relations_figure(datas, titles), out / "curves")

:func:`probe_figure`: accuracy (mean ± std over seeds), control accuracy, the majority
baseline and chance over layers, with the layer the label becomes decodable from marked;
then the scalar-mix weights and the cumulative gain; then the logit lens and the edit, when
the data has them. :func:`relations_figure`: one panel per task (accuracy, control,
majority). matplotlib is imported inside the functions; figures use the Agg canvas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from factedit.figures import FIGURE_RC

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _layer_axis(ax: Axes) -> None:
    """Integer layer ticks, a light grid."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.grid(alpha=0.3)


def _series(data: Mapping[str, Any], key: str, part: str = "mean") -> list[float]:
    return [row[key][part] for row in data["layers"]]


def accuracy_panel(ax: Axes, data: Mapping[str, Any], *, legend: bool = True) -> None:
    """Accuracy ± std, control ± std, majority baseline and chance against the layer."""
    layers = [row["layer"] for row in data["layers"]]
    for key, label, color in (
        ("accuracy", "probe", "tab:blue"),
        ("control_accuracy", "control task", "tab:orange"),
    ):
        mean, std = _series(data, key), _series(data, key, "std")
        ax.plot(layers, mean, marker="o", markersize=3, color=color, label=label)
        lo = [m - s for m, s in zip(mean, std, strict=True)]
        hi = [m + s for m, s in zip(mean, std, strict=True)]
        ax.fill_between(layers, lo, hi, color=color, alpha=0.2, linewidth=0)
    ax.axhline(data["majority_baseline"], color="gray", linestyle="--", label="majority")
    ax.axhline(data["chance"], color="gray", linestyle=":", label="chance (Σp²)")
    if data.get("decodable_from") is not None:
        ax.axvline(data["decodable_from"], color="tab:green", alpha=0.5, label="decodable from")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("test accuracy")
    _layer_axis(ax)
    if legend:
        ax.legend(loc="best", fontsize=7)


def _mix_panel(ax: Axes, data: Mapping[str, Any]) -> None:
    layers = [row["layer"] for row in data["layers"]]
    if "scalar_mix" in data:
        expected = data["scalar_mix"]["expected_layer"]
        ax.bar(
            layers,
            data["scalar_mix"]["weights"],
            color="tab:purple",
            alpha=0.6,
            label=f"mix weight s_l (E[l] = {expected:.2f})",
        )
    if "gain" in data["layers"][0]:
        ax.plot(
            layers,
            [r["gain"] for r in data["layers"]],
            marker="o",
            markersize=3,
            color="tab:red",
            label="cumulative gain Δ_l",
        )
    ax.axhline(0, color="gray", linewidth=0.8)
    ax.set_title("scalar mix and cumulative gain")
    _layer_axis(ax)
    ax.legend(loc="best", fontsize=7)


def _fractions_panel(
    ax: Axes, data: Mapping[str, Any], key: str, series: Sequence[tuple[str, str]], title: str
) -> None:
    """Fractions ``row[key][name]`` against the layer, one line per (name, label)."""
    layers = [row["layer"] for row in data["layers"]]
    for name, label in series:
        values = [row[key][name] for row in data["layers"]]
        ax.plot(layers, values, marker="o", markersize=3, label=label)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    _layer_axis(ax)
    ax.legend(loc="best", fontsize=7)


def _lens_panel(ax: Axes, data: Mapping[str, Any]) -> None:
    series = (("top1", "label's first token at rank 1"), ("top10", "in the top 10"))
    _fractions_panel(ax, data, "lens", series, "logit lens")


def _edit_panel(ax: Axes, data: Mapping[str, Any]) -> None:
    series = (("moved", "true → new"), ("to_new", "new after"), ("was_true", "true before"))
    title = f"edited subjects ({data['edit']['eligible']} eligible edits)"
    _fractions_panel(ax, data, "edit", series, title)


def probe_figure(data: Mapping[str, Any], title: str | None = None) -> Figure:
    """The panels of one probe run (see the module docstring)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    first = data["layers"][0]
    panels = [accuracy_panel]
    panels += [_mix_panel] if "scalar_mix" in data or "gain" in first else []
    panels += [_lens_panel] if "lens" in first else []
    panels += [_edit_panel] if "edit" in first else []
    with matplotlib.rc_context(FIGURE_RC):
        fig = Figure(figsize=(3.6 * len(panels) + 0.4, 3.4), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, draw in zip(axes, panels, strict=True):
            draw(ax, data)
        axes[0].set_title("linear probe, split by span string")
        fig.suptitle(title or _title(data))
    return fig


def _title(data: Mapping[str, Any]) -> str:
    task = data.get("task", {})
    model = (data.get("model") or {}).get("name", "")
    settings = data.get("settings", {})
    what = task.get("relation") or task.get("source", "")
    return f"{what} · {model} · {settings.get('site', '')}, {settings.get('token', '')} token"


def relations_figure(datas: Sequence[Mapping[str, Any]], titles: Sequence[str]) -> Figure:
    """One accuracy panel per task, in a grid of up to three columns."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(3, len(datas))
    rows = -(-len(datas) // cols)
    with matplotlib.rc_context(FIGURE_RC):
        fig = Figure(figsize=(3.6 * cols + 0.4, 3.2 * rows), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        for i, (ax, data, title) in enumerate(zip(axes, datas, titles, strict=False)):
            accuracy_panel(ax, data, legend=i == 0)
            ax.set_title(title, fontsize=8)
        for ax in axes[len(datas) :]:
            ax.set_axis_off()
    return fig
