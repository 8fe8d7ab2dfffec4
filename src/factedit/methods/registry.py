"""The editing methods by name: each one's hyper-parameter schema, and its implementation.

    info = method_info("rome")          # torch-free: name, hparams class, layer rule
    method = load_method("rome")        # imports the implementation (torch)
    deltas = method.compute(lm, requests, layers, state)    # list[WeightDelta]

Every method has the same entry point, ``compute(lm, requests, layers, state)``: a *batch* of
requests, the layers to write, and the per-layer :class:`~factedit.methods.state.MethodState`
(statistics, templates); it returns deltas and leaves the model as it found it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from factedit.errors import FactEditError
from factedit.methods.hparams import (
    AlphaEditHParams,
    EmmetHParams,
    HParams,
    MemitHParams,
    RomeHParams,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from factedit.delta import WeightDelta
    from factedit.methods.state import MethodState
    from factedit.models.loading import LoadedModel
    from factedit.spec import EditRequest


class EditMethod(Protocol):
    """What a method module provides."""

    def compute(
        self,
        lm: LoadedModel,
        requests: Sequence[EditRequest],
        layers: Sequence[int],
        state: MethodState,
    ) -> list[WeightDelta]: ...


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: ``module`` holds its ``compute``; ``n_layers`` None = a window
    of any length. ``batched``: a batch of requests is solved together (one delta per layer
    for the whole batch), so ``edit apply`` gives it every edit of a spec at once."""

    name: str
    hparams: type[HParams]
    module: str
    n_layers: int | None
    summary: str
    batched: bool = False


METHODS: dict[str, MethodInfo] = {
    "rome": MethodInfo(
        "rome", RomeHParams, "factedit.methods.rome", 1, "one rank-one update per fact"
    ),
    "memit": MethodInfo(
        "memit",
        MemitHParams,
        "factedit.methods.memit",
        None,
        "many facts at once, spread over a window of layers",
        batched=True,
    ),
    "alphaedit": MethodInfo(
        "alphaedit",
        AlphaEditHParams,
        "factedit.methods.alphaedit",
        None,
        "MEMIT projected onto the null space of preserved and earlier keys (sequential)",
        batched=True,
    ),
    "emmet": MethodInfo(
        "emmet",
        EmmetHParams,
        "factedit.methods.emmet",
        None,
        "equality-constrained batched editing over MEMIT's window",
        batched=True,
    ),
}
#: Names the spec format reserves for methods still to come (refused with a clear message).
PLANNED_METHODS: tuple[str, ...] = ()


def method_names() -> tuple[str, ...]:
    return tuple(METHODS)


def method_info(name: str) -> MethodInfo:
    """The registered method ``name`` (case-insensitive); an unknown one is a FactEditError."""
    key = name.lower()
    if key in METHODS:
        return METHODS[key]
    supported = ", ".join(METHODS)
    if key in PLANNED_METHODS:
        raise FactEditError(f'method "{key}" is not supported yet (supported: {supported})')
    raise FactEditError(f'unknown method "{name}" (supported: {supported})')


def load_method(name: str) -> Any:
    """The module implementing ``name`` (it has ``compute`` as in :class:`EditMethod`)."""
    return importlib.import_module(method_info(name).module)
