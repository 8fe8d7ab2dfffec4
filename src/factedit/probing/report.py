"""The probe's JSON (every number) and its compact terminal view.

    data = probe_json(meta, scores, mix=mix, cumulative=cum, lens=lens, shift=shift)
    console.print(terminal_view(data))

Schema ``factedit.probe/1`` (fractions in [0, 1]; ``{mean, std}`` over seeds):

- ``majority_baseline`` (float: the training set's majority label scored on the test set,
  mean over seeds), ``chance`` (Σ p² of the label distribution: a guess by the prior);
- ``layers``: per layer ``layer``, ``accuracy`` and ``control_accuracy`` ``{mean, std}``,
  ``selectivity`` (accuracy mean - control mean), ``mix_weight`` (s_l),
  ``cumulative_accuracy`` ``{mean, std}`` and ``gain`` (Tenney's differential score), and
  with ``--lens`` ``lens`` ``{top1, top10, median_rank, mean_prob}``, with an edit ``edit``
  ``{moved, to_new, was_true}``;
- ``decodable_from``: the first layer whose selectivity reaches :data:`PLATEAU_FRACTION` of
  its peak (the rule of :func:`factedit.trace.window.plateau_window`, so the two curves
  compare), ``plateau`` that run of layers around the peak, ``peak_layer`` (best accuracy);
- ``scalar_mix`` ``{weights, gamma, expected_layer, accuracy}``, ``expected_layer_gain``;
- ``task``, ``model``, ``settings``, ``splits`` (per seed: train / test sizes, majority),
  ``cache`` and, with an edit, ``edit`` ``{source, edits, eligible, subjects}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from rich.console import Group
from rich.table import Table
from rich.text import Text

from factedit.probing.edited import EditShift
from factedit.probing.mix import Cumulative, ScalarMix
from factedit.probing.train import ProbeScores
from factedit.trace.window import PLATEAU_FRACTION, plateau_window

SCHEMA = "factedit.probe/1"
BARS = " ▁▂▃▄▅▆▇█"


def mean_std(values: np.ndarray) -> dict[str, float]:
    """``{mean, std}`` of ``values`` (population std; 0 for one value)."""
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "std": float(values.std())}


def decodable_from(selectivity: Sequence[float], fraction: float = PLATEAU_FRACTION) -> int | None:
    """First layer whose selectivity is at least ``fraction`` of the peak (None: no peak > 0)."""
    peak = max(selectivity)
    if peak <= 0:
        return None
    return next(i for i, v in enumerate(selectivity) if v >= fraction * peak)


def _layer_rows(
    scores: ProbeScores,
    mix: ScalarMix | None,
    cumulative: Cumulative | None,
    lens: list[dict[str, float]] | None,
    shift: EditShift | None,
) -> list[dict[str, Any]]:
    selectivity = scores.selectivity
    rows = []
    for layer in range(scores.accuracy.shape[1]):
        row: dict[str, Any] = {
            "layer": layer,
            "accuracy": mean_std(scores.accuracy[:, layer]),
            "control_accuracy": mean_std(scores.control[:, layer]),
            "selectivity": float(selectivity[layer]),
        }
        if mix is not None:
            row["mix_weight"] = float(mix.weights[:, layer].mean())
        if cumulative is not None:
            row["cumulative_accuracy"] = mean_std(cumulative.accuracy[:, layer])
            row["gain"] = float(cumulative.gain[layer])
        if lens is not None:
            row["lens"] = lens[layer]
        if shift is not None:
            row["edit"] = {
                "moved": float(shift.moved[layer]),
                "to_new": float(shift.to_new[layer]),
                "was_true": float(shift.was_true[layer]),
            }
        rows.append(row)
    return rows


def probe_json(
    meta: Mapping[str, Any],
    scores: ProbeScores,
    *,
    labels: Sequence[str],
    mix: ScalarMix | None = None,
    cumulative: Cumulative | None = None,
    lens: list[dict[str, float]] | None = None,
    shift: EditShift | None = None,
) -> dict[str, Any]:
    """The whole report: ``meta`` (task, model, settings, cache, edit source) and the numbers."""
    selectivity = [float(v) for v in scores.selectivity]
    accuracy = scores.accuracy.mean(axis=0)
    _, counts = np.unique(np.asarray(labels, dtype=str), return_counts=True)
    data: dict[str, Any] = {
        "schema": SCHEMA,
        **meta,
        "num_layers": int(scores.accuracy.shape[1]),
        "majority_baseline": float(scores.majority.mean()),
        "majority_baseline_std": float(scores.majority.std()),
        "chance": float(np.sum((counts / counts.sum()) ** 2)),
        "decodable_from": decodable_from(selectivity),
        "plateau": list(plateau_window(selectivity)) if max(selectivity) > 0 else [],
        "peak_layer": int(np.argmax(accuracy)),
        "peak_accuracy": float(accuracy.max()),
        "layers": _layer_rows(scores, mix, cumulative, lens, shift),
        "splits": [
            {"seed": s.seed, "train": len(s.train), "test": len(s.test), "majority": float(m)}
            for s, m in zip(scores.splits, scores.majority, strict=True)
        ],
    }
    if mix is not None:
        data["scalar_mix"] = {
            "weights": [float(w) for w in mix.weights.mean(axis=0)],
            "gamma": float(mix.gamma.mean()),
            "expected_layer": mix.expected_layer,
            "accuracy": mean_std(mix.accuracy),
        }
    if cumulative is not None:
        data["expected_layer_gain"] = cumulative.expected_layer
    if shift is not None:
        data.setdefault("edit", {}).update(edits=shift.edits, eligible=len(shift.eligible))
    return data


def _bar(value: float, lo: float, hi: float) -> str:
    level = 0 if hi <= lo else int(np.clip((value - lo) / (hi - lo), 0, 1) * (len(BARS) - 1))
    return BARS[level]


#: Optional columns: (header, the row key that must be present, the cell).
_EXTRA = (
    ("mix weight", "mix_weight", lambda r: f"{r['mix_weight']:.3f}"),
    ("gain", "gain", lambda r: f"{r['gain']:+.3f}"),
    ("lens top-1", "lens", lambda r: f"{r['lens']['top1']:.3f}"),
    ("moved", "edit", lambda r: f"{r['edit']['moved']:.3f}"),
)


def _table(data: Mapping[str, Any]) -> Table:
    """One row per layer: accuracy ± std, control, selectivity, a bar, optional columns."""
    rows = data["layers"]
    extra = [col for col in _EXTRA if col[1] in rows[0]]
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("layer", "accuracy", "control", "select.", "", *(c[0] for c in extra)):
        table.add_column(name, justify="right")
    for row in rows:
        acc = row["accuracy"]
        table.add_row(
            str(row["layer"]),
            f"{acc['mean']:.3f} ±{acc['std']:.3f}",
            f"{row['control_accuracy']['mean']:.3f}",
            f"{row['selectivity']:+.3f}",
            _bar(acc["mean"], data["majority_baseline"], 1.0),
            *(cell(row) for _, _, cell in extra),
        )
    return table


def summary_lines(data: Mapping[str, Any]) -> list[str]:
    """The lines under the table: baselines, where the label becomes decodable, the mix."""
    task = data.get("task", {})
    lines = [
        f"{task.get('examples', '?')} examples, {task.get('spans', '?')} span strings, "
        f"{len(task.get('labels', {}))} labels; split by span string, "
        f"{len(data['splits'])} seeds",
        f"majority baseline {data['majority_baseline']:.3f} · chance {data['chance']:.3f} · "
        f"peak accuracy {data['peak_accuracy']:.3f} at layer {data['peak_layer']}",
    ]
    if task.get("relation") is not None:
        dropped = task.get("dropped_labels", {})
        lines.append(
            f'relation "{task["relation"]}": labels with fewer than {task["min_count"]} subjects '
            f"dropped ({len(dropped)} labels, {sum(dropped.values())} subjects)"
        )
    if data.get("decodable_from") is not None:
        lines.append(
            f"decodable from layer {data['decodable_from']} (selectivity ≥ "
            f"{PLATEAU_FRACTION:.0%} of its peak; plateau {data['plateau']})"
        )
    if "scalar_mix" in data:
        gain = data.get("expected_layer_gain")
        lines.append(
            f"scalar mix: expected layer {data['scalar_mix']['expected_layer']:.2f}, "
            f"accuracy {data['scalar_mix']['accuracy']['mean']:.3f}"
            + (f"; expected layer from the cumulative gain {gain:.2f}" if gain is not None else "")
        )
    if "edit" in data:
        edit = data["edit"]
        lines.append(
            f"edit: {edit['eligible']} of {edit['edits']} edits have a target_new among the "
            "probe's labels; 'moved' = predicted target_true before, target_new after"
        )
    return lines


def terminal_view(data: Mapping[str, Any]) -> Group:
    """The table of layers and the summary lines, for a rich console."""
    return Group(_table(data), *(Text(line) for line in summary_lines(data)))
