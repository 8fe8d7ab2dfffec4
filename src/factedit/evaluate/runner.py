"""Evaluation loops: independent edits, sequential edits, or an already-edited model.

- ``run_independent``: each edit is computed on the unedited model, applied, measured and
  reverted; every touched weight is then compared with a copy taken before the edit and
  must be equal bit for bit (a mismatch is a bug and raises ``RuntimeError``). With a
  journal (:mod:`factedit.evaluate.journal`) each finished outcome is kept on disk and a
  rerun with the same settings reuses it.
- ``run_sequential``: edits accumulate (each computed on the model edited by the ones
  before, as a user editing one model would); every edit is measured on the final model,
  then all are reverted and checked the same way.
- ``run_edited``: no editing; every request is measured on ``lm`` (unedited) and on
  ``edited_lm`` (e.g. a directory saved by ``factedit edit apply``).

An edit a guard refuses (:class:`~factedit.errors.RefusedEdit`) is recorded with status
"refused" and its reason, and kept out of every average (:attr:`EvalResult.counted`).
The unedited measurements are always taken, on the unedited model, so reports show both.
Sampled texts for GE use the seed ``seed + edit index`` for both model states.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from factedit.delta import WeightDelta
from factedit.edit_loop import MEASURE_CHUNK, OrderedRun, apply_in_order, batches, compute_step
from factedit.evaluate.greedy import ANSWER_TOKENS
from factedit.evaluate.measure import RequestMeasurement, measure_requests, with_samples
from factedit.evaluate.metrics import request_metrics, summarize
from factedit.evaluate.perplexity import HeldOut, heldout_summary, perplexity
from factedit.evaluate.probe import FluencyProbe, probe_entropy
from factedit.evaluate.stream import StreamPoint, StreamRecorder
from factedit.evaluate.zsre import prepare_requests
from factedit.models.loading import LoadedModel
from factedit.session import EditSession
from factedit.spec import EditRequest

if TYPE_CHECKING:
    from factedit.evaluate.journal import EvalJournal

MODES: tuple[str, ...] = ("independent", "sequential", "edited")


@dataclass(frozen=True)
class EvalOptions:
    """How to measure: sampling for GE (``generation``), its seed, length and top-k, and the
    greedy continuation length of the generation-based protocol (``answer_tokens``, 0: off),
    and the held-out text whose perplexity is measured before and after (``heldout``, None:
    not measured; :mod:`factedit.evaluate.perplexity`)."""

    generation: bool = True
    seed: int = 0
    gen_length: int = 100
    top_k: int = 5
    batch_size: int | None = None
    answer_tokens: int = ANSWER_TOKENS
    heldout: HeldOut | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer_tokens": self.answer_tokens,
            "heldout": None if self.heldout is None else self.heldout.to_dict(),
            "generation": self.generation,
            "seed": self.seed,
            "gen_length": self.gen_length,
            "top_k": self.top_k,
            "batch_size": self.batch_size,
        }


@dataclass
class EditOutcome:
    """One request measured before and after editing.

    ``status``: "applied", "refused" (a guard refused the update; ``reason`` says why and
    ``edited`` is the unedited measurement, kept out of every average) or "measured" (an
    already-edited model, no editing here).
    """

    index: int
    request: EditRequest
    unedited: RequestMeasurement
    edited: RequestMeasurement
    layers: tuple[int, ...] = ()
    edit_seconds: float = 0.0
    measure_seconds: float = 0.0
    status: str = "applied"
    reason: str | None = None
    #: held-out perplexity with this edit applied (independent runs measuring it)
    perplexity: float | None = None

    @property
    def metrics_unedited(self) -> dict[str, float]:
        return request_metrics(self.unedited)

    @property
    def metrics_edited(self) -> dict[str, float]:
        return request_metrics(self.edited)


@dataclass
class EvalResult:
    """All outcomes of one run plus aggregate metrics and timing."""

    mode: str
    kind: str
    outcomes: list[EditOutcome]
    options: EvalOptions
    seconds: float = 0.0
    timing: dict[str, float] = field(default_factory=dict)
    fluency_probe: FluencyProbe | None = None
    #: the curve of a sequential run in batches (:mod:`factedit.evaluate.stream`)
    stream: dict[str, Any] | None = None
    #: a sequential run's applied updates: each delta's metadata (layer, norms, λ, ...)
    updates: list[dict[str, Any]] = field(default_factory=list)
    #: held-out perplexity unedited and edited (:func:`.perplexity.heldout_summary`); None:
    #: not measured
    heldout: dict[str, Any] | None = None

    @property
    def counted(self) -> list[EditOutcome]:
        """The outcomes the averages are over: every edit that was not refused."""
        return [o for o in self.outcomes if o.status != "refused"]

    @property
    def unedited(self) -> dict[str, float]:
        return summarize([o.metrics_unedited for o in self.counted])

    @property
    def edited(self) -> dict[str, float]:
        return summarize([o.metrics_edited for o in self.counted])

    @property
    def refused(self) -> list[EditOutcome]:
        return [o for o in self.outcomes if o.status == "refused"]


Progress = Callable[[int], None]
"""``on_edit(index)``: every request up to ``index`` is done (requests finish in order; a
batch or a measured chunk reports once, with its last index)."""


def _measure_many(
    lm: LoadedModel,
    indices: Sequence[int],
    requests: Sequence[EditRequest],
    options: EvalOptions,
) -> list[RequestMeasurement]:
    """The requests measured on the model as it is, their prompts pooled
    (:func:`~factedit.evaluate.measure.measure_requests`); request ``indices[j]`` samples its
    texts with seed ``options.seed + indices[j]``, as when measured alone."""
    size = options.batch_size
    scored = measure_requests(lm, requests, batch_size=size, answer_tokens=options.answer_tokens)
    if not options.generation:
        return scored
    seeds = [options.seed + index for index in indices]
    return with_samples(
        lm,
        requests,
        scored,
        seeds,
        gen_length=options.gen_length,
        top_k=options.top_k,
        batch_size=size,
    )


def _snapshot(lm: LoadedModel, deltas: Sequence[WeightDelta]) -> dict[str, torch.Tensor]:
    return {d.param: lm.model.get_parameter(d.param).detach().clone() for d in deltas}


def _check_restored(lm: LoadedModel, snapshot: Mapping[str, torch.Tensor]) -> None:
    for name, original in snapshot.items():
        if not torch.equal(lm.model.get_parameter(name), original):
            raise RuntimeError(f"reverting the edit did not restore {name} bit for bit")


def _timing(
    outcomes: Sequence[EditOutcome], seconds: float, resumed: Sequence[EditOutcome] = ()
) -> dict[str, float]:
    """Seconds spent and edits per minute; ``resumed`` outcomes (kept by an interrupted run,
    :mod:`factedit.evaluate.journal`) add the seconds they took then to ``total_s``."""
    edit = sum(o.edit_seconds for o in outcomes)
    measure = sum(o.measure_seconds for o in outcomes)
    total = seconds + sum(o.edit_seconds + o.measure_seconds for o in resumed)
    return {
        "total_s": total,
        "edit_s": edit,
        "measure_s": measure,
        "edits_per_minute": 60.0 * len(outcomes) / total if total > 0 else 0.0,
        "resumed_edits": len(resumed),
    }


def run_independent(
    lm: LoadedModel,
    requests: Sequence[EditRequest],
    session: EditSession,
    *,
    kind: str = "counterfact",
    options: EvalOptions | None = None,
    on_edit: Progress | None = None,
    journal: EvalJournal | None = None,
) -> EvalResult:
    """Each edit on the unedited model: measure, compute, apply, measure, revert, check.

    With a ``journal``, an outcome it kept (an interrupted run with the same settings) is
    used as it is, and every outcome measured here is put into it as soon as it is complete.
    """
    options = options or EvalOptions()
    start = time.perf_counter()
    ppl_before = _perplexity(lm, options)
    outcomes, resumed = [], []
    for index, request in enumerate(prepare_requests(requests, kind)):
        outcome = journal.get(index, request) if journal is not None else None
        if outcome is not None:
            resumed.append(outcome)
        else:
            outcome = _edit_alone(lm, session, index, request, options)
            if journal is not None:
                journal.put(outcome)
        outcomes.append(outcome)
        if on_edit:
            on_edit(index)
    seconds = time.perf_counter() - start
    timing = _timing(outcomes, seconds, resumed)
    result = EvalResult("independent", kind, outcomes, options, seconds, timing)
    edited = [o.perplexity for o in outcomes if o.perplexity is not None]
    result.heldout = heldout_summary(options.heldout, ppl_before, edited)
    return result


def _edit_alone(
    lm: LoadedModel, session: EditSession, index: int, request: EditRequest, options: EvalOptions
) -> EditOutcome:
    """One edit of an independent run: measure, compute, apply, measure, revert, check."""
    t0 = time.perf_counter()
    before = _measure_many(lm, [index], [request], options)[0]
    t1 = time.perf_counter()
    step = compute_step(session, index, request)
    outcome = EditOutcome(index, request, before, before, edit_seconds=step.seconds)
    outcome.status, outcome.reason = step.status, step.reason
    if step.status == "applied":
        snapshot = _snapshot(lm, step.deltas)
        session.apply(step.deltas)
        try:
            outcome.edited = _measure_many(lm, [index], [request], options)[0]
            if options.heldout is not None:
                outcome.perplexity = perplexity(lm, options.heldout.ids)
        finally:
            session.revert()
        _check_restored(lm, snapshot)
        outcome.layers = tuple(session.layers)
    outcome.measure_seconds = time.perf_counter() - t1 - step.seconds + (t1 - t0)
    return outcome


def _perplexity(lm: LoadedModel, options: EvalOptions) -> float | None:
    return None if options.heldout is None else perplexity(lm, options.heldout.ids)


def run_sequential(
    lm: LoadedModel,
    requests: Sequence[EditRequest],
    session: EditSession,
    *,
    kind: str = "spec",
    options: EvalOptions | None = None,
    on_edit: Progress | None = None,
    probe: bool = False,
    batch_size: int | None = None,
    stream_sample: int = 100,
) -> EvalResult:
    """Edits accumulate (:func:`factedit.edit_loop.apply_in_order`) in batches of
    ``batch_size`` (None: the method's default); each is measured on the final model; then
    all are reverted and the weights checked.

    With ``probe``, the fluency probe (:mod:`factedit.evaluate.probe`) compares the unedited
    model with the model carrying every edit (``result.fluency_probe``). With
    ``batch_size``, a point of the stream curve is measured before the first batch and after
    each (``result.stream``, :class:`~factedit.evaluate.stream.StreamRecorder`).
    """
    options = options or EvalOptions()
    requests = prepare_requests(requests, kind)
    start = time.perf_counter()
    unedited = _Capability.measure(lm, options, probe)
    # the weights the methods write: the down-projections of the session's layers
    names = [lm.arch.down_proj_weight_name(layer) for layer in session.layers]
    snapshot = {n: lm.model.get_parameter(n).detach().clone() for n in names}
    recorder = None
    if batch_size is not None:
        recorder = StreamRecorder(
            lm, session, requests, batch_size, stream_sample, options.seed, options.heldout
        )
    try:
        if recorder is not None:
            recorder.record(0, 0, 0.0)  # the unedited model
        run = apply_in_order(
            session,
            requests,
            lambda indices, rs: _measure_many(lm, indices, rs, options),
            on_edit=on_edit,
            batch_size=batch_size,
            on_batch=None if recorder is None else recorder.after_batch,
        )
        last = recorder.points[-1] if recorder is not None and len(recorder.points) > 1 else None
        fluency, heldout = unedited.compared_with(lm, options, last)
        updates = [dict(d.meta) for d in session.deltas]
    finally:
        session.revert()
    _check_restored(lm, snapshot)
    outcomes = _ordered_outcomes(requests, run, tuple(session.layers))
    seconds = time.perf_counter() - start
    stream = None if recorder is None else recorder.to_dict()
    return EvalResult(
        "sequential", kind, outcomes, options, seconds, _timing(outcomes, seconds), fluency,
        stream, updates, heldout,
    )  # fmt: skip


@dataclass(frozen=True)
class _Capability:
    """The unedited model's fluency-probe GE (when probed) and held-out perplexity (when
    measured), to set beside the edited model's."""

    entropy: float | None
    perplexity: float | None

    @classmethod
    def measure(cls, lm: LoadedModel, options: EvalOptions, probe: bool) -> _Capability:
        return cls(probe_entropy(lm) if probe else None, _perplexity(lm, options))

    def compared_with(
        self, lm: LoadedModel, options: EvalOptions, measured: StreamPoint | None = None
    ) -> tuple[FluencyProbe | None, dict[str, Any] | None]:
        """(fluency probe, ``heldout_perplexity``) of ``lm`` as it is now against these;
        ``measured``: the stream point already taken on this very model (not measured twice)."""
        entropy = measured.entropy if measured is not None else None
        if self.entropy is not None and entropy is None:
            entropy = probe_entropy(lm)
        fluency = None if self.entropy is None else FluencyProbe(self.entropy, entropy)
        after = measured.perplexity if measured is not None else _perplexity(lm, options)
        edited = [] if after is None else [after]
        return fluency, heldout_summary(options.heldout, self.perplexity, edited)


def _ordered_outcomes(
    requests: Sequence[EditRequest], run: OrderedRun[RequestMeasurement], layers: tuple[int, ...]
) -> list[EditOutcome]:
    """One outcome per request of a sequential run (a refused edit keeps its unedited state)."""
    return [
        EditOutcome(
            i,
            r,
            run.before[i],
            run.after[i] if step.status == "applied" else run.before[i],
            layers if step.status == "applied" else (),
            step.seconds,
            run.measure_seconds[i],
            step.status,
            step.reason,
        )
        for i, (r, step) in enumerate(zip(requests, run.steps, strict=True))
    ]


def run_edited(
    lm: LoadedModel,
    edited_lm: LoadedModel,
    requests: Sequence[EditRequest],
    *,
    kind: str = "spec",
    options: EvalOptions | None = None,
    on_edit: Progress | None = None,
) -> EvalResult:
    """Measure each request on the unedited ``lm`` and on the already-edited ``edited_lm``."""
    options = options or EvalOptions()
    start = time.perf_counter()
    outcomes = []
    requests = prepare_requests(requests, kind)
    for piece in batches(len(requests), MEASURE_CHUNK):
        t0 = time.perf_counter()
        chunk = [requests[i] for i in piece]
        before = _measure_many(lm, piece, chunk, options)
        after = _measure_many(edited_lm, piece, chunk, options)
        share = (time.perf_counter() - t0) / len(piece)
        for index, request, b, a in zip(piece, chunk, before, after, strict=True):
            outcomes.append(
                EditOutcome(index, request, b, a, measure_seconds=share, status="measured")
            )
        if on_edit:
            on_edit(piece.stop - 1)
    seconds = time.perf_counter() - start
    return EvalResult("edited", kind, outcomes, options, seconds, _timing(outcomes, seconds))
