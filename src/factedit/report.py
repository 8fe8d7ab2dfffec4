"""Evaluation reports: versioned JSON (``factedit.eval/1``), Markdown and rich tables.

    report = build_report(result, model=lm, source=path, settings={...})
    write_json(path, report)                 # atomic; schema in docs/eval-json-schema.md
    atomic_write_text(path, render_markdown(report, per_edit=True))
    console.print(metrics_table(report["metrics"]["unedited"], report["metrics"]["edited"]))

Every renderer reads the report dict, so the terminal, Markdown and JSON always agree.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

import factedit
from factedit.evaluate.gate import Shortfall
from factedit.evaluate.metrics import (
    LABELS,
    METRIC_KEYS,
    PROTOCOL_LABELS,
    metric_meta,
    view_for,
)
from factedit.evaluate.runner import EditOutcome, EvalResult
from factedit.models.loading import LoadedModel
from factedit.paths import atomic_write_text

SCHEMA = "factedit.eval/1"
#: Metrics in per-edit rows (the JSON has every metric of every edit).
PER_EDIT_METRICS = ("s", "es", "ps", "ns", "ge", "efficacy", "paraphrase", "specificity")


# --------------------------------------------------------------------------- building


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {
        "factedit": factedit.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def _model_info(lm: LoadedModel) -> dict[str, Any]:
    param = next(lm.model.parameters())
    return {
        "name": lm.name,
        "identity": lm.identity,
        "model_type": lm.arch.model_type,
        "num_layers": lm.arch.num_layers,
        "dtype": str(param.dtype).removeprefix("torch."),
        "device": str(param.device),
    }


def _delta(unedited: Mapping[str, float], edited: Mapping[str, float]) -> dict[str, float]:
    return {k: edited[k] - unedited[k] for k in METRIC_KEYS if k in edited and k in unedited}


def _edit_entry(outcome: EditOutcome) -> dict[str, Any]:
    req = outcome.request
    before, after = outcome.metrics_unedited, outcome.metrics_edited
    return {
        "index": outcome.index,
        "case_id": req.case_id,
        "subject": req.subject,
        "prompt": req.rewrite_prompt,
        "target_new": req.target_new,
        "target_true": req.target_true,
        "layers": list(outcome.layers),
        "status": outcome.status,
        "reason": outcome.reason,
        "error": outcome.reason if outcome.status == "refused" else None,
        "timing": {"edit_s": outcome.edit_seconds, "measure_s": outcome.measure_seconds},
        "perplexity": outcome.perplexity,
        "metrics": {"unedited": before, "edited": after, "delta": _delta(before, after)},
        "measurements": {
            "unedited": outcome.unedited.to_dict(),
            "edited": outcome.edited.to_dict(),
        },
    }


def build_report(
    result: EvalResult,
    *,
    model: LoadedModel,
    edited_model: LoadedModel | None = None,
    source: str | Path | None = None,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``factedit.eval/1`` report of one run (plain JSON-able data)."""
    unedited, edited = result.unedited, result.edited
    return {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {
            "path": None if source is None else str(source),
            "kind": result.kind,
            "n_edits": len(result.outcomes),
        },
        "model": _model_info(model),
        "edited_model": None if edited_model is None else _model_info(edited_model),
        "settings": {"mode": result.mode, **result.options.to_dict(), **dict(settings or {})},
        "versions": _versions(),
        "timing": dict(result.timing),
        "refused": len(result.refused),
        "n_failed": len(result.refused),
        "averaged_over": len(result.counted),
        "view": list(view_for(result.kind, edited)),
        "metrics": {"unedited": unedited, "edited": edited, "delta": _delta(unedited, edited)},
        "metric_meta": metric_meta([k for k in METRIC_KEYS if k in edited or k in unedited]),
        "edits": [_edit_entry(o) for o in result.outcomes],
        "fluency_probe": None if result.fluency_probe is None else result.fluency_probe.to_dict(),
        "stream": result.stream,
        "heldout_perplexity": result.heldout,
        "updates": result.updates,
    }


def write_json(path: str | Path, report: Mapping[str, Any]) -> None:
    """Write ``report`` atomically (never half-written)."""
    atomic_write_text(path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- rendering


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    if round(value, 1) == 0:
        value = 0.0  # no "-0.0"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def metric_rows(
    unedited: Mapping[str, float], edited: Mapping[str, float], names: Sequence[str] | None = None
) -> list[tuple[str, str, str, str, str]]:
    """(label, unedited, edited, delta, protocol) strings per metric, in display order,
    grouped by protocol (in the order each protocol first appears)."""
    names = names or [k for k in METRIC_KEYS if k in edited or k in unedited]
    order = list(dict.fromkeys(PROTOCOL_LABELS.get(k, "") for k in names))
    names = sorted(names, key=lambda k: order.index(PROTOCOL_LABELS.get(k, "")))
    rows = []
    for key in names:
        before, after = unedited.get(key), edited.get(key)
        delta = None if before is None or after is None else after - before
        protocol = PROTOCOL_LABELS.get(key, "")
        label = LABELS.get(key, key)
        rows.append((label, _fmt(before), _fmt(after), _fmt(delta, signed=True), protocol))
    return rows


def summary_rows(report: Mapping[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """:func:`metric_rows` of the report's view, then the held-out perplexity where measured
    (lower is better; the edited value is the mean over the edited model states)."""
    metrics = report["metrics"]
    rows = metric_rows(metrics["unedited"], metrics["edited"], report["view"])
    heldout = report.get("heldout_perplexity") or {}
    before, after = heldout.get("unedited"), heldout.get("edited")
    if before is not None and after is not None:
        protocol = f"held-out text, {heldout['rows'] * heldout['seq_len']} tokens (lower: better)"
        rows.append(("perplexity", _fmt(before), _fmt(after), _fmt(after - before, True), protocol))
    return rows


def metrics_table(
    unedited: Mapping[str, float],
    edited: Mapping[str, float],
    names: Sequence[str] | None = None,
    *,
    title: str | None = None,
    rows: Sequence[tuple[str, str, str, str, str]] | None = None,
) -> Table:
    """A rich table: metric, unedited, edited, delta (used by eval and ``edit apply``);
    ``rows`` replaces the rows :func:`metric_rows` would give."""
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for column in ("unedited", "edited", "delta"):
        table.add_column(column, justify="right")
    table.add_column("protocol", style="dim")
    for row in rows if rows is not None else metric_rows(unedited, edited, names):
        table.add_row(*row)
    return table


def _edit_label(entry: Mapping[str, Any]) -> str:
    case = f"[{entry['case_id']}] " if entry.get("case_id") is not None else ""
    return f"{case}{entry['subject']} → {entry['target_new']}"


def per_edit_rows(report: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows (edited metrics, unedited in brackets) for each edit."""
    names = [n for n in report["view"] if n in PER_EDIT_METRICS]
    header = ["#", "edit", "layers", *(LABELS.get(n, n) for n in names)]
    rows = []
    for entry in report["edits"]:
        before, after = entry["metrics"]["unedited"], entry["metrics"]["edited"]
        cells = [f"{_fmt(after.get(n))} ({_fmt(before.get(n))})" for n in names]
        refused = entry["status"] == "refused"
        layers = ",".join(str(x) for x in entry["layers"]) or ("refused" if refused else "–")
        rows.append([str(entry["index"]), _edit_label(entry), layers, *cells])
    return header, rows


def per_edit_table(report: Mapping[str, Any]) -> Table:
    """A rich table with one row per edit: edited value (unedited value) per metric."""
    header, rows = per_edit_rows(report)
    table = Table(title="per edit: edited (unedited)", title_justify="left")
    for i, name in enumerate(header):
        if i == 1:
            table.add_column(name, max_width=40, no_wrap=True, overflow="ellipsis")
        else:
            table.add_column(name, justify="right" if i >= 3 else "left", no_wrap=True)
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    return table


def summary_table(report: Mapping[str, Any]) -> Table:
    """The run's aggregate table (print :func:`report_title` above it)."""
    metrics = report["metrics"]
    return metrics_table(metrics["unedited"], metrics["edited"], rows=summary_rows(report))


def report_title(report: Mapping[str, Any]) -> str:
    """One line naming model, source, number of edits, mode, method (and its variant), and
    how many edits were refused."""
    src, settings = report["source"], report["settings"]
    name = Path(src["path"]).name if src["path"] else "edits"
    how = settings["mode"]
    if settings.get("method") and settings["mode"] != "edited":
        how += f", {method_variant(settings)}"
    n = src["n_edits"]
    title = f"{report['model']['name']} · {name} · {n} edit{'' if n == 1 else 's'} · {how}"
    return title + (f" · refused: {report['refused']}" if report.get("refused") else "")


def method_variant(settings: Mapping[str, Any]) -> str:
    """``rome (value_scale: norm)``: the method and the setting that names its variant."""
    scale = (settings.get("hparams_resolved") or {}).get("value_scale")
    return settings["method"] + (f" (value_scale: {scale})" if scale else "")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], right_from: int) -> list[str]:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return lines


def render_markdown(
    report: Mapping[str, Any],
    *,
    per_edit: bool = False,
    shortfalls: Sequence[Shortfall] | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> str:
    """Markdown for a pull-request comment: summary table, gate verdict, optional per edit."""
    settings, timing = report["settings"], report["timing"]
    lines = [f"### factedit eval: {report_title(report)}", ""]
    rows = summary_rows(report)
    lines += _md_table(["metric", "unedited", "edited", "Δ", "protocol"], rows, right_from=1)
    lines.append("")
    if thresholds:
        if shortfalls:
            failed = "; ".join(s.describe() for s in shortfalls)
            lines.append(f"**Gate: FAILED** — {failed}")
        else:
            wanted = ", ".join(f"{k} ≥ {v:g}" for k, v in thresholds.items())
            lines.append(f"**Gate: passed** ({wanted})")
        lines.append("")
    layers = settings.get("layers")
    model = report["model"]
    pace = f"{timing.get('edits_per_minute', 0.0):.2f} edits/min"
    resumed = int(timing.get("resumed_edits") or 0)
    if resumed:
        pace += f", {resumed} resumed from an earlier run"
    lines.append(
        f"model `{model['name']}` (`{model['identity']}`), layers {layers}, "
        f"refused: {report['refused']}, {timing.get('total_s', 0.0):.0f} s "
        f"({pace}), factedit {report['versions']['factedit']}"
    )
    if per_edit:
        header, rows = per_edit_rows(report)
        lines += ["", "<details><summary>per edit: edited (unedited)</summary>", ""]
        lines += _md_table(header, rows, right_from=3)
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"
