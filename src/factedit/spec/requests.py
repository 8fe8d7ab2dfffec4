"""The validated, frozen results of reading a spec: :class:`EditRequest` and :class:`EditSpec`.

Plain data only (no parsing, no torch): every reader in :mod:`factedit.spec` builds these, and
the editing and evaluation code consumes them. ``to_dict`` writes them back as the YAML spec
layout that :func:`factedit.spec.spec_from_dict` reads.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factedit.spec.problems import _quote

_TUPLE_FIELDS = (
    "paraphrases",
    "neighborhood",
    "neighborhood_answers",
    "generation_prompts",
    "attribute_prompts",
)


@dataclass(frozen=True)
class EditRequest:
    """One fact to rewrite: ``prompt`` with the subject in it should continue with target_new.

    ``neighborhood_answers`` is empty (every neighbour should still predict ``target_true``) or
    holds one expected answer per ``neighborhood`` prompt.
    """

    subject: str
    prompt: str
    target_new: str
    target_true: str | None = None
    paraphrases: tuple[str, ...] = ()
    neighborhood: tuple[str, ...] = ()
    neighborhood_answers: tuple[str, ...] = ()
    generation_prompts: tuple[str, ...] = ()
    attribute_prompts: tuple[str, ...] = ()
    case_id: str | None = None
    relation_id: str | None = None

    def __post_init__(self) -> None:
        """Store lists given in code as tuples (the dataclass stays hashable)."""
        for name in _TUPLE_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))

    @property
    def rewrite_prompt(self) -> str:
        """The prompt with the subject filled in (other braces are left alone)."""
        return self.prompt.replace("{}", self.subject, 1)

    def label(self, index: int) -> str:
        """How errors name this edit, e.g. ``edit #3 (subject "Eiffel Tower")``."""
        return f"edit #{index} (subject {_quote(self.subject)})"

    def to_dict(self) -> dict[str, Any]:
        """This edit as one item of a YAML spec's ``edits`` list."""
        data: dict[str, Any] = {
            "subject": self.subject,
            "prompt": self.prompt,
            "target_new": self.target_new,
        }
        if self.target_true is not None:
            data["target_true"] = self.target_true
        if self.paraphrases:
            data["paraphrases"] = list(self.paraphrases)
        if self.neighborhood:
            data["neighborhood"] = self._neighborhood_items()
        for name in ("generation_prompts", "attribute_prompts"):
            if getattr(self, name):
                data[name] = list(getattr(self, name))
        for name in ("case_id", "relation_id"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        return data

    def _neighborhood_items(self) -> list[Any]:
        """Neighbourhood items for YAML: plain prompts, or ``{prompt, answer}`` when answered."""
        if not self.neighborhood_answers:
            return list(self.neighborhood)
        pairs = zip(self.neighborhood, self.neighborhood_answers, strict=False)
        return [{"prompt": p, "answer": a} for p, a in pairs]


@dataclass(frozen=True)
class EditSpec:
    """A validated set of edits plus the model / method settings to apply them with.

    ``kind`` says where the edits came from: ``"spec"`` (a YAML / JSON spec), ``"counterfact"``
    (CounterFact records, ROME or flattened layout) or ``"zsre"``; evaluation picks its
    metrics and defaults by it.
    """

    edits: tuple[EditRequest, ...]
    model: str | None = None
    method: str = "rome"
    layers: tuple[int, ...] | str = "auto"
    hparams: Mapping[str, Any] = field(default_factory=dict, hash=False)
    seed: int = 0
    source: Path | None = None
    kind: str = "spec"
    architecture: Mapping[str, str] = field(default_factory=dict, hash=False)
    #: accelerate's device map and per-device memory caps (:mod:`factedit.models.placement`)
    device_map: str | Mapping[str, Any] | None = field(default=None, hash=False)
    max_memory: Mapping[Any, Any] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        """Freeze what code passed as lists / dicts (tuples and read-only mappings)."""
        if not isinstance(self.edits, tuple):
            object.__setattr__(self, "edits", tuple(self.edits))
        if not isinstance(self.layers, (str, tuple)):
            object.__setattr__(self, "layers", tuple(self.layers))
        if not isinstance(self.hparams, types.MappingProxyType):
            object.__setattr__(self, "hparams", types.MappingProxyType(dict(self.hparams)))
        if not isinstance(self.architecture, types.MappingProxyType):
            object.__setattr__(
                self, "architecture", types.MappingProxyType(dict(self.architecture))
            )

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec as plain YAML-able data (``spec_from_dict`` reads it back)."""
        data: dict[str, Any] = {}
        if self.model is not None:
            data["model"] = self.model
        data["method"] = self.method
        data["layers"] = self.layers if isinstance(self.layers, str) else list(self.layers)
        data["seed"] = self.seed
        if self.hparams:
            data["hparams"] = {
                k: list(v) if isinstance(v, tuple) else v for k, v in self.hparams.items()
            }
        if self.architecture:
            data["architecture"] = dict(self.architecture)
        if self.device_map is not None:
            data["device_map"] = (
                self.device_map if isinstance(self.device_map, str) else dict(self.device_map)
            )
        if self.max_memory is not None:
            data["max_memory"] = dict(self.max_memory)
        data["edits"] = [edit.to_dict() for edit in self.edits]
        return data
