"""The result of tracing one prompt, with every number, and its JSON form.

``grids[kind]`` is ``[T, L]``: the mean over noise samples of p(answer) with the clean
``kind`` output restored at (token, layer). The indirect effect is ``grid - p_corrupt``.
For a multi-token answer the probability is that of its *first* token (as in the ROME
reference code).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class TraceResult:
    """One traced prompt. ``subject_span`` is [start, end) in ``tokens``."""

    prompt: str
    subject: str
    tokens: list[str]
    subject_span: tuple[int, int]
    answer: str
    answer_id: int
    target: str | None
    p_clean: float
    p_corrupt: float
    grids: dict[str, np.ndarray]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def last_subject_index(self) -> int:
        return self.subject_span[1] - 1

    def indirect_effect(self, kind: str) -> np.ndarray:
        """``[T, L]``: restored probability minus p_corrupt."""
        return self.grids[kind] - self.p_corrupt

    def recommended_layer(self) -> tuple[int, float] | None:
        """(layer, indirect effect) where restoring the MLP at the last subject token helps most."""
        if "mlp" not in self.grids:
            return None
        curve = self.indirect_effect("mlp")[self.last_subject_index]
        layer = int(np.argmax(curve))
        return layer, float(curve[layer])

    def subject_peak(self, kind: str) -> tuple[int, int, float]:
        """(token, layer, indirect effect) of the largest ``kind`` effect at any subject token."""
        a, b = self.subject_span
        ie = self.indirect_effect(kind)[a:b]
        t, layer = np.unravel_index(int(np.argmax(ie)), ie.shape)
        return a + int(t), int(layer), float(ie[t, layer])

    def to_json(self) -> dict[str, Any]:
        rec = self.recommended_layer()
        return {
            "prompt": self.prompt,
            "subject": self.subject,
            "tokens": self.tokens,
            "subject_span": list(self.subject_span),
            "answer": self.answer,
            "answer_id": self.answer_id,
            "target": self.target,
            "p_clean": self.p_clean,
            "p_corrupt": self.p_corrupt,
            "total_effect": self.p_clean - self.p_corrupt,
            "grids": {kind: grid.tolist() for kind, grid in self.grids.items()},
            "recommended_layer": None if rec is None else {"layer": rec[0], "effect": rec[1]},
            "subject_peaks": {
                kind: dict(zip(("token", "layer", "effect"), self.subject_peak(kind), strict=True))
                for kind in self.grids
            },
            "settings": self.settings,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TraceResult:
        return cls(
            prompt=data["prompt"],
            subject=data["subject"],
            tokens=list(data["tokens"]),
            subject_span=(int(data["subject_span"][0]), int(data["subject_span"][1])),
            answer=data["answer"],
            answer_id=int(data["answer_id"]),
            target=data.get("target"),
            p_clean=float(data["p_clean"]),
            p_corrupt=float(data["p_corrupt"]),
            grids={k: np.asarray(v, dtype=np.float64) for k, v in data["grids"].items()},
            settings=dict(data.get("settings", {})),
        )
