"""The curve of a sequential edit stream: what the model still knows after each batch.

    points = StreamRecorder(lm, session, requests, sample_size=100, seed=0)
    points.record(n_edits, batches, seconds)     # after each batch (and once before any)
    points.to_dict()                             # the report's "stream" object

After each batch the recorder measures, on the model as it is now, teacher-forced efficacy
and paraphrase scores over *all* edits so far — or over a fixed random sample of
``sample_size`` of them once there are more (:func:`sample_indices`: the same sample order
for every point, so a later point's sample includes an earlier one's where it can) — the
neighbourhood score on the same edits, the generation entropy of fixed generic prompts
(:func:`factedit.evaluate.probe.probe_entropy`), the held-out perplexity when the run
measures it (:mod:`factedit.evaluate.perplexity`), and ‖ΔW‖ and ‖W‖ of every edited matrix.
The point before any edit measures the sample of all requests on the unedited model.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from factedit.evaluate.measure import measure_requests
from factedit.evaluate.metrics import request_metrics, summarize
from factedit.evaluate.perplexity import HeldOut, perplexity
from factedit.evaluate.probe import probe_entropy
from factedit.models.loading import LoadedModel
from factedit.session import EditSession
from factedit.spec import EditRequest

#: report key for each curve metric, by the metric names of the two source kinds
_CURVE_METRICS = {
    "efficacy": ("es", "efficacy"),
    "paraphrase": ("ps", "paraphrase"),
    "neighborhood": ("ns", "specificity"),
}


def sample_indices(n_edits: int, n_total: int, size: int, seed: int) -> list[int]:
    """The edits measured at a point with ``n_edits`` done: all of them up to ``size``,
    else the first ``size`` of one fixed seeded permutation of all ``n_total`` that are done."""
    if n_edits <= size:
        return list(range(n_edits))
    order = list(range(n_total))
    random.Random(seed).shuffle(order)
    return sorted([i for i in order if i < n_edits][:size])


@dataclass
class StreamPoint:
    """One point of the curve (metrics × 100; None where the source does not define one)."""

    edits: int
    batches: int
    efficacy: float | None
    paraphrase: float | None
    neighborhood: float | None
    entropy: float
    #: held-out perplexity (:mod:`factedit.evaluate.perplexity`); None: not measured
    perplexity: float | None
    norms: list[dict[str, Any]]
    seconds: float
    measured: int


@dataclass
class StreamRecorder:
    """Measures the points of one stream (see the module docstring)."""

    lm: LoadedModel
    session: EditSession
    requests: Sequence[EditRequest]
    batch_size: int
    sample_size: int = 100
    seed: int = 0
    heldout: HeldOut | None = None
    points: list[StreamPoint] = field(default_factory=list)

    def record(self, edits: int, batches: int, seconds: float) -> StreamPoint:
        """Measure the model as it is now, with ``edits`` requests applied."""
        n_total = len(self.requests)
        picked = sample_indices(edits or n_total, n_total, self.sample_size, self.seed)
        measured = measure_requests(self.lm, [self.requests[i] for i in picked])
        metrics = summarize([request_metrics(m) for m in measured])
        curve = {name: _first(metrics, keys) for name, keys in _CURVE_METRICS.items()}
        point = StreamPoint(
            edits,
            batches,
            **curve,
            entropy=probe_entropy(self.lm),
            perplexity=None if self.heldout is None else perplexity(self.lm, self.heldout.ids),
            norms=self._norms(),
            seconds=seconds,
            measured=len(picked),
        )
        self.points.append(point)
        return point

    def after_batch(self, steps: Sequence[Any]) -> None:
        """:func:`factedit.edit_loop.apply_in_order`'s ``on_batch``: record a point."""
        self.record(len(steps), steps[-1].batch + 1, sum(s.seconds for s in steps))

    def _norms(self) -> list[dict[str, Any]]:
        """‖W − W_0‖ and ‖W‖ (Frobenius) of each matrix the session's method writes."""
        out = []
        for layer in self.session.layers:
            name = self.lm.arch.down_proj_weight_name(layer)
            weight = self.lm.model.get_parameter(name).detach().float()
            original = self.session.applied.original(name)
            delta = 0.0 if original is None else float((weight - original.float()).norm())
            out.append({"param": name, "delta_norm": delta, "weight_norm": float(weight.norm())})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "sample": {
                "size": self.sample_size,
                "seed": self.seed,
                "rule": (
                    f"all edits so far while there are at most {self.sample_size}, then a fixed "
                    f"random sample of {self.sample_size} of them (seed {self.seed}); the "
                    "point at 0 edits measures that sample of all requests, unedited"
                ),
                "protocol": "teacher-forced probability comparison (ES/PS/NS), "
                "entropy: GE x 100 of greedy continuations of fixed generic prompts; "
                "perplexity: exp(mean NLL) of the held-out slice",
            },
            "points": [asdict(p) for p in self.points],
        }


def _first(metrics: dict[str, float], keys: Sequence[str]) -> float | None:
    return next((metrics[k] for k in keys if k in metrics), None)
