"""A YAML-shaped mapping -> validated :class:`EditSpec` (:func:`spec_from_dict`).

Checks the top level: unknown keys, the settings (``model``, ``method``, ``layers``, ``seed``,
``architecture``) and the ``hparams`` overrides against the method's hyper-parameter
dataclass, then the ``edits`` list (each item by :mod:`factedit.spec.yaml_edits`, then the
duplicate / conflict checks). Every setting and edit is checked on its own; one SpecError
lists all problems. ``offset`` / ``limit`` choose the edits that are read.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from factedit.errors import FactEditError
from factedit.methods.hparams import HParamProblem, HParams
from factedit.methods.registry import METHODS, PLANNED_METHODS, method_info
from factedit.models.placement import check_device_map, check_max_memory
from factedit.spec.checks import _collect_edits, _select
from factedit.spec.problems import (
    _BAD,
    _check_keys,
    _describe,
    _file_label,
    _is_int,
    _misspelt,
    _nonempty,
    _Problems,
    _quote,
    _type_name,
    _Where,
)
from factedit.spec.requests import EditRequest, EditSpec
from factedit.spec.yaml_edits import _yaml_edit

_TOP_KEYS = (
    "model", "method", "layers", "seed", "hparams", "architecture", "device_map", "max_memory",
    "edits",
)  # fmt: skip
#: Module-path keys accepted under ``architecture:`` (see factedit.models.arch.ArchPaths).
ARCH_KEYS: tuple[str, ...] = (
    "layers",
    "mlp",
    "down_proj",
    "attn",
    "embed",
    "final_norm",
    "lm_head",
    "mlp_out_norm",
)
_MAX_SEED = 2**32


def spec_from_dict(data: Mapping[str, Any], *, source: Path | None = None) -> EditSpec:
    """Validate a YAML-shaped mapping (see :mod:`factedit.spec`) into an :class:`EditSpec`."""
    return _spec_from_mapping(data, _file_label(source), source)


def _spec_from_mapping(
    data: object, file: str, source: Path | None, limit: int | None = None, offset: int = 0
) -> EditSpec:
    """The spec in ``data`` (named ``file`` in messages), every part checked independently."""
    where = _Where(file)
    if not isinstance(data, Mapping):
        raise where.error(
            None, f'top level must be a mapping with an "edits" list, not {_type_name(data)}'
        )
    problems = _Problems()
    problems.check(_check_keys, where, data, _TOP_KEYS, "")
    raw_edits = _BAD
    if "edits" not in _misspelt(data, _TOP_KEYS):
        raw_edits = problems.check(_raw_edits, where, data)
    settings = _settings(problems, where, data)
    edits = _BAD
    if raw_edits is not _BAD:
        edits = problems.check(_spec_edits, where, raw_edits, limit, offset)
    problems.raise_any(file)
    return EditSpec(edits=edits, source=source, kind="spec", **settings)


def _raw_edits(where: _Where, data: Mapping[Any, Any]) -> Sequence[Any]:
    """The ``edits`` value: a non-empty list (its items are checked later)."""
    raw_edits = data.get("edits")
    if raw_edits is None:
        raise where.error("edits", "missing (required): add a non-empty list of edits")
    if not isinstance(raw_edits, (list, tuple)) or not raw_edits:
        raise where.error("edits", f"must be a non-empty list, not {_describe(raw_edits)}")
    return raw_edits


def _spec_edits(
    where: _Where, raw_edits: Sequence[Any], limit: int | None, offset: int
) -> tuple[EditRequest, ...]:
    """The chosen edits, each converted and checked, then checked for repeats."""
    indices = _select(where, raw_edits, limit, offset)
    return _collect_edits(
        where.file, raw_edits, indices, _yaml_edit, lambda edit, _, i: edit.label(i)
    )


# --------------------------------------------------------------------------- settings


def _settings(problems: _Problems, where: _Where, data: Mapping[Any, Any]) -> dict[str, Any]:
    """The top-level settings, each checked on its own (_BAD where it has a problem)."""
    readers = {
        "model": _model,
        "method": _method,
        "layers": _layers,
        "seed": _seed,
        "architecture": _architecture,
        "device_map": _placement("device_map", check_device_map),
        "max_memory": _placement("max_memory", check_max_memory),
    }
    settings = {key: problems.check(read, where, data.get(key)) for key, read in readers.items()}
    method = None if settings["method"] is _BAD else settings["method"]
    settings["hparams"] = problems.check(_hparams, where, data.get("hparams"), method)
    return settings


def _model(where: _Where, value: object) -> str | None:
    """The optional model reference (preset, hub id, directory or .gguf path)."""
    return None if value is None else _nonempty(where, "model", value)


def _method(where: _Where, value: object) -> str:
    """The editing method (default ``rome``): a registered, supported one, lower-cased."""
    if value is None:
        return "rome"
    method = _nonempty(where, "method", value).lower()
    supported = ", ".join(f'"{m}"' for m in METHODS)
    if method in PLANNED_METHODS:
        raise where.error("method", f'"{method}" is not yet supported; supported: {supported}')
    try:
        method_info(method)
    except FactEditError:
        raise where.error(
            "method", f"unknown method {_quote(method)}; supported: {supported}"
        ) from None
    return method


def _layers(where: _Where, value: object) -> tuple[int, ...] | str:
    """``"auto"`` (the default) or distinct non-negative layer indices (one int is a list)."""
    problem = 'must be "auto" or a non-empty list of distinct non-negative integers'
    if value is None or value == "auto":
        return "auto"
    if _is_int(value):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise where.error("layers", f"{problem}, not {_type_name(value)} {_quote(value)}")
    for i, layer in enumerate(value):
        if not _is_int(layer) or layer < 0:
            raise where.error(f"layers[{i}]", f"{problem}; got {_type_name(layer)} {layer!r}")
    if len(set(value)) != len(value):
        raise where.error("layers", f"{problem}; {list(value)} repeats a layer")
    return tuple(value)


def _seed(where: _Where, value: object) -> int:
    """The random seed (default 0): an integer in [0, 2**32)."""
    if value is None:
        return 0
    if not _is_int(value):
        raise where.error("seed", f"must be an integer in [0, 2**32), not {_type_name(value)}")
    if not 0 <= value < _MAX_SEED:
        raise where.error("seed", f"must be an integer in [0, 2**32), not {value}")
    return value


def _architecture(where: _Where, value: object) -> dict[str, str]:
    """Module paths that map a model type factedit does not know (all strings)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise where.error("architecture", f"must be a mapping, not {_type_name(value)}")
    problems = _Problems()
    problems.check(_check_keys, where, value, ARCH_KEYS, "architecture")
    out = {}
    for key, path in value.items():
        if not isinstance(path, str) or not path.strip():
            problems.add(
                where.error(
                    f"architecture.{key}", "must be a dotted module path such as model.layers"
                )
            )
            continue
        out[key] = path.strip()
    problems.raise_any(where.file)
    return out


def _placement(key: str, check: Any) -> Any:
    """A reader of ``device_map`` / ``max_memory`` (:mod:`factedit.models.placement`)."""

    def read(where: _Where, value: object) -> Any:
        try:
            return check(value)
        except ValueError as exc:
            raise where.error(key, str(exc).partition(": ")[2] or str(exc)) from None

    return read


# --------------------------------------------------------------------------- hparams


def _hparams(where: _Where, value: object, method: str | None) -> types.MappingProxyType[str, Any]:
    """The ``hparams`` overrides, checked against the method's hyper-parameter dataclass
    (its fields are the schema); each unknown key and each bad value is a problem."""
    if value is None:
        return types.MappingProxyType({})
    if not isinstance(value, Mapping):
        raise where.error("hparams", f"must be a mapping, not {_type_name(value)}")
    if method is None:  # the method itself is bad (reported already): nothing to check against
        return types.MappingProxyType(dict(value))
    schema: type[HParams] = method_info(method).hparams
    problems = _Problems()
    problems.check(_check_keys, where, value, schema.names(), "hparams")
    hparams = {}
    for key, item in value.items():
        if isinstance(key, str) and key in schema.names():
            hparams[key] = problems.check(_hparam, where, schema, key, item)
    problems.raise_any(where.file)
    return types.MappingProxyType(hparams)


def _hparam(where: _Where, schema: type[HParams], key: str, value: object) -> Any:
    """One override as ``schema`` stores it; its problem named ``hparams.KEY``."""
    try:
        return schema.check(key, value)
    except HParamProblem as exc:
        raise where.error(f"hparams.{exc.key}", exc.problem) from None
