"""Tenney et al. (2019): a scalar mix over layers, its expected layer, and the cumulative gain.

    mix = scalar_mix(x, labels, splits)           # x [N, L, d]
    mix.weights      # [L] softmax weights s_l (mean over seeds); mix.expected_layer = Σ l·s_l
    cum = cumulative_scores(x, labels, splits, majority)
    cum.accuracy     # [S, L] accuracy of a mix restricted to layers 0..l
    cum.gain         # [L] mean over seeds of accuracy(0..l) - accuracy(0..l-1)

The mixed representation is ``γ · Σ_l s_l · z_l`` with ``s = softmax(a)`` and ``z_l`` layer
l standardised (mean and std of the training rows); a linear classifier on it is trained
jointly with ``a`` and ``γ`` (full batch, Adam, weight decay on the classifier only,
``a = 0``, ``γ = 1`` and the classifier at zero to start: deterministic). Cumulative gain is
Tenney's differential scoring done with that same scalar mix restricted to the first l + 1
layers (no concatenation), one probe per prefix; the gain of layer 0 is measured against the
majority baseline. ``expected_layer_gain`` is Σ l·Δ_l / Σ Δ_l over the positive gains Δ_l.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from factedit.probing.train import Split

#: Full-batch Adam steps, learning rate and the classifier's weight decay.
EPOCHS = 150
LR = 0.02
WEIGHT_DECAY = 1e-2


def _standardise(x: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """[N, L, d] -> the same, each layer's features standardised on the training rows."""
    mean = x[train].mean(dim=0, keepdim=True)
    std = x[train].std(dim=0, keepdim=True).clamp_min(1e-6)
    return (x - mean) / std


@dataclass
class MixFit:
    """One trained mix: ``weights`` [L] (softmax), ``gamma``, test ``accuracy``."""

    weights: np.ndarray
    gamma: float
    accuracy: float


def fit_mix(
    x: torch.Tensor,
    y: torch.Tensor,
    split: Split,
    classes: int,
    *,
    epochs: int = EPOCHS,
    lr: float = LR,
) -> MixFit:
    """Train the scalar mix + linear classifier on ``x`` [N, L, d] (float32) with integer
    labels ``y`` [N] on ``split.train``; score it on ``split.test``."""
    train, test = torch.as_tensor(split.train), torch.as_tensor(split.test)
    z = _standardise(x, train)
    n_layers, dim = z.shape[1], z.shape[2]
    a = torch.zeros(n_layers, requires_grad=True)
    gamma = torch.ones(1, requires_grad=True)
    w = torch.zeros(dim, classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.Adam(
        [{"params": [a, gamma, b]}, {"params": [w], "weight_decay": WEIGHT_DECAY}], lr=lr
    )

    def logits(rows: torch.Tensor) -> torch.Tensor:
        mixed = gamma * torch.einsum("l,nld->nd", torch.softmax(a, dim=0), z[rows])
        return mixed @ w + b

    with torch.enable_grad():
        for _ in range(epochs):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(logits(train), y[train])
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = (logits(test).argmax(dim=1) == y[test]).float().mean().item()
        weights = torch.softmax(a, dim=0).numpy().copy()
    return MixFit(weights, float(gamma.item()), float(acc))


def _encode(labels: Sequence[str]) -> tuple[torch.Tensor, int]:
    """Labels -> integer ids [N] and the number of classes."""
    names = sorted(set(labels))
    index = {name: i for i, name in enumerate(names)}
    return torch.tensor([index[v] for v in labels]), len(names)


@dataclass
class ScalarMix:
    """Over seeds: ``weights`` [S, L], ``gamma`` [S], ``accuracy`` [S]."""

    weights: np.ndarray
    gamma: np.ndarray
    accuracy: np.ndarray

    @property
    def expected_layer(self) -> float:
        """Σ l · s_l of the seeds' mean weights."""
        mean = self.weights.mean(axis=0)
        return float(np.dot(np.arange(len(mean)), mean))


def scalar_mix(
    x: np.ndarray | torch.Tensor,
    labels: Sequence[str],
    splits: Sequence[Split],
    *,
    epochs: int = EPOCHS,
) -> ScalarMix:
    """A scalar mix over all layers of ``x`` [N, L, d], trained once per split."""
    xt = torch.as_tensor(x, dtype=torch.float32)
    y, classes = _encode(labels)
    fits = [fit_mix(xt, y, split, classes, epochs=epochs) for split in splits]
    return ScalarMix(
        np.stack([f.weights for f in fits]),
        np.array([f.gamma for f in fits]),
        np.array([f.accuracy for f in fits]),
    )


@dataclass
class Cumulative:
    """``accuracy`` [S, L] of the mix over layers 0..l; ``baseline`` [S] (majority)."""

    accuracy: np.ndarray
    baseline: np.ndarray

    @property
    def gain(self) -> np.ndarray:
        """[L] mean over seeds of accuracy(0..l) - accuracy(0..l-1) (layer 0: - baseline)."""
        previous = np.concatenate([self.baseline[:, None], self.accuracy[:, :-1]], axis=1)
        return (self.accuracy - previous).mean(axis=0)

    @property
    def expected_layer(self) -> float | None:
        """Σ l·Δ_l / Σ Δ_l over the positive gains; None when no layer gains."""
        gain = np.clip(self.gain, 0.0, None)
        total = float(gain.sum())
        return float(np.dot(np.arange(len(gain)), gain) / total) if total > 0 else None


def cumulative_scores(
    x: np.ndarray | torch.Tensor,
    labels: Sequence[str],
    splits: Sequence[Split],
    baseline: np.ndarray,
    *,
    epochs: int = EPOCHS,
) -> Cumulative:
    """For every l, the scalar mix over layers 0..l, trained and scored on every split."""
    xt = torch.as_tensor(x, dtype=torch.float32)
    y, classes = _encode(labels)
    acc = np.zeros((len(splits), xt.shape[1]))
    for layer in range(xt.shape[1]):
        prefix = xt[:, : layer + 1]
        for s, split in enumerate(splits):
            acc[s, layer] = fit_mix(prefix, y, split, classes, epochs=epochs).accuracy
    return Cumulative(acc, np.asarray(baseline, dtype=float))
