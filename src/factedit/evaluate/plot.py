"""Sequential-editing curves from ``factedit.eval/1`` reports (PNG + SVG).

    reports = load_reports(["memit.json", "alphaedit.json"])
    plot_stream(reports, "curves.png")        # curves.png, curves.svg

``factedit eval --sequential --batch-size N`` records a point of a curve after every batch of
edits in the report's ``stream`` key (see docs/eval-json-schema.md). Each panel is one metric
(efficacy, paraphrase, neighborhood, generation entropy, held-out perplexity and the
largest ‖ΔW‖/‖W‖ over the edited matrices) against the number of edits so far, with one line
per report labelled by its method (and its model when the reports' models differ). A metric
that no report measured gets no panel.

matplotlib is imported inside the functions that draw, so importing this module (and starting
the CLI) stays fast; figures are drawn on the Agg canvas and never reach a display.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from factedit.errors import FactEditError
from factedit.figures import FIGURE_RC, write_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Panel order and titles; keys are the metrics :func:`stream_series` returns.
METRICS: dict[str, str] = {
    "efficacy": "efficacy (%)",
    "paraphrase": "paraphrase (%)",
    "neighborhood": "neighborhood (%)",
    "entropy": "generation entropy (×100)",
    "perplexity": "held-out perplexity",
    "norm_ratio": "‖ΔW‖ / ‖W‖ (largest matrix)",
}
#: Metrics read straight from each point; ``norm_ratio`` is derived from ``norms``.
POINT_METRICS = ("efficacy", "paraphrase", "neighborhood", "entropy", "perplexity")
NEEDS = "it needs a report written by `factedit eval --sequential --batch-size N`"
_SUFFIXES = (".png", ".svg")

Series = tuple[list[int], list[float | None]]


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (null, missing, non-numeric, NaN/Inf)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def norm_ratio(norms: Any) -> float | None:
    """The largest ``delta_norm / weight_norm`` over the edited matrices of one point.

    None when no matrix has both numbers (and a positive ``weight_norm``).
    """
    ratios = []
    for entry in norms if isinstance(norms, list) else []:
        if not isinstance(entry, Mapping):
            continue
        delta, weight = _number(entry.get("delta_norm")), _number(entry.get("weight_norm"))
        if delta is not None and weight is not None and weight > 0:
            ratios.append(delta / weight)
    return max(ratios) if ratios else None


def describe(report: Mapping[str, Any]) -> str:
    """``memit on gpt2-xl (facts.yaml)``: the method, model and source a report is about."""
    settings = report.get("settings") or {}
    text = str(settings.get("method") or "unknown method")
    model = model_name(report)
    if model:
        text += f" on {model}"
    source = (report.get("source") or {}).get("path")
    return text + (f" ({source})" if source else "")


def model_name(report: Mapping[str, Any]) -> str:
    """The model's name: ``report["model"]["name"]``, else ``settings["model"]``, else ``""``."""
    model = report.get("model")
    if isinstance(model, Mapping) and model.get("name"):
        return str(model["name"])
    if isinstance(model, str):
        return model
    return str((report.get("settings") or {}).get("model") or "")


def stream_points(report: Mapping[str, Any], name: str | None = None) -> list[Mapping[str, Any]]:
    """The report's ``stream.points``; a :class:`FactEditError` naming ``name`` (default: its
    method, model and source) when there are none."""
    stream = report.get("stream")
    points = stream.get("points") if isinstance(stream, Mapping) else None
    if not isinstance(points, list) or not points:
        what = "no `stream` key" if not isinstance(stream, Mapping) else "no stream points"
        raise FactEditError(f"{name or describe(report)}: {what}; {NEEDS}")
    return points


def stream_series(report: Mapping[str, Any]) -> dict[str, Series]:
    """Metric -> (edits so far, values) for every metric in :data:`METRICS`.

    A value is None where the point did not measure it; ``norm_ratio`` is :func:`norm_ratio`
    of the point's ``norms``. Raises :class:`FactEditError` for a report without a stream.
    """
    points = stream_points(report)
    xs: list[int] = []
    series: dict[str, list[float | None]] = {metric: [] for metric in METRICS}
    for i, point in enumerate(points):
        edits = _number(point.get("edits")) if isinstance(point, Mapping) else None
        if edits is None:
            raise FactEditError(
                f"{describe(report)}: stream point {i} has no number of `edits`; {NEEDS}"
            )
        xs.append(int(edits))
        for metric in POINT_METRICS:
            series[metric].append(_number(point.get(metric)))
        series["norm_ratio"].append(norm_ratio(point.get("norms")))
    return {metric: (list(xs), ys) for metric, ys in series.items()}


def panel_metrics(all_series: Sequence[Mapping[str, Series]]) -> list[str]:
    """The metrics that get a panel: those with a value in at least one report."""
    return [
        metric
        for metric in METRICS
        if any(v is not None for s in all_series for v in s.get(metric, ([], []))[1])
    ]


def line_labels(reports: Sequence[Mapping[str, Any]]) -> list[str]:
    """One legend label per report: its method, plus ``(model)`` when the models differ;
    reports that would still share a label are numbered (``memit #2``)."""
    methods = [str((r.get("settings") or {}).get("method") or "?") for r in reports]
    models = [model_name(r) for r in reports]
    if len(set(models)) > 1:
        methods = [f"{m} ({model or '?'})" for m, model in zip(methods, models, strict=True)]
    labels = []
    for i, label in enumerate(methods):
        if methods.count(label) > 1:
            label = f"{label} #{methods[: i + 1].count(label)}"
        labels.append(label)
    return labels


def stream_figure(reports: Sequence[Mapping[str, Any]]) -> Figure:
    """The curves as a matplotlib figure on the Agg canvas (one panel per measured metric)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not reports:
        raise FactEditError(f"no reports to plot; {NEEDS}")
    all_series = [stream_series(report) for report in reports]
    metrics = panel_metrics(all_series)
    labels = line_labels(reports)
    with matplotlib.rc_context(FIGURE_RC):
        fig = Figure(figsize=(3.3 * max(len(metrics), 1) + 0.6, 3.4), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, max(len(metrics), 1), squeeze=False)[0]
        for ax, metric in zip(axes, metrics, strict=False):
            for series, label in zip(all_series, labels, strict=True):
                xs, ys = series[metric]
                values = [math.nan if y is None else y for y in ys]
                ax.plot(xs, values, marker="o", markersize=3, label=label)
            ax.set_title(METRICS[metric])
            ax.set_xlabel("edits so far")
            ax.grid(alpha=0.3)
        if metrics:
            axes[0].legend(loc="best", fontsize=8)
        else:
            axes[0].text(0.5, 0.5, "no metric measured", ha="center", va="center")
            axes[0].set_axis_off()
        fig.suptitle(_title(reports))
    return fig


def _title(reports: Sequence[Mapping[str, Any]]) -> str:
    """``Sequential editing: gpt2-xl, batches of 100``: the common model and batch size."""
    models = sorted({model_name(r) for r in reports} - {""})
    sizes = sorted({str((r.get("stream") or {}).get("batch_size")) for r in reports} - {"None"})
    title = "Sequential editing"
    if len(models) == 1:
        title += f": {models[0]}"
    if sizes:
        title += f", batches of {' / '.join(sizes)}"
    return title


def output_stem(out: str | Path) -> Path:
    """``out`` without a ``.png`` / ``.svg`` suffix (any other suffix is kept)."""
    out = Path(out)
    return out.with_suffix("") if out.suffix.lower() in _SUFFIXES else out


def plot_stream(reports: Sequence[Mapping[str, Any]], out: str | Path) -> list[Path]:
    """Draw the sequential-editing curves of ``reports`` into ``<stem>.png`` and ``<stem>.svg``.

    Both files are written atomically (:func:`factedit.figures.write_figure`); returns the two
    paths. Raises :class:`FactEditError` for a report without a stream.
    """
    return write_figure(stream_figure(reports), output_stem(out), dpi=120)


def load_reports(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Read ``factedit.eval/1`` JSON reports that carry a stream; a one-line
    :class:`FactEditError` names a file that is missing, not JSON, not a report or has no
    stream."""
    reports = []
    for path in paths:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FactEditError(f"{path}: no such report file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise FactEditError(f"{path}: cannot read it ({exc})") from None
        except json.JSONDecodeError as exc:
            raise FactEditError(
                f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
            ) from None
        schema = data.get("schema") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not str(schema or "").startswith("factedit.eval/"):
            raise FactEditError(f"{path}: not a `factedit eval --json` report")
        stream_points(data, f"{path} ({describe(data)})")
        reports.append(data)
    return reports
