"""Probe training on synthetic features: the planted layer is found (and nothing below it),
the split never shares a span string, the control task is fixed per span, the scalar mix
and the cumulative gain point at the planted layer."""

from __future__ import annotations

import numpy as np
import pytest

from factedit.probing.edited import EditTarget, edit_shift, final_probes
from factedit.probing.mix import Cumulative, cumulative_scores, scalar_mix
from factedit.probing.report import decodable_from
from factedit.probing.train import (
    control_labels,
    grouped_splits,
    majority_accuracy,
    probe_layers,
)
from probing_helpers import planted_features

pytestmark = pytest.mark.usefixtures("one_thread")

K = 3  # the planted layer


@pytest.fixture(scope="module")
def planted():
    x, labels, groups = planted_features(150, layers=6, dim=16, layer=K, classes=3)
    splits = grouped_splits(groups, seeds=3, test_size=0.3)
    return x, labels, groups, splits


def test_planted_layer_is_decoded_there_and_not_elsewhere(planted):
    x, labels, groups, splits = planted
    scores = probe_layers(x, labels, groups, splits)
    acc = scores.accuracy.mean(axis=0)
    assert acc[K] > 0.95
    for layer in (0, 1, 2, 4, 5):
        assert acc[layer] < 0.55, (layer, acc)  # chance is 1/3
    assert np.argmax(scores.selectivity) == K
    assert decodable_from(list(scores.selectivity)) == K
    assert scores.control.mean() == pytest.approx(1 / 3, abs=0.12)
    assert scores.accuracy.shape == scores.control.shape == (3, 6)


def test_scalar_mix_and_cumulative_gain_point_at_the_planted_layer(planted):
    x, labels, _, splits = planted
    mix = scalar_mix(x, labels, splits, epochs=150)
    weights = mix.weights.mean(axis=0)
    assert np.argmax(weights) == K and weights[K] > 0.5
    assert mix.expected_layer == pytest.approx(K, abs=0.6)
    assert mix.accuracy.mean() > 0.9
    majority = np.array([majority_accuracy(labels, s) for s in splits])
    cum = cumulative_scores(x, labels, splits, majority, epochs=150)
    assert np.argmax(cum.gain) == K and cum.gain[K] > 0.4
    assert cum.accuracy[:, :K].mean() < 0.55 and cum.accuracy[:, K:].mean() > 0.85
    assert cum.expected_layer == pytest.approx(K, abs=0.7)


def test_cumulative_gain_arithmetic():
    cum = Cumulative(np.array([[0.4, 0.6, 0.9, 0.8]]), np.array([0.3]))
    assert cum.gain == pytest.approx([0.1, 0.2, 0.3, -0.1])
    assert cum.expected_layer == pytest.approx((0 * 0.1 + 1 * 0.2 + 2 * 0.3) / 0.6)
    assert Cumulative(np.array([[0.2, 0.1]]), np.array([0.5])).expected_layer is None


@pytest.mark.parametrize("seeds", [1, 5])
def test_split_never_puts_one_span_string_on_both_sides(seeds):
    rng = np.random.default_rng(3)
    groups = [f"s{int(v)}" for v in rng.integers(0, 40, size=200)]  # 1-12 rows per string
    splits = grouped_splits(groups, seeds=seeds, test_size=0.25)
    assert len(splits) == seeds
    for split in splits:
        train = {groups[i] for i in split.train}
        test = {groups[i] for i in split.test}
        assert train and test and not train & test
        assert sorted([*split.train, *split.test]) == list(range(len(groups)))
        assert 0.15 < len(test) / len(set(groups)) < 0.35
    if seeds > 1:
        assert len({tuple(s.test) for s in splits}) == seeds  # seeds give other splits


def test_control_labels_are_fixed_per_span_and_redrawn_per_seed():
    groups = [f"s{i % 30}" for i in range(90)]  # 3 rows per span string
    labels = [f"l{(i % 30) % 3}" for i in range(90)]
    first = control_labels(groups, labels, seed=0)
    for g in set(groups):
        assert len({first[i] for i, h in enumerate(groups) if h == g}) == 1
    # the span strings' label distribution is kept exactly (a permutation over strings)
    per_group = {g: first[groups.index(g)] for g in set(groups)}
    assert sorted(per_group.values()) == sorted(labels[i] for i in range(30))
    again = control_labels(groups, labels, seed=0)
    other = control_labels(groups, labels, seed=1)
    assert list(first) == list(again) and list(first) != list(other)


def test_majority_baseline_uses_the_training_majority():
    from factedit.probing.train import Split

    labels = ["a", "a", "a", "b", "b", "a"]
    split = Split(0, np.array([0, 1, 2, 3]), np.array([4, 5]))
    assert majority_accuracy(labels, split) == 0.5


def test_one_label_in_training_predicts_it():
    x = np.zeros((4, 1, 2))
    probes = final_probes(x, ["a", "a", "a", "a"], np.arange(4))
    assert list(probes[0].predict(x[:, 0])) == ["a"] * 4


def test_edit_shift_on_a_hand_made_case():
    # layer 0 and 1: "Paris" around (+3, 0), "Rome" around (-3, 0), "Berlin" around (0, +3)
    centres = {"Paris": (3.0, 0.0), "Rome": (-3.0, 0.0), "Berlin": (0.0, 3.0)}
    rng = np.random.default_rng(0)
    labels = [name for name in centres for _ in range(20)]
    x = np.stack([np.array(centres[name]) + 0.3 * rng.standard_normal(2) for name in labels])
    x = np.stack([x, x], axis=1)  # [60, 2 layers, 2]
    probes = final_probes(x, labels, np.arange(len(labels)))
    p, r = centres["Paris"], centres["Rome"]
    edits = [
        EditTarget("A", "{} is in", "Paris", "Rome"),  # moves at layer 1 only
        EditTarget("B", "{} is in", "Rome", "Paris"),  # does not move
        EditTarget("C", "{} is in", "Rome", "Tokyo"),  # Tokyo is no label: not eligible
    ]
    before = np.array([[p, p], [r, r], [r, r]])
    after = np.array([[p, r], [r, r], [p, p]])
    shift = edit_shift(probes, before, after, edits)
    assert shift.edits == 3 and shift.eligible == [0, 1]
    assert list(shift.moved) == [0.0, 0.5]
    assert list(shift.to_new) == [0.0, 0.5]
    assert list(shift.was_true) == [1.0, 1.0]
