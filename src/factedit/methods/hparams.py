"""Hyper-parameters of the editing methods: frozen dataclasses that are their own schema.

    hp = RomeHParams.from_overrides({"v_lr": 0.1})     # unknown key / bad value -> HParamError
    RomeHParams.check("v_lr", -1)                      # raises HParamProblem("must not be ...")

Each field's type annotation and ``metadata`` (``positive``, ``choices``) are the schema: the
spec validator (:mod:`factedit.spec`) checks a spec's ``hparams:`` with :meth:`HParams.check`,
so the keys and rules live here only. torch-free.
"""

from __future__ import annotations

import difflib
import math
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, TypeVar

from factedit.errors import FactEditError
from factedit.yamltypes import type_name as _type_name

H = TypeVar("H", bound="HParams")


class HParamProblem(Exception):
    """One bad hyper-parameter: ``key`` (e.g. ``context_template_lengths[1]``) and ``problem``."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f'hyper-parameter "{key}": {problem}')
        self.key = key
        self.problem = problem


class HParamError(FactEditError):
    """Hyper-parameters given through the Python API that the method does not accept."""


def param(
    default: Any, *, positive: bool = False, choices: tuple[str, ...] = (), doc: str = ""
) -> Any:
    """A hyper-parameter field: ``positive`` (> 0, else ≥ 0 for numbers), allowed ``choices``."""
    return field(default=default, metadata={"positive": positive, "choices": choices, "doc": doc})


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(key: str, value: object, integer: bool) -> int | float:
    if integer and not _is_int(value):
        raise HParamProblem(key, f"must be an integer, not {_type_name(value)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HParamProblem(key, f"must be a number, not {_type_name(value)}")
    if integer:
        return value
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise HParamProblem(key, "must be a finite number")
    return number


def _int_tuple(key: str, value: object) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)):
        raise HParamProblem(key, f"must be a list of positive integers, not {_type_name(value)}")
    for i, item in enumerate(value):
        if not _is_int(item) or item < 1:
            raise HParamProblem(f"{key}[{i}]", f"must be a positive integer, not {item!r}")
    return tuple(value)


@dataclass(frozen=True)
class HParams:
    """Base class: the fields of a subclass are a method's hyper-parameters."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def check(cls, name: str, value: object) -> Any:
        """``value`` as stored for field ``name`` (lists become tuples); raises HParamProblem."""
        spec = {f.name: f for f in fields(cls)}[name]
        kind = typing.get_type_hints(cls)[name]
        optional = type(None) in typing.get_args(kind)
        if optional:
            if value is None:
                return None
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        if kind is bool:
            if not isinstance(value, bool):
                raise HParamProblem(name, f"must be true or false, not {_type_name(value)}")
            return value
        if kind in (int, float):
            number = _number(name, value, integer=kind is int)
            if number < 0:
                raise HParamProblem(name, "must not be negative")
            if spec.metadata.get("positive") and number == 0:
                raise HParamProblem(name, "must be greater than 0")
            return number
        if typing.get_origin(kind) is tuple:
            return _int_tuple(name, value)
        if not isinstance(value, str) or not value.strip():
            raise HParamProblem(name, f"must be a non-empty string, not {_type_name(value)}")
        choices = spec.metadata.get("choices") or ()
        if choices and value not in choices:
            allowed = " or ".join(f'"{c}"' for c in choices)
            raise HParamProblem(name, f'must be {allowed}, not "{value}"')
        return value.strip()

    @classmethod
    def suggestion(cls, key: object) -> str | None:
        """The closest valid name to an unknown ``key``, if any looks like it."""
        close = difflib.get_close_matches(str(key), cls.names(), n=1)
        return close[0] if close else None

    @classmethod
    def from_overrides(cls: type[H], overrides: Mapping[str, Any] | None) -> H:
        """The defaults with ``overrides`` applied; an unknown key or bad value is an error."""
        values = {}
        for key, value in (overrides or {}).items():
            if key not in cls.names():
                close = cls.suggestion(key)
                hint = f'did you mean "{close}"?' if close else f"known: {', '.join(cls.names())}"
                raise HParamError(f'unknown hyper-parameter "{key}" for {cls.__name__}; {hint}')
            try:
                values[key] = cls.check(key, value)
            except HParamProblem as exc:
                raise HParamError(f"{cls.__name__}: {exc}") from None
        return replace(cls(), **values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


#: ``value_scale`` choices: "none" keeps v* as optimised (the ROME paper); "norm" gives it the
#: norm of W k* where the MLP output is normalised (see factedit.methods.rank_one).
VALUE_SCALES: tuple[str, ...] = ("norm", "none")

#: ``key_template_mean`` choices: how a key averages its templates' keys ("uniform": ROME's
#: reference; "by_type": MEMIT's, see factedit.methods.templates.template_weights).
KEY_TEMPLATE_MEANS: tuple[str, ...] = ("uniform", "by_type")


@dataclass(frozen=True)
class ValueHParams(HParams):
    """What ROME and MEMIT share: the value (v* / z) optimisation, templates and C."""

    v_num_grad_steps: int = param(20, positive=True, doc="Adam steps for v*")
    v_lr: float = param(0.5, positive=True, doc="Adam learning rate for δ")
    v_weight_decay: float = param(0.5, doc="weight of ‖δ‖ / ‖v_orig‖² in the loss")
    clamp_norm_factor: float = param(4.0, positive=True, doc="‖δ‖ ≤ factor × ‖v_orig‖")
    kl_factor: float = param(0.0625, doc="weight of KL(p_new ‖ p_orig) on the essence prompt")
    loss_stop: float = param(0.05, doc="stop when the total loss falls below this")
    context_template_lengths: tuple[int, ...] = param((5, 10), doc="prefix lengths (tokens)")
    context_templates_per_length: int = param(10, doc="prefixes per length")
    key_template_mean: str = param(
        "uniform", choices=KEY_TEMPLATE_MEANS, doc="templates alike (ROME) or bare prompt ½ (MEMIT)"
    )
    mom2_n_tokens: int = param(100_000, positive=True, doc="token vectors in C = E[k kᵀ]")
    mom2_dtype: str = param("float32", choices=("float32", "float64"), doc="C's accumulator")
    corpus: str | None = param(None, doc='text files for C, or "model"')


@dataclass(frozen=True)
class RomeHParams(ValueHParams):
    """ROME (Meng et al. 2022, §3 and Appendix A); defaults are the paper's GPT-J values."""

    value_scale: str = param(
        "norm", choices=VALUE_SCALES, doc='"norm" (ours, default) or "none" (the paper\'s ROME)'
    )


@dataclass(frozen=True)
class MemitHParams(ValueHParams):
    """MEMIT (Meng et al. 2023); defaults are the reference's GPT-J values
    (kmeng01/memit ``hparams/MEMIT/EleutherAI_gpt-j-6B.json``) except λ, which follows a rule.

    ``mom2_update_weight`` None: λ = d_in, the width of W's input (see
    :func:`factedit.methods.memit.update_weight`); the reference's 15000 for GPT-J (d_in 16384)
    and Llama-3-8B (d_in 14336) are within 10 % of it.
    """

    v_num_grad_steps: int = param(25, positive=True, doc="Adam steps for each z")
    clamp_norm_factor: float = param(0.75, positive=True, doc="‖δ‖ ≤ factor × ‖z_orig‖")
    context_template_lengths: tuple[int, ...] = param((10,), doc="prefix lengths (tokens)")
    context_templates_per_length: int = param(5, doc="prefixes per length")
    key_template_mean: str = param(
        "by_type",
        choices=KEY_TEMPLATE_MEANS,
        doc='"by_type": bare prompt ½, prefixes ½ (the reference compute_ks); "uniform"',
    )
    mom2_update_weight: float | None = param(None, doc="λ in λC + KKᵀ; None: λ = d_in")
    z_batch_facts: int = param(32, positive=True, doc="facts per z forward pass (memory only)")
    key_batch_rows: int = param(256, positive=True, doc="prompts per key forward pass")
    window_passes: int = param(
        1, positive=True, doc="passes of the layer loop over the window (1: the paper)"
    )


@dataclass(frozen=True)
class AlphaEditHParams(MemitHParams):
    """AlphaEdit (Fang et al., ICLR 2025): MEMIT's z and keys, the update projected onto the
    null space of C, earlier edits' keys kept (jianghoucheng/AlphaEdit).

    ``nullspace_energy``: the null space is spanned by the eigenvectors of C with the smallest
    eigenvalues whose sum is at most this fraction of trace(C) (scale-free; the reference's
    absolute eigenvalue threshold 2e-2 depends on the model's key scale). At 0.05 a corpus key
    keeps 95 % of its energy out of reach of every update, and gemma-3-270m's layers 2, 4 and 7
    get 976, 863 and 1,183 of 2,048 dimensions: room for the keys of a thousand edits.
    ``l2``: α in (P(K₁K₁ᵀ + K_pK_pᵀ) + α I), in units of the batch's mean ‖P k‖² (so one key
    alone gets 1 / (1 + l2) of its layer's share; the reference's α = 10 is absolute).
    ``leak_weight`` μ > 0 adds μλC (λ: MEMIT's rule) inside the projected solve, so what the
    corpus keys keep in P's range (a share of trace(C) up to ``nullspace_energy``) is weighed
    against the edits as in MEMIT; μ = 0 is the paper's AlphaEdit (an exact null space needs
    no such term: there P C P = 0).
    """

    nullspace_energy: float = param(0.05, positive=True, doc="energy share of the null space")
    l2: float = param(0.1, positive=True, doc="α / mean ‖P k‖² of the batch's keys")
    leak_weight: float = param(
        0.0, doc="μ: weight of the corpus keys that leak through P, μλC in the solve (0: paper)"
    )


@dataclass(frozen=True)
class EmmetHParams(MemitHParams):
    """EMMET (Gupta et al. 2024): equality-constrained batched editing,
    ΔW = R (Kᵀ C⁻¹ K + λ I)⁻¹ Kᵀ C⁻¹ per layer, with MEMIT's z, keys and layer spreading."""

    emmet_lambda: float = param(0.1, doc="λ in (Kᵀ C⁻¹ K + λ I)")
