"""Synthetic probing tasks for the tests of :mod:`factedit.probing` (no benchmark data)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from factedit.probing.data import ProbeExample
from factedit.testing.words import ADJECTIVES, NOUNS


def phrases(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct two-word span strings ("quiet river")."""
    pool = [f"{a} {b}" for a in ADJECTIVES for b in NOUNS]
    random.Random(seed).shuffle(pool)
    assert len(pool) >= n
    return pool[:n]


def examples(n: int, labels: int = 2, seed: int = 0) -> list[ProbeExample]:
    """``n`` examples "Yesterday the SPAN was here", labels ``l0..`` assigned in turn
    (balanced, unrelated to the text)."""
    out = []
    for i, span in enumerate(phrases(n, seed)):
        text = f"Yesterday the {span} was here"
        start = text.index(span)
        out.append(ProbeExample(text, start, start + len(span), f"l{i % labels}"))
    return out


def write_jsonl(path: Path, rows: list) -> Path:
    """One JSON value (or a raw string) a line."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def task_rows(n: int, labels: int = 2, seed: int = 0) -> list[dict]:
    """:func:`examples` as JSONL rows (the span given as a substring)."""
    return [{"text": e.text, "span": e.group, "label": e.label} for e in examples(n, labels, seed)]


def planted_features(
    n: int, layers: int, dim: int, layer: int, classes: int = 3, seed: int = 0, scale: float = 3.0
) -> tuple[np.ndarray, list[str], list[str]]:
    """(x [n, layers, dim] standard noise with a class mean ``scale`` along one direction per
    class planted at ``layer`` only; labels; groups, one distinct string per row)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    rng.shuffle(y)
    x = rng.standard_normal((n, layers, dim))
    directions = rng.standard_normal((classes, dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    x[:, layer] += scale * directions[y]
    return x.astype(np.float32), [f"c{v}" for v in y], [f"span {i}" for i in range(n)]
