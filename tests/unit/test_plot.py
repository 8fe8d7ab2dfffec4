"""Sequential-editing curves: the series read from a report's ``stream``, the PNG + SVG files,
labels, skipped panels and the errors for reports without a stream."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from factedit.errors import FactEditError
from factedit.evaluate.plot import (
    METRICS,
    line_labels,
    load_reports,
    norm_ratio,
    output_stem,
    panel_metrics,
    plot_stream,
    stream_figure,
    stream_series,
)
from proc_helpers import run_python

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def point(
    edits: int,
    eff: float | None,
    para: float | None,
    norms: list[tuple[float, float]],
    **extra: Any,
) -> dict[str, Any]:
    """One stream point; ``norms`` is (delta_norm, weight_norm) per edited matrix."""
    return {
        "edits": edits,
        "batches": edits // 100,
        "efficacy": eff,
        "paraphrase": para,
        "neighborhood": extra.get("neighborhood", 70.0),
        "entropy": extra.get("entropy", 600.0),
        "perplexity": extra.get("perplexity", 28.0),
        "norms": [
            {"param": f"model.layers.{i}.mlp.down_proj.weight", "delta_norm": d, "weight_norm": w}
            for i, (d, w) in enumerate(norms)
        ],
        "seconds": float(edits),
    }


def report(method: str, points: list[dict[str, Any]], model: str = "gpt2-xl") -> dict[str, Any]:
    """A minimal ``factedit.eval/1`` report carrying a stream."""
    return {
        "schema": "factedit.eval/1",
        "source": {"path": "facts.yaml", "kind": "spec", "n_edits": 200},
        "model": {"name": model},
        "settings": {"mode": "sequential", "method": method},
        "stream": {"batch_size": 100, "sample": {"size": 100, "seed": 0}, "points": points},
    }


@pytest.fixture
def memit() -> dict[str, Any]:
    return report(
        "memit",
        [
            point(0, 24.0, 26.5, [(0.0, 30.0), (0.0, 40.0)]),
            point(100, 97.0, 80.0, [(3.0, 30.0), (2.0, 40.0)], entropy=590.5),
            point(200, 91.0, 71.0, [(3.0, 30.0), (8.0, 40.0)], neighborhood=60.0, perplexity=31.5),
        ],
    )


@pytest.fixture
def alphaedit() -> dict[str, Any]:
    return report(
        "alphaedit",
        [
            point(0, 24.0, None, [(0.0, 30.0)]),
            point(100, 99.0, None, [(1.5, 30.0)]),
            point(200, 98.0, None, [(6.0, 30.0)]),
        ],
    )


# ---- series ----------------------------------------------------------------------------------
def test_series_values(memit: dict[str, Any]) -> None:
    series = stream_series(memit)
    assert set(series) == set(METRICS)
    xs, eff = series["efficacy"]
    assert xs == [0, 100, 200]
    assert eff == [24.0, 97.0, 91.0]
    assert series["paraphrase"][1] == [26.5, 80.0, 71.0]
    assert series["neighborhood"][1] == [70.0, 70.0, 60.0]
    assert series["entropy"][1] == [600.0, 590.5, 600.0]
    assert series["perplexity"][1] == [28.0, 28.0, 31.5]
    # the largest ratio over the matrices: 3/30 = 0.1 beats 2/40; then 8/40 = 0.2 beats 3/30
    ratios = series["norm_ratio"][1]
    assert ratios == pytest.approx([0.0, 0.1, 0.2])
    assert all(x == xs for x, _ in series.values())


def test_norm_ratio_edge_cases() -> None:
    assert norm_ratio([]) is None
    assert norm_ratio(None) is None
    assert norm_ratio([{"param": "w", "delta_norm": 1.0, "weight_norm": 0.0}]) is None
    assert norm_ratio([{"param": "w", "delta_norm": None, "weight_norm": 2.0}]) is None
    mixed = [{"delta_norm": 1.0, "weight_norm": 0.0}, {"delta_norm": 1.0, "weight_norm": 4.0}]
    assert norm_ratio(mixed) == 0.25


def test_null_and_missing_values_are_none(alphaedit: dict[str, Any]) -> None:
    alphaedit["stream"]["points"][1].pop("entropy")
    alphaedit["stream"]["points"][2]["neighborhood"] = float("nan")
    series = stream_series(alphaedit)
    assert series["paraphrase"][1] == [None, None, None]
    assert series["entropy"][1] == [600.0, None, 600.0]
    assert series["neighborhood"][1] == [70.0, 70.0, None]


def test_point_without_edits_is_an_error(memit: dict[str, Any]) -> None:
    del memit["stream"]["points"][1]["edits"]
    with pytest.raises(FactEditError, match=r"point 1 .*edits"):
        stream_series(memit)


# ---- panels and labels -----------------------------------------------------------------------
def test_panel_skipped_only_when_null_in_every_report(
    memit: dict[str, Any], alphaedit: dict[str, Any]
) -> None:
    both = [stream_series(memit), stream_series(alphaedit)]
    assert panel_metrics(both) == list(METRICS)  # memit measured paraphrase
    only_alpha = [stream_series(alphaedit)]
    assert "paraphrase" not in panel_metrics(only_alpha)
    assert panel_metrics(only_alpha) == [m for m in METRICS if m != "paraphrase"]


def test_figure_has_one_panel_per_measured_metric(
    memit: dict[str, Any], alphaedit: dict[str, Any]
) -> None:
    for p in memit["stream"]["points"]:
        p["paraphrase"] = None
    fig = stream_figure([memit, alphaedit])
    titles = [ax.get_title() for ax in fig.axes]
    measured = ("efficacy", "neighborhood", "entropy", "perplexity", "norm_ratio")
    assert titles == [METRICS[m] for m in measured]
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["memit", "alphaedit"]
    assert list(lines[0].get_xdata()) == [0, 100, 200]
    assert list(lines[1].get_ydata()) == [24.0, 99.0, 98.0]


def test_labels_name_the_model_only_when_models_differ(
    memit: dict[str, Any], alphaedit: dict[str, Any]
) -> None:
    assert line_labels([memit, alphaedit]) == ["memit", "alphaedit"]
    alphaedit["model"] = {"name": "llama-3-8b"}
    assert line_labels([memit, alphaedit]) == ["memit (gpt2-xl)", "alphaedit (llama-3-8b)"]
    assert line_labels([memit, memit]) == ["memit #1", "memit #2"]
    del memit["model"]
    memit["settings"]["model"] = "gpt-j"
    assert line_labels([memit, alphaedit]) == ["memit (gpt-j)", "alphaedit (llama-3-8b)"]


# ---- files -----------------------------------------------------------------------------------
def test_plot_writes_png_and_svg(
    tmp_path: Path, memit: dict[str, Any], alphaedit: dict[str, Any]
) -> None:
    paths = plot_stream([memit, alphaedit], tmp_path / "out" / "curves.png")
    assert paths == [tmp_path / "out" / "curves.png", tmp_path / "out" / "curves.svg"]
    png, svg = paths
    assert png.stat().st_size > 1000
    assert png.read_bytes()[:8] == PNG_MAGIC
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    text = " ".join(el.text or "" for el in root.iter())
    assert "memit" in text
    assert "alphaedit" in text
    assert "efficacy" in text
    assert sorted(p.name for p in png.parent.iterdir()) == ["curves.png", "curves.svg"]


@pytest.mark.parametrize("name", ["curves", "curves.svg", "curves.PNG"])
def test_any_suffix_gives_both_files(tmp_path: Path, name: str) -> None:
    assert output_stem(tmp_path / name) == tmp_path / "curves"
    assert output_stem(tmp_path / "run.v2") == tmp_path / "run.v2"


def test_plot_replaces_existing_files(tmp_path: Path, memit: dict[str, Any]) -> None:
    (tmp_path / "c.png").write_bytes(b"old")
    (tmp_path / "c.svg").write_bytes(b"old")
    paths = plot_stream([memit], tmp_path / "c")
    assert paths == [tmp_path / "c.png", tmp_path / "c.svg"]
    assert paths[0].read_bytes()[:8] == PNG_MAGIC
    assert b"<svg" in paths[1].read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["c.png", "c.svg"]


def test_failed_write_leaves_no_temporary(
    tmp_path: Path, memit: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.figure import Figure

    real = Figure.savefig

    def savefig(self: Figure, fh: Any, format: str, **kw: Any) -> None:
        if format == "svg":
            raise RuntimeError("disk on fire")
        real(self, fh, format=format, **kw)

    (tmp_path / "c.svg").write_bytes(b"previous")
    monkeypatch.setattr(Figure, "savefig", savefig)
    with pytest.raises(RuntimeError, match="disk on fire"):
        plot_stream([memit], tmp_path / "c.png")
    assert sorted(os.listdir(tmp_path)) == ["c.png", "c.svg"]
    assert (tmp_path / "c.svg").read_bytes() == b"previous"


def test_missing_stream_writes_nothing(tmp_path: Path, memit: dict[str, Any]) -> None:
    del memit["stream"]
    with pytest.raises(FactEditError):
        plot_stream([memit], tmp_path / "c.png")
    assert list(tmp_path.iterdir()) == []


# ---- errors ----------------------------------------------------------------------------------
def test_missing_stream_is_an_error(memit: dict[str, Any], alphaedit: dict[str, Any]) -> None:
    del alphaedit["stream"]
    with pytest.raises(FactEditError, match="alphaedit on gpt2-xl") as err:
        stream_figure([memit, alphaedit])
    assert "--sequential --batch-size N" in str(err.value)
    assert "\n" not in str(err.value)


def test_empty_stream_is_an_error(memit: dict[str, Any], tmp_path: Path) -> None:
    memit["stream"]["points"] = []
    with pytest.raises(FactEditError, match=r"memit.*--sequential --batch-size N"):
        plot_stream([memit], tmp_path / "c.png")


def test_no_reports_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FactEditError, match="no reports"):
        plot_stream([], tmp_path / "c.png")


def test_load_reports(tmp_path: Path, memit: dict[str, Any], alphaedit: dict[str, Any]) -> None:
    good = tmp_path / "memit.json"
    good.write_text(json.dumps(memit))
    assert load_reports([good]) == [memit]

    with pytest.raises(FactEditError, match=r"nope\.json: no such report file"):
        load_reports([good, tmp_path / "nope.json"])

    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "factedit.eval/1",')
    with pytest.raises(FactEditError, match=r"bad\.json: not valid JSON \(line 1") as err:
        load_reports([bad])
    assert "\n" not in str(err.value)

    other = tmp_path / "other.json"
    other.write_text("[1, 2]")
    with pytest.raises(FactEditError, match=r"other\.json: not a `factedit eval --json` report"):
        load_reports([other])

    del alphaedit["stream"]
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(alphaedit))
    with pytest.raises(FactEditError, match=r"plain\.json \(alphaedit.*--batch-size N"):
        load_reports([good, plain])


def test_import_does_not_load_matplotlib() -> None:
    code = "import sys, factedit.evaluate.plot; print('matplotlib' in sys.modules)"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "src")}
    done = run_python(["-c", code], cwd=REPO, env=env)
    assert done.stdout.strip() == "False"
