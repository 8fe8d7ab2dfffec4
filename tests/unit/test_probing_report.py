"""The probe report: JSON numbers from scores, the terminal view, the figures."""

from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console

from factedit.figures import write_figure
from factedit.probing.edited import EditShift
from factedit.probing.lens import lens_summary
from factedit.probing.mix import Cumulative, ScalarMix
from factedit.probing.plot import probe_figure, relations_figure
from factedit.probing.report import decodable_from, mean_std, probe_json, terminal_view
from factedit.probing.train import ProbeScores, Split


def _report() -> dict:
    acc = np.array([[0.5, 0.6, 0.9, 0.95], [0.5, 0.7, 0.9, 0.85]])
    ctrl = np.full((2, 4), 0.5)
    splits = [Split(s, np.arange(6), np.arange(6, 8)) for s in range(2)]
    scores = ProbeScores(acc, ctrl, np.array([0.5, 0.5]), splits)
    mix = ScalarMix(np.array([[0.1, 0.1, 0.4, 0.4]] * 2), np.ones(2), np.array([0.9, 0.9]))
    cum = Cumulative(acc, np.array([0.5, 0.5]))
    ranks = np.array([[5, 3, 1, 1], [9, 20, 2, 1]])
    lens = lens_summary(ranks, np.full((2, 4), 0.25))
    shift = EditShift(3, [0, 2], np.array([0, 0, 0.5, 1]), np.ones(4), np.ones(4))
    meta = {"task": {"examples": 8, "spans": 8, "labels": {"a": 4, "b": 4}}, "edit": {}}
    labels = ["a", "b"] * 4
    return probe_json(meta, scores, labels=labels, mix=mix, cumulative=cum, lens=lens, shift=shift)


def test_report_numbers():
    data = _report()
    assert data["majority_baseline"] == 0.5 and data["chance"] == 0.5
    assert [r["selectivity"] for r in data["layers"]] == pytest.approx([0, 0.15, 0.4, 0.4])
    assert data["decodable_from"] == 2 and data["plateau"] == [2, 3]
    assert data["peak_layer"] == 2 and data["peak_accuracy"] == pytest.approx(0.9)
    assert data["layers"][1]["accuracy"] == pytest.approx({"mean": 0.65, "std": 0.05})
    assert data["scalar_mix"]["expected_layer"] == pytest.approx(0.1 + 0.8 + 1.2)
    assert data["layers"][0]["gain"] == pytest.approx(0.0)
    assert data["layers"][2]["lens"] == {"top1": 0.5, "top10": 1.0, "median_rank": 1.5,
                                         "mean_prob": 0.25}  # fmt: skip
    assert data["edit"] == {"edits": 3, "eligible": 2}
    assert data["layers"][3]["edit"] == {"moved": 1.0, "to_new": 1.0, "was_true": 1.0}


def test_decodable_from_and_mean_std():
    assert decodable_from([0.0, 0.1, 0.31, 0.4]) == 2  # 0.31 >= 0.75 * 0.4
    assert decodable_from([-0.1, 0.0]) is None
    assert mean_std(np.array([1.0, 3.0])) == {"mean": 2.0, "std": 1.0}


def test_terminal_view_has_every_column():
    con = Console(width=120, record=True)
    con.print(terminal_view(_report()))
    text = con.export_text()
    for word in ("accuracy", "control", "mix weight", "gain", "lens top-1", "moved"):
        assert word in text
    assert "0.650 ±0.050" in text and "decodable from layer 2" in text
    assert "2 of 3 edits" in text


def test_figures_are_written_as_png_and_svg(tmp_path):
    data = _report()
    files = write_figure(probe_figure(data), tmp_path / "probe")
    files += write_figure(relations_figure([data, data], ["one", "two"]), tmp_path / "curves")
    assert [f.name for f in files] == ["probe.png", "probe.svg", "curves.png", "curves.svg"]
    assert all(f.stat().st_size > 1000 for f in files)
    assert "one" in (tmp_path / "curves.svg").read_text()
