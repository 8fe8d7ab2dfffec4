"""The one "apply in order and measure" loop behind ``edit apply`` and ``eval --sequential``.

    run = apply_in_order(session, requests, measure)   # measure(indices, requests) -> [M]
    run.before[i], run.steps[i].status, run.after[i]    # M on the unedited / final model

Every request is measured on the model before any edit (``measure`` gets up to
:data:`MEASURE_CHUNK` requests at a time, so that it can pool their prompts); the edits are
then computed and applied batch after batch (each on the model the earlier ones produced, as
a user editing one model would); every request is measured again on the final model. A batch
is one request for ROME and, by default, every request for the batched methods (MEMIT,
AlphaEdit, EMMET). A batch a guard refuses is recorded as ``refused`` with its reason and the
loop goes on; on any other error (or Ctrl-C) every applied delta is reverted before the error
propagates.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from factedit.console import warn
from factedit.delta import WeightDelta
from factedit.errors import RefusedEdit
from factedit.session import EditSession
from factedit.spec import EditRequest

M = TypeVar("M")
#: Requests handed to one ``measure`` call (one model state, so their prompts can be pooled).
MEASURE_CHUNK = 64
Measure = Callable[[Sequence[int], Sequence[EditRequest]], list[M]]


@dataclass
class EditStep:
    """One request's edit: ``status`` "applied" (with its deltas) or "refused" (``reason``).

    Requests edited together share their batch's deltas: the batch's first step holds them
    (the others an empty list) and every step has the batch number ``batch`` and an equal
    share of the batch's seconds.
    """

    index: int
    request: EditRequest
    deltas: list[WeightDelta]
    status: str
    reason: str | None = None
    seconds: float = 0.0
    batch: int = 0


@dataclass
class OrderedRun(Generic[M]):
    """Measurements before and after, the steps, and the seconds spent measuring each request."""

    before: list[M] = field(default_factory=list)
    steps: list[EditStep] = field(default_factory=list)
    after: list[M] = field(default_factory=list)
    measure_seconds: list[float] = field(default_factory=list)

    @property
    def refused(self) -> list[EditStep]:
        return [s for s in self.steps if s.status == "refused"]


def compute_batch(
    session: EditSession, first: int, requests: Sequence[EditRequest], batch: int = 0
) -> list[EditStep]:
    """The deltas of ``requests`` (edits ``first``, ``first + 1``, ...), computed together on
    the model as it is now (nothing is applied); one step per request.

    A refused batch is returned with status "refused" (and warned about), without deltas.
    """
    start = time.perf_counter()
    status, reason, deltas = "applied", None, []
    try:
        deltas = session.compute(list(requests))
    except RefusedEdit as exc:
        which = f"#{first}" if len(requests) == 1 else f"#{first}-#{first + len(requests) - 1}"
        warn(f"edit {which} refused: {exc}")
        status, reason = "refused", str(exc)
    share = (time.perf_counter() - start) / max(1, len(requests))
    return [
        EditStep(first + j, r, deltas if j == 0 else [], status, reason, share, batch)
        for j, r in enumerate(requests)
    ]


def compute_step(session: EditSession, index: int, request: EditRequest) -> EditStep:
    """One request's deltas (:func:`compute_batch` of one)."""
    return compute_batch(session, index, [request])[0]


def edit_batch(
    session: EditSession, first: int, requests: Sequence[EditRequest], batch: int = 0
) -> list[EditStep]:
    """:func:`compute_batch`, then apply its deltas (a refused batch changes nothing)."""
    steps = compute_batch(session, first, requests, batch)
    session.apply(steps[0].deltas)
    return steps


def batches(n: int, size: int) -> list[range]:
    """``range(n)`` cut into consecutive pieces of ``size`` (the last may be shorter)."""
    return [range(i, min(n, i + size)) for i in range(0, n, max(1, size))]


def apply_in_order(
    session: EditSession,
    requests: Sequence[EditRequest],
    measure: Measure[M],
    *,
    on_edit: Callable[[int], None] | None = None,
    batch_size: int | None = None,
    on_batch: Callable[[list[EditStep]], None] | None = None,
) -> OrderedRun[M]:
    """Measure all, edit batch by batch, measure all again (see the module docstring).

    ``batch_size`` None: :meth:`EditSession.default_batch_size`. ``on_edit`` is called once
    per batch, with the index of its last request (every request up to it is done), so that
    a progress line never catches a batch half counted. ``on_batch`` is called with every
    step so far after each batch is applied (the stream curves).
    """
    run: OrderedRun[M] = OrderedRun()
    size = batch_size or session.default_batch_size(len(requests))
    try:
        run.before = _measure_all(run, requests, measure)
        for number, piece in enumerate(batches(len(requests), size)):
            run.steps += edit_batch(session, piece.start, [requests[i] for i in piece], number)
            if on_edit:
                on_edit(piece.stop - 1)
            if on_batch:
                on_batch(run.steps)
        run.after = _measure_all(run, requests, measure)
    except BaseException:
        session.revert()
        raise
    return run


def _measure_all(
    run: OrderedRun[M], requests: Sequence[EditRequest], measure: Measure[M]
) -> list[M]:
    """``measure`` of every request, :data:`MEASURE_CHUNK` at a time; each request of a chunk
    is charged an equal share of the chunk's seconds (``run.measure_seconds``)."""
    values: list[M] = []
    for piece in batches(len(requests), MEASURE_CHUNK):
        start = time.perf_counter()
        measured = measure(list(piece), [requests[i] for i in piece])
        if len(measured) != len(piece):
            raise ValueError(f"measure returned {len(measured)} values for {len(piece)} requests")
        share = (time.perf_counter() - start) / len(piece)
        for index in piece:
            if index < len(run.measure_seconds):
                run.measure_seconds[index] += share
            else:
                run.measure_seconds.append(share)
        values += measured
    return values
