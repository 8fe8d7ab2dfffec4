"""Linear probes per layer on a split by span string, the control task and selectivity.

    splits = grouped_splits(groups, seeds=5, test_size=0.25)   # no span string on both sides
    scores = probe_layers(X, labels, groups, splits)           # X [N, L, d]
    scores.accuracy          # [S, L] test accuracy per seed and layer
    scores.control           # [S, L] the same probe on the control task
    scores.majority          # [S]    the train set's majority label, scored on the test set

A probe is logistic regression (scikit-learn, L2, ``C``) on standardised features (the
scaler is fitted on the training rows only). The control task (Hewitt & Liang 2019) gives
each distinct span string a random label drawn from the empirical label distribution (the
span strings' labels, permuted), fixed for that string and redrawn for every seed;
selectivity is accuracy minus control accuracy (means over seeds). Under a split by span
string no test string was seen in training, so the control labels of the test set cannot be
learnt: control accuracy is what a probe of that capacity scores from the label prior and
chance alone, near chance for any representation.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Logistic regression: inverse L2 strength on standardised features, and its iteration cap.
DEFAULT_C = 1.0
MAX_ITER = 1000


@dataclass(frozen=True)
class Split:
    """One seed's split: row indices of the training and the test set."""

    seed: int
    train: np.ndarray
    test: np.ndarray


def grouped_splits(groups: Sequence[str], seeds: int = 5, test_size: float = 0.25) -> list[Split]:
    """``seeds`` random splits (seeds 0..S-1) that keep every group (span string) on one side;
    about ``test_size`` of the *groups* go to the test set."""
    from sklearn.model_selection import GroupShuffleSplit

    groups = np.asarray(groups, dtype=object)
    rows = np.zeros((len(groups), 1))
    out = []
    for seed in range(seeds):
        splitter = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
        train, test = next(splitter.split(rows, groups=groups))
        out.append(Split(seed, np.sort(train), np.sort(test)))
    return out


def control_labels(groups: Sequence[str], labels: Sequence[str], seed: int) -> np.ndarray:
    """[N] control labels: every distinct group gets a random label, shared by its rows.

    The labels are the groups' own labels (a group's first row's), randomly permuted over
    the groups: a draw from the empirical label distribution without replacement, so the
    control task has exactly the task's label distribution over span strings (an
    independent draw per group would add a random skew to every seed's control score).
    """
    rng = np.random.default_rng(10_000 + seed)
    first: dict[str, str] = {}
    for group, label in zip(groups, labels, strict=True):
        first.setdefault(group, label)
    distinct = list(first)
    drawn = rng.permutation(np.asarray([first[g] for g in distinct], dtype=object))
    table = dict(zip(distinct, drawn, strict=True))
    return np.asarray([table[g] for g in groups], dtype=object)


class _Constant:
    """Predicts one label: a training set with a single label needs no fit."""

    def __init__(self, label: str) -> None:
        self.label = label

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), self.label, dtype=object)


def fit_probe(x: np.ndarray, y: np.ndarray, c: float = DEFAULT_C, max_iter: int = MAX_ITER):
    """A fitted probe (``.predict``) on ``x`` [n, d] with labels ``y`` [n]."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(y, dtype=object)
    if len(set(y)) < 2:
        return _Constant(y[0])
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y.astype(str))
    return model


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of rows of ``x`` [n, d] that ``model`` labels as ``y`` [n]."""
    return float(np.mean(model.predict(x).astype(str) == np.asarray(y).astype(str)))


def majority_accuracy(labels: Sequence[str], split: Split) -> float:
    """The training set's most frequent label, scored on the test set."""
    y = np.asarray(labels, dtype=object)
    values, counts = np.unique(y[split.train].astype(str), return_counts=True)
    return float(np.mean(y[split.test].astype(str) == values[np.argmax(counts)]))


@dataclass
class ProbeScores:
    """Per-seed scores: ``accuracy`` and ``control`` [S, L], ``majority`` [S]."""

    accuracy: np.ndarray
    control: np.ndarray
    majority: np.ndarray
    splits: list[Split]

    @property
    def selectivity(self) -> np.ndarray:
        """[L] mean accuracy minus mean control accuracy."""
        return self.accuracy.mean(axis=0) - self.control.mean(axis=0)


def probe_layers(
    x: np.ndarray,
    labels: Sequence[str],
    groups: Sequence[str],
    splits: Sequence[Split],
    *,
    c: float = DEFAULT_C,
    max_iter: int = MAX_ITER,
) -> ProbeScores:
    """Train and test a probe at every layer of ``x`` [N, L, d] for every split, on the
    task and on its control task."""
    y = np.asarray(labels, dtype=object)
    n_layers = x.shape[1]
    acc = np.zeros((len(splits), n_layers))
    ctrl = np.zeros((len(splits), n_layers))
    for s, split in enumerate(splits):
        yc = control_labels(groups, labels, split.seed)
        tr, te = split.train, split.test
        for layer in range(n_layers):
            feats = x[:, layer]
            acc[s, layer] = accuracy(fit_probe(feats[tr], y[tr], c, max_iter), feats[te], y[te])
            probe = fit_probe(feats[tr], yc[tr], c, max_iter)
            ctrl[s, layer] = accuracy(probe, feats[te], yc[te])
    majority = np.array([majority_accuracy(labels, split) for split in splits])
    return ProbeScores(acc, ctrl, majority, list(splits))
