"""The one "apply in order and measure" loop behind ``edit apply`` and ``eval --sequential``.

    run = apply_in_order(session, requests, measure)   # measure(index, request) -> M
    run.before[i], run.steps[i].status, run.after[i]    # M on the unedited / final model

Every request is measured on the model before any edit; the edits are then computed and
applied one after another (each on the model the earlier ones produced, as a user editing one
model would); every request is measured again on the final model. An edit a guard refuses is
recorded as ``refused`` with its reason and the loop goes on; on any other error (or Ctrl-C)
every applied delta is reverted before the error propagates.
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


@dataclass
class EditStep:
    """One request's edit: ``status`` "applied" (with its deltas) or "refused" (``reason``)."""

    index: int
    request: EditRequest
    deltas: list[WeightDelta]
    status: str
    reason: str | None = None
    seconds: float = 0.0


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


def compute_step(session: EditSession, index: int, request: EditRequest) -> EditStep:
    """One request's deltas, computed on the model as it is now (nothing is applied).

    A refused edit is returned with status "refused" (and warned about), without deltas.
    """
    start = time.perf_counter()
    try:
        deltas = session.compute([request])
    except RefusedEdit as exc:
        warn(f"edit #{index} refused: {exc}")
        return EditStep(index, request, [], "refused", str(exc), time.perf_counter() - start)
    return EditStep(index, request, deltas, "applied", None, time.perf_counter() - start)


def edit_step(session: EditSession, index: int, request: EditRequest) -> EditStep:
    """:func:`compute_step`, then apply its deltas (a refused edit changes nothing)."""
    step = compute_step(session, index, request)
    session.apply(step.deltas)
    return step


def apply_in_order(
    session: EditSession,
    requests: Sequence[EditRequest],
    measure: Callable[[int, EditRequest], M],
    *,
    on_edit: Callable[[int], None] | None = None,
) -> OrderedRun[M]:
    """Measure all, edit in order, measure all again (see the module docstring)."""
    run: OrderedRun[M] = OrderedRun()
    try:
        for index, request in enumerate(requests):
            run.before.append(_timed(run, index, measure, request))
        for index, request in enumerate(requests):
            run.steps.append(edit_step(session, index, request))
            if on_edit:
                on_edit(index)
        for index, request in enumerate(requests):
            run.after.append(_timed(run, index, measure, request))
    except BaseException:
        session.revert()
        raise
    return run


def _timed(
    run: OrderedRun[M], index: int, measure: Callable[[int, EditRequest], M], request: EditRequest
) -> M:
    start = time.perf_counter()
    value = measure(index, request)
    seconds = time.perf_counter() - start
    if index < len(run.measure_seconds):
        run.measure_seconds[index] += seconds
    else:
        run.measure_seconds.append(seconds)
    return value
