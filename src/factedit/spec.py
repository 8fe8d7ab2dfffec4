"""Edit specs: a YAML spec, CounterFact JSON or zsRE JSON -> validated, frozen dataclasses.

Everything here runs before any model is loaded (no torch / transformers imports). Every
problem is reported as one line that names the file, the edit (index and subject) and the
field or key path, and says what to fix, e.g.::

    facts.yaml: edit #2 (subject "Eiffel Tower"), field "target_new": must be a non-empty string
    facts.yaml:4:7: malformed YAML: mapping values are not allowed here
    counterfact.json: record #5 (case_id 123): missing field "requested_rewrite.target_new.str"

Validation goes on after a problem: every edit / record, every field, every unknown key, the
top-level settings and the duplicate / conflict checks are checked independently, and one
:class:`~factedit.errors.SpecError` lists them all (``facts.yaml: 3 problems``, then one line
each; a single problem is its one line). A check that needs a field that already failed is
skipped. Problems that make the rest unreadable (a missing file, malformed YAML / JSON, a top
level that is not a mapping or list, an unrecognised record format) are reported at once.

Edit and record indices are 0-based, like the key paths (``edit #2`` is ``edits[2]``) and
count from the start of the file, also when ``offset`` skips records.

YAML spec format (a JSON object with the same keys is accepted too)::

    model: gemma-3-270m         # optional: preset name, hub id, local dir or .gguf path
    method: rome                # optional; only "rome" ("memit" is reserved, not yet supported)
    layers: auto                # optional: "auto" or a list of layer indices, e.g. [6]
    seed: 0                     # optional: integer in [0, 2**32)
    hparams:                    # optional overrides, keys in HPARAM_KEYS
      v_num_grad_steps: 20
      kl_factor: 0.0625
    edits:                      # required, non-empty
      - subject: The Eiffel Tower
        prompt: "{} is located in the city of"   # exactly one "{}" where the subject goes
        target_new: Rome                         # stored without surrounding whitespace
        target_true: Paris                       # optional
        paraphrases:                             # full prompts; "{}" is replaced by the subject
          - "The Eiffel Tower can be found in the city of"
          - "Where is {}? It is in the city of"
        neighborhood:                            # prompts about OTHER subjects
          - "The Louvre is located in the city of"       # expected answer: target_true
          - prompt: "Big Ben is located in the city of"  # or an explicit expected answer
            answer: London
        generation_prompts: ["{} is right across from"]  # optional; "{}" -> subject
        attribute_prompts: []                    # optional
        case_id: "eiffel-1"                      # optional (string or integer)
        relation_id: P131                        # optional

Each edit must name a subject, a prompt and a target_new. When any neighborhood item gives an
explicit ``answer``, ``neighborhood_answers`` holds one answer per neighborhood prompt (plain
strings get ``target_true``, which must then be present); otherwise it stays empty, meaning
"target_true" (CounterFact semantics). Two edits with the same subject and prompt are an
error: with the same target_new they are duplicates, with different ones they conflict.

CounterFact records (ROME format, a JSON list of objects with ``requested_rewrite``) and zsRE
records (objects with ``src`` / ``answers`` / ``loc``) are converted to the same
:class:`EditRequest` and validated the same way (duplicate / conflict checks included). A
``.yaml`` / ``.yml`` file is always a spec; any other file (``.json``) is a spec when it holds
a mapping and a benchmark when it holds a list.
"""

from __future__ import annotations

import difflib
import json
import math
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from factedit.errors import SpecError

__all__ = [
    "HPARAM_KEYS",
    "SUPPORTED_METHODS",
    "EditRequest",
    "EditSpec",
    "load_spec",
    "load_spec_text",
    "spec_from_dict",
]

SUPPORTED_METHODS: tuple[str, ...] = ("rome",)
_RESERVED_METHODS: tuple[str, ...] = ("memit",)

#: Accepted ``hparams`` keys and the type of the stored value. Ints are accepted for floats;
#: ``context_template_lengths`` is a list of positive ints in YAML, stored as a tuple.
HPARAM_KEYS: dict[str, type] = {
    "v_num_grad_steps": int,
    "v_lr": float,
    "v_weight_decay": float,
    "clamp_norm_factor": float,
    "kl_factor": float,
    "nll_stop": float,
    "context_template_lengths": tuple,
    "context_templates_per_length": int,
    "mom2_n_tokens": int,
    "mom2_dtype": str,
    "corpus": str,
    "rescale_normed_value": bool,
}
_MOM2_DTYPES = ("float32", "float64")
_POSITIVE_HPARAMS = {"v_num_grad_steps", "v_lr", "clamp_norm_factor", "mom2_n_tokens"}

_TOP_KEYS = ("model", "method", "layers", "seed", "hparams", "architecture", "edits")
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
_EDIT_KEYS = (
    "subject",
    "prompt",
    "target_new",
    "target_true",
    "paraphrases",
    "neighborhood",
    "generation_prompts",
    "attribute_prompts",
    "case_id",
    "relation_id",
)
_NEIGHBOR_KEYS = ("prompt", "answer")
_MAX_SEED = 2**32
_YAML_SUFFIXES = (".yaml", ".yml")
_QUOTE_MAX = 60

FieldNamer = Callable[[str, int | None], str]


class _Bad:
    """The value of a field that failed its checks (its problem is already recorded)."""

    def __repr__(self) -> str:
        return "<bad>"


_BAD: Any = _Bad()


# --------------------------------------------------------------------------- data classes


@dataclass(frozen=True)
class EditRequest:
    """One fact to rewrite: ``prompt`` with the subject in it should continue with target_new."""

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
        for name in (
            "paraphrases",
            "neighborhood",
            "neighborhood_answers",
            "generation_prompts",
            "attribute_prompts",
        ):
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
        if not self.neighborhood_answers:
            return list(self.neighborhood)
        pairs = zip(self.neighborhood, self.neighborhood_answers, strict=False)
        return [{"prompt": p, "answer": a} for p, a in pairs]


@dataclass(frozen=True)
class EditSpec:
    """A validated set of edits plus the model / method settings to apply them with."""

    edits: tuple[EditRequest, ...]
    model: str | None = None
    method: str = "rome"
    layers: tuple[int, ...] | str = "auto"
    hparams: Mapping[str, Any] = field(default_factory=dict, hash=False)
    seed: int = 0
    source: Path | None = None
    kind: str = "spec"
    architecture: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
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
        data["edits"] = [edit.to_dict() for edit in self.edits]
        return data


# --------------------------------------------------------------------------- error helpers


def _quote(text: object) -> str:
    """A one-line, double-quoted, shortened rendering of ``text`` for messages."""
    shown = text if isinstance(text, str) else str(text)
    if len(shown) > _QUOTE_MAX:
        shown = shown[: _QUOTE_MAX - 3] + "..."
    return json.dumps(shown, ensure_ascii=False)


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


@dataclass(frozen=True)
class _Where:
    """Where a problem is: the file, optionally an edit / record label."""

    file: str
    label: str | None = None

    def error(self, key: str | None, problem: str) -> SpecError:
        text = self.file
        if self.label is not None:
            text += f": {self.label}"
            text += f', field "{key}"' if key is not None else ""
        elif key is not None:
            text += f': key "{key}"'
        return SpecError(_one_line(f"{text}: {problem}"))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _file_label(source: Path | str | None) -> str:
    return "<spec>" if source is None else str(source)


class _Problems:
    """The problems found so far in one file; :meth:`check` runs one independent check."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, exc: SpecError) -> None:
        self.messages.extend(exc.problems)

    def check(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``; when it raises a SpecError, record its problems and return _BAD."""
        try:
            return fn(*args)
        except SpecError as exc:
            self.add(exc)
            return _BAD

    def raise_any(self, file: str) -> None:
        """Raise one SpecError listing every problem recorded, if any."""
        if self.messages:
            raise SpecError.collect(file, self.messages)


def _check_keys(where: _Where, data: Mapping[Any, Any], allowed: Sequence[str], path: str) -> None:
    """Reject unknown keys (each one a problem), suggesting the closest valid one."""
    problems = _Problems()
    for key in _unknown(data, allowed):
        full = f"{path}.{key}" if path else str(key)
        close = _suggestion(key, allowed)
        hint = f'did you mean "{close}"?' if close else f"valid keys: {', '.join(allowed)}"
        problems.add(where.error(None, f"unknown key {_quote(full)}; {hint}"))
    problems.raise_any(where.file)


def _unknown(data: Mapping[Any, Any], allowed: Sequence[str]) -> list[Any]:
    return [key for key in data if not (isinstance(key, str) and key in allowed)]


def _suggestion(key: object, allowed: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(str(key), allowed, n=1)
    return close[0] if close else None


def _misspelt(data: Mapping[Any, Any], allowed: Sequence[str]) -> set[str]:
    """The valid keys that an unknown key of ``data`` looks like a misspelling of: their
    absence is that same mistake, reported once (as the unknown key)."""
    suggested = {_suggestion(key, allowed) for key in _unknown(data, allowed)}
    return {key for key in suggested if key is not None and data.get(key) is None}


# --------------------------------------------------------------------------- typed getters


def _as_str(where: _Where, key: str, value: object) -> str:
    if not isinstance(value, str):
        hint = " (quote it in YAML)" if isinstance(value, (int, float)) else ""
        raise where.error(key, f"must be a string, not {_type_name(value)}{hint}")
    return value


def _nonempty(where: _Where, key: str, value: object) -> str:
    """A string that is not empty or whitespace, returned stripped."""
    text = _as_str(where, key, value).strip()
    if not text:
        raise where.error(key, "must be a non-empty string")
    return text


def _required(where: _Where, data: Mapping[Any, Any], key: str, shown: str | None = None) -> Any:
    if key not in data or data[key] is None:
        raise where.error(shown or key, "missing (required)")
    return data[key]


def _str_list(where: _Where, key: str, value: object) -> tuple[str, ...]:
    """A list of non-empty strings (``None`` means empty)."""
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise where.error(key, f"must be a list of strings, not {_type_name(value)}")
    problems = _Problems()
    items = tuple(
        problems.check(_prompt_text, where, f"{key}[{i}]", item) for i, item in enumerate(value)
    )
    problems.raise_any(where.file)
    return items


def _prompt_text(where: _Where, key: str, value: object) -> str:
    """A non-blank string, returned as is (prompts keep their exact text)."""
    text = _as_str(where, key, value)
    if not text.strip():
        raise where.error(key, "must be a non-empty string")
    return text


def _opt_id(where: _Where, key: str, value: object) -> str | None:
    """An optional identifier given as a string or an integer."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _nonempty(where, key, value)


# --------------------------------------------------------------------------- edit checks


def _yaml_field(name: str, index: int | None) -> str:
    return name if index is None else f"{name}[{index}]"


def _check_prompt(where: _Where, prompt: str, key: str) -> None:
    count = prompt.count("{}")
    if count != 1:
        raise where.error(
            key, f'must contain "{{}}" exactly once where the subject goes (found {count})'
        )


def _subject_text(where: _Where, key: str, value: object) -> str:
    """A subject: a non-empty string without "{}", returned stripped."""
    subject = _nonempty(where, key, value)
    if "{}" in subject:
        raise where.error(key, 'must not contain "{}"')
    return subject


def _check_request(where: _Where, fields: Mapping[str, Any], names: FieldNamer) -> None:
    """Content checks shared by YAML, CounterFact and zsRE edits, on the fields of one
    :class:`EditRequest`; a check that needs a field that failed (_BAD) is skipped."""
    problems = _Problems()
    subject, prompt = fields["subject"], fields["prompt"]
    target_new, target_true = fields["target_new"], fields.get("target_true")
    if prompt is not _BAD:
        problems.check(_check_prompt, where, prompt, names("prompt", None))
    if target_true not in (None, _BAD) and target_new is not _BAD and target_new == target_true:
        problems.add(
            where.error(
                names("target_new", None),
                f"equals target_true ({_quote(target_true)}); an edit must change the answer",
            )
        )
    paraphrases = fields["paraphrases"]
    for i, paraphrase in enumerate(() if _BAD in (subject, paraphrases) else paraphrases):
        if subject not in paraphrase:
            problems.add(
                where.error(
                    names("paraphrases", i),
                    f"does not contain the subject {_quote(subject)} (case-sensitive); "
                    "write the subject (or {}) into it",
                )
            )
    problems.raise_any(where.file)


def _check_unique(file: str, edits: Sequence[EditRequest], labels: Sequence[str]) -> None:
    """No two edits share subject and prompt (duplicates or conflicting targets); every
    repeat is a problem of its own."""
    problems = _Problems()
    seen: dict[tuple[str, str], int] = {}
    for i, edit in enumerate(edits):
        key = (edit.subject, edit.prompt)
        if key not in seen:
            seen[key] = i
            continue
        first = seen[key]
        where = _Where(file, labels[i])
        if edits[first].target_new == edit.target_new:
            problems.add(
                where.error(
                    None,
                    f"duplicates {labels[first]} (same subject, prompt and target_new); remove one",
                )
            )
            continue
        problems.add(
            where.error(
                "target_new",
                f"conflicts with {labels[first]}: same subject and prompt but target_new "
                f"{_quote(edit.target_new)} vs {_quote(edits[first].target_new)}; keep one",
            )
        )
    problems.raise_any(file)


def _collect_edits(
    file: str,
    items: Sequence[Any],
    indices: range,
    convert: Callable[[str, object, int], EditRequest],
    label: Callable[[EditRequest, object, int], str],
) -> tuple[EditRequest, ...]:
    """Convert each chosen edit / record on its own, then check uniqueness among the valid
    ones; one SpecError lists the problems of all of them."""
    problems = _Problems()
    converted = [(i, problems.check(convert, file, items[i], i)) for i in indices]
    valid = [(i, edit) for i, edit in converted if edit is not _BAD]
    labels = [label(edit, items[i], i) for i, edit in valid]
    problems.check(_check_unique, file, [edit for _, edit in valid], labels)
    problems.raise_any(file)
    return tuple(edit for _, edit in converted)


# --------------------------------------------------------------------------- YAML edits


def _raw_label(raw: object, index: int) -> str:
    subject = raw.get("subject") if isinstance(raw, Mapping) else None
    if isinstance(subject, str) and subject.strip():
        return f"edit #{index} (subject {_quote(subject.strip())})"
    return f"edit #{index}"


def _neighbor_item(where: _Where, key: str, item: object) -> tuple[str, str | None]:
    """One neighborhood item: a prompt string or ``{prompt, answer}``."""
    if not isinstance(item, Mapping):
        return _prompt_text(where, key, item), None
    problems = _Problems()
    problems.check(_check_keys, where, item, _NEIGHBOR_KEYS, key)
    prompt = _BAD
    if "prompt" not in _misspelt(item, _NEIGHBOR_KEYS):
        prompt = problems.check(
            lambda: _prompt_text(
                where, f"{key}.prompt", _required(where, item, "prompt", f"{key}.prompt")
            )
        )
    answer = item.get("answer")
    if answer is not None:
        answer = problems.check(_nonempty, where, f"{key}.answer", answer)
    problems.raise_any(where.file)
    return prompt, answer


def _neighborhood(
    where: _Where, value: object, target_true: str | None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Neighborhood prompts and (when any item gives one) their expected answers.

    ``target_true`` is _BAD when it failed: the items then need no answer of their own.
    """
    if value is None:
        return (), ()
    if not isinstance(value, (list, tuple)):
        raise where.error("neighborhood", f"must be a list, not {_type_name(value)}")
    problems = _Problems()
    items = [
        _neighbor_or_bad(problems, where, f"neighborhood[{i}]", item)
        for i, item in enumerate(value)
    ]
    if all(answer is None for _, answer in items):
        problems.raise_any(where.file)
        return tuple(prompt for prompt, _ in items), ()
    answers: list[str] = []
    for i, (_, answer) in enumerate(items):
        fallback = answer if answer is not None else target_true
        if fallback is None:
            problems.add(
                where.error(
                    f"neighborhood[{i}]",
                    "has no answer and the edit has no target_true; "
                    "write it as {prompt: ..., answer: ...} or add target_true",
                )
            )
        answers.append(fallback)
    problems.raise_any(where.file)
    return tuple(prompt for prompt, _ in items), tuple(answers)


def _neighbor_or_bad(problems: _Problems, where: _Where, key: str, item: object) -> tuple[Any, Any]:
    """A checked neighborhood item; a failed one counts as having an answer if it gives one."""
    checked = problems.check(_neighbor_item, where, key, item)
    if checked is not _BAD:
        return checked
    gives_answer = isinstance(item, Mapping) and item.get("answer") is not None
    return _BAD, _BAD if gives_answer else None


def _yaml_edit(file: str, raw: object, index: int) -> EditRequest:
    where = _Where(file, _raw_label(raw, index))
    if not isinstance(raw, Mapping):
        raise where.error(
            None, f"must be a mapping with subject, prompt and target_new, not {_type_name(raw)}"
        )
    problems = _Problems()
    problems.check(_check_keys, where, raw, _EDIT_KEYS, f"edits[{index}]")
    fields = _yaml_fields(problems, where, raw)
    problems.check(_check_request, where, fields, _yaml_field)
    problems.raise_any(file)
    return EditRequest(**fields)


def _yaml_fields(problems: _Problems, where: _Where, raw: Mapping[Any, Any]) -> dict[str, Any]:
    """The fields of one YAML edit, each read on its own (_BAD where it has a problem)."""

    misspelt = _misspelt(raw, _EDIT_KEYS)

    def required(key: str, reader: Callable[[_Where, str, object], Any] = _nonempty) -> Any:
        if key in misspelt:  # already reported as the unknown key
            return _BAD
        return problems.check(lambda: reader(where, key, _required(where, raw, key)))

    def optional(key: str, reader: Callable[[_Where, str, object], Any] = _str_list) -> Any:
        return problems.check(reader, where, key, raw.get(key))

    subject = required("subject", _subject_text)
    prompt = required("prompt", _prompt_text)
    target_new = required("target_new")
    target_true = optional("target_true", _opt_text)
    paraphrases = optional("paraphrases")
    neighborhood = problems.check(_neighborhood, where, raw.get("neighborhood"), target_true)
    neighbors, answers = (_BAD, _BAD) if neighborhood is _BAD else neighborhood
    return {
        "subject": subject,
        "prompt": prompt,
        "target_new": target_new,
        "target_true": target_true,
        "paraphrases": _fill(paraphrases, subject),
        "neighborhood": neighbors,
        "neighborhood_answers": answers,
        "generation_prompts": _fill(optional("generation_prompts"), subject),
        "attribute_prompts": optional("attribute_prompts"),
        "case_id": optional("case_id", _opt_id),
        "relation_id": optional("relation_id", _opt_id),
    }


def _opt_text(where: _Where, key: str, value: object) -> str | None:
    return None if value is None else _nonempty(where, key, value)


def _fill(prompts: tuple[str, ...], subject: str) -> tuple[str, ...]:
    """Put the subject into each prompt's "{}" (left as is when either failed)."""
    if _BAD in (prompts, subject):
        return prompts
    return tuple(p.replace("{}", subject) for p in prompts)


# --------------------------------------------------------------------------- YAML top level


def _select(where: _Where, items: Sequence[Any], limit: int | None, offset: int) -> range:
    """Indices of the records chosen by ``offset`` / ``limit``."""
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise where.error(None, f"offset must be a non-negative integer, not {offset!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise where.error(None, f"limit must be a positive integer or None, not {limit!r}")
    if offset >= len(items):
        raise where.error(None, f"offset {offset} selects nothing: only {len(items)} edits")
    stop = len(items) if limit is None else min(len(items), offset + limit)
    return range(offset, stop)


def _method(where: _Where, value: object) -> str:
    if value is None:
        return "rome"
    method = _nonempty(where, "method", value).lower()
    if method in _RESERVED_METHODS:
        raise where.error("method", f'"{method}" is not yet supported; use "rome"')
    if method not in SUPPORTED_METHODS:
        supported = ", ".join(f'"{m}"' for m in SUPPORTED_METHODS)
        raise where.error("method", f"unknown method {_quote(method)}; supported: {supported}")
    return method


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _layers(where: _Where, value: object) -> tuple[int, ...] | str:
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
    if value is None:
        return 0
    if not _is_int(value):
        raise where.error("seed", f"must be an integer in [0, 2**32), not {_type_name(value)}")
    if not 0 <= value < _MAX_SEED:
        raise where.error("seed", f"must be an integer in [0, 2**32), not {value}")
    return value


def _model(where: _Where, value: object) -> str | None:
    return None if value is None else _nonempty(where, "model", value)


# --------------------------------------------------------------------------- hparams


def _hp_int(where: _Where, key: str, value: object) -> int:
    if not _is_int(value):
        raise where.error(key, f"must be an integer, not {_type_name(value)}")
    return value  # type: ignore[return-value]


def _hp_float(where: _Where, key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise where.error(key, f"must be a number, not {_type_name(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise where.error(key, "must be a finite number")
    return number


def _hp_lengths(where: _Where, key: str, value: object) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)):
        raise where.error(key, f"must be a list of positive integers, not {_type_name(value)}")
    for i, item in enumerate(value):
        if not _is_int(item) or item < 1:
            raise where.error(f"{key}[{i}]", f"must be a positive integer, not {item!r}")
    return tuple(value)


def _hp_bool(where: _Where, key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise where.error(key, f"must be true or false, not {_type_name(value)}")
    return value


def _hp_str(where: _Where, key: str, value: object) -> str:
    text = _nonempty(where, key, value)
    if key == "hparams.mom2_dtype" and text not in _MOM2_DTYPES:
        raise where.error(key, f'must be "float32" or "float64", not {_quote(text)}')
    return text


_HP_READERS: dict[type, Callable[[_Where, str, object], Any]] = {
    int: _hp_int,
    float: _hp_float,
    tuple: _hp_lengths,
    str: _hp_str,
    bool: _hp_bool,
}


def _hparam(where: _Where, name: str, value: object) -> Any:
    key = f"hparams.{name}"
    result = _HP_READERS[HPARAM_KEYS[name]](where, key, value)
    if isinstance(result, (int, float)) and result < 0:
        raise where.error(key, "must not be negative")
    if name in _POSITIVE_HPARAMS and result == 0:
        raise where.error(key, "must be greater than 0")
    return result


def _hparams(where: _Where, value: object) -> types.MappingProxyType[str, Any]:
    """The ``hparams`` overrides; each unknown key and each bad value is a problem."""
    if value is None:
        return types.MappingProxyType({})
    if not isinstance(value, Mapping):
        raise where.error("hparams", f"must be a mapping, not {_type_name(value)}")
    problems = _Problems()
    problems.check(_check_keys, where, value, tuple(HPARAM_KEYS), "hparams")
    known = {k: v for k, v in value.items() if isinstance(k, str) and k in HPARAM_KEYS}
    hparams = {k: problems.check(_hparam, where, k, v) for k, v in known.items()}
    problems.raise_any(where.file)
    return types.MappingProxyType(hparams)


# --------------------------------------------------------------------------- spec assembly


def _spec_from_mapping(
    data: object, file: str, source: Path | None, limit: int | None = None, offset: int = 0
) -> EditSpec:
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
    raw_edits = data.get("edits")
    if raw_edits is None:
        raise where.error("edits", "missing (required): add a non-empty list of edits")
    if not isinstance(raw_edits, (list, tuple)) or not raw_edits:
        raise where.error("edits", f"must be a non-empty list, not {_describe(raw_edits)}")
    return raw_edits


def _spec_edits(
    where: _Where, raw_edits: Sequence[Any], limit: int | None, offset: int
) -> tuple[EditRequest, ...]:
    indices = _select(where, raw_edits, limit, offset)
    return _collect_edits(
        where.file, raw_edits, indices, _yaml_edit, lambda edit, _, i: edit.label(i)
    )


def _describe(value: object) -> str:
    if isinstance(value, (list, tuple)) and not value:
        return "an empty list"
    return _type_name(value)


def _settings(problems: _Problems, where: _Where, data: Mapping[Any, Any]) -> dict[str, Any]:
    """The top-level settings, each checked on its own (_BAD where it has a problem)."""
    readers = {
        "model": _model,
        "method": _method,
        "layers": _layers,
        "seed": _seed,
        "hparams": _hparams,
        "architecture": _architecture,
    }
    return {key: problems.check(read, where, data.get(key)) for key, read in readers.items()}


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


def spec_from_dict(data: Mapping[str, Any], *, source: Path | None = None) -> EditSpec:
    """Validate a YAML-shaped mapping (see the module docstring) into an :class:`EditSpec`."""
    return _spec_from_mapping(data, _file_label(source), source)


def load_spec_text(text: str, *, source: Path | None = None) -> EditSpec:
    """Parse and validate YAML spec text."""
    file = _file_label(source)
    return _spec_from_mapping(_parse_yaml(text, file), file, source)


# --------------------------------------------------------------------------- parsing


def _parse_yaml(text: str, file: str) -> Any:
    try:
        data = yaml.safe_load(text)
        _check_duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader), file)
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(file, exc.problem or exc.context or str(exc), exc.problem_mark) from None
    except yaml.reader.ReaderError as exc:
        line, col = _line_col(text, exc.position)
        raise SpecError(
            f"{file}:{line}:{col}: malformed YAML: {_one_line(str(exc.reason))}"
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{file}: malformed YAML: {_one_line(str(exc))}") from None
    except RecursionError:
        raise SpecError(f"{file}: malformed YAML: nested too deeply") from None
    return data


def _yaml_error(file: str, problem: str, mark: Any) -> SpecError:
    position = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
    return SpecError(f"{file}{position}: malformed YAML: {_one_line(problem)}")


def _line_col(text: str, position: int) -> tuple[int, int]:
    line = text.count("\n", 0, position) + 1
    return line, position - (text.rfind("\n", 0, position) + 1) + 1


def _walk_nodes(node: yaml.Node | None) -> Iterator[yaml.MappingNode]:
    """Every mapping node under ``node`` (each once, aliases included)."""
    seen: set[int] = set()
    stack = [node] if node is not None else []
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, yaml.MappingNode):
            yield current
            for key, value in current.value:
                stack.extend((key, value))
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)


def _check_duplicate_keys(root: yaml.Node | None, file: str) -> None:
    """YAML silently keeps the last of two equal keys; report it instead."""
    for mapping in _walk_nodes(root):
        keys: set[tuple[str, str]] = set()
        for key, _ in mapping.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            ident = (key.tag, key.value)
            if ident in keys:
                raise _yaml_error(file, f"duplicate key {_quote(key.value)}", key.start_mark)
            keys.add(ident)


def _parse_json(text: str, file: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{file}:{exc.lineno}:{exc.colno}: malformed JSON: {exc.msg}") from None
    except RecursionError:
        raise SpecError(f"{file}: malformed JSON: nested too deeply") from None


def _read_text(path: Path, file: str) -> str:
    if not path.exists():
        raise SpecError(f"{file}: spec file does not exist")
    if not path.is_file():
        raise SpecError(f"{file}: is not a file; give a .yaml spec or a .json benchmark file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{file}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise SpecError(f"{file}: cannot read: {_one_line(exc.strerror or str(exc))}") from None


def _parse_file(path: Path, text: str, file: str) -> Any:
    suffix = path.suffix.lower()
    if suffix in _YAML_SUFFIXES:
        return _parse_yaml(text, file)
    if suffix == ".json" or text.lstrip()[:1] in ("[", "{"):
        return _parse_json(text, file)
    return _parse_yaml(text, file)


def load_spec(path: str | Path, *, limit: int | None = None, offset: int = 0) -> EditSpec:
    """Load a YAML spec, a CounterFact or a zsRE JSON file (detected by content).

    ``offset`` skips that many edits / records, ``limit`` keeps at most that many.
    """
    file = str(path)
    path = Path(path)
    data = _parse_file(path, _read_text(path, file), file)
    if isinstance(data, Mapping) or path.suffix.lower() in _YAML_SUFFIXES:
        return _spec_from_mapping(data, file, path, limit, offset)
    if isinstance(data, list):
        return _records_spec(data, file, path, limit, offset)
    raise SpecError(
        f"{file}: expected a spec mapping or a list of CounterFact / zsRE records, "
        f"not {_type_name(data)}"
    )


# --------------------------------------------------------------------------- benchmark records


def _detect_kind(records: Sequence[Any], file: str) -> str:
    if not records:
        raise SpecError(f"{file}: contains no records")
    first = records[0]
    if isinstance(first, Mapping):
        if "requested_rewrite" in first:
            return "counterfact"
        if {"src", "answers", "loc"} <= set(first):
            return "zsre"
    raise SpecError(
        f"{file}: record #0: unrecognised format; expected CounterFact records (with "
        '"requested_rewrite") or zsRE records (with "src", "answers" and "loc")'
    )


def _records_spec(
    records: list[Any], file: str, source: Path, limit: int | None, offset: int
) -> EditSpec:
    kind = _detect_kind(records, file)
    indices = _select(_Where(file), records, limit, offset)
    convert = _counterfact_edit if kind == "counterfact" else _zsre_edit
    edits = _collect_edits(file, records, indices, convert, lambda _, raw, i: _record_label(raw, i))
    return EditSpec(edits=edits, source=source, kind=kind)


def _record_label(record: object, index: int) -> str:
    parts = []
    if isinstance(record, Mapping):
        case_id = record.get("case_id")
        if isinstance(case_id, (str, int)) and not isinstance(case_id, bool):
            parts.append(f"case_id {case_id}" if _is_int(case_id) else f"case_id {_quote(case_id)}")
        rewrite = record.get("requested_rewrite")
        subject = rewrite.get("subject") if isinstance(rewrite, Mapping) else record.get("subject")
        if isinstance(subject, str) and subject.strip():
            parts.append(f"subject {_quote(subject.strip())}")
    return f"record #{index}" + (f" ({', '.join(parts)})" if parts else "")


def _record_where(file: str, record: object, index: int) -> _Where:
    where = _Where(file, _record_label(record, index))
    if not isinstance(record, Mapping):
        raise where.error(None, f"must be a JSON object, not {_type_name(record)}")
    return where


def _missing(where: _Where, path: str) -> SpecError:
    text = f"{where.file}: {where.label}: missing field {_quote(path)}"
    return SpecError(_one_line(text))


def _dig(where: _Where, record: Mapping[Any, Any], path: str) -> Any:
    """The value at a dotted ``path``; a SpecError naming the path when any part is absent."""
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value or value[part] is None:
            raise _missing(where, path)
        value = value[part]
    return value


def _dig_optional(where: _Where, record: Mapping[Any, Any], path: str) -> Any:
    try:
        return _dig(where, record, path)
    except SpecError:
        return None


_CF_NAMES = {
    "subject": "requested_rewrite.subject",
    "prompt": "requested_rewrite.prompt",
    "target_new": "requested_rewrite.target_new.str",
    "target_true": "requested_rewrite.target_true.str",
    "paraphrases": "paraphrase_prompts",
}


def _cf_field(name: str, index: int | None) -> str:
    base = _CF_NAMES.get(name, name)
    return base if index is None else f"{base}[{index}]"


def _record_reader(
    problems: _Problems, where: _Where, record: Mapping[Any, Any]
) -> Callable[..., Any]:
    """``read(path, reader)``: the record's field at ``path`` (``_dig`` for a required one,
    else ``.get``) through ``reader``, a failure recorded in ``problems`` and read as _BAD."""

    gone: list[str] = []  # missing parents ("requested_rewrite"): reported once

    def read(
        path: str, reader: Callable[[_Where, str, object], Any] = _nonempty, *, required=True
    ) -> Any:
        if any(path.startswith(f"{parent}.") for parent in gone):
            return _BAD
        if required and (parent := _missing_parent(record, path)) is not None:
            gone.append(parent)
        get = _dig if required else _dig_optional
        return problems.check(lambda: reader(where, path, get(where, record, path)))

    return read


def _missing_parent(record: Mapping[Any, Any], path: str) -> str | None:
    """The first parent of dotted ``path`` that ``record`` lacks (or that is no mapping)."""
    parts = path.split(".")
    value: Any = record
    for n, part in enumerate(parts[:-1], 1):
        value = value.get(part) if isinstance(value, Mapping) else None
        if not isinstance(value, Mapping):
            return ".".join(parts[:n])
    return None


def _counterfact_edit(file: str, record: object, index: int) -> EditRequest:
    where = _record_where(file, record, index)
    assert isinstance(record, Mapping)
    problems = _Problems()
    read = _record_reader(problems, where, record)
    rw = "requested_rewrite"
    fields = {
        "subject": read(f"{rw}.subject", _subject_text),
        "prompt": read(f"{rw}.prompt", _prompt_text),
        "target_new": read(f"{rw}.target_new.str"),
        "target_true": read(f"{rw}.target_true.str"),
        "paraphrases": read("paraphrase_prompts", _str_list),
        "neighborhood": read("neighborhood_prompts", _str_list),
        "generation_prompts": read("generation_prompts", _str_list, required=False),
        "attribute_prompts": read("attribute_prompts", _str_list, required=False),
        "case_id": read("case_id", _opt_id, required=False),
        "relation_id": read(f"{rw}.relation_id", _opt_id, required=False),
    }
    problems.check(_check_request, where, fields, _cf_field)
    problems.raise_any(file)
    return EditRequest(**fields)


_ZSRE_NAMES = {"target_new": "answers[0]", "prompt": "src", "paraphrases": "rephrase"}


def _zsre_field(name: str, index: int | None) -> str:
    return _ZSRE_NAMES.get(name, name)


def _zsre_answer(where: _Where, record: Mapping[Any, Any]) -> str:
    answers = _dig(where, record, "answers")
    if not isinstance(answers, (list, tuple)) or not answers:
        raise where.error("answers", f"must be a non-empty list, not {_describe(answers)}")
    return _nonempty(where, "answers[0]", answers[0])


def _zsre_prompt(where: _Where, subject: str, src: str) -> str:
    """The question with "{}" in place of the subject."""
    if _BAD in (subject, src):
        return _BAD
    if subject not in src:
        raise where.error("subject", f"does not occur in the question (src) {_quote(src)}")
    return src.replace(subject, "{}", 1)


def _zsre_edit(file: str, record: object, index: int) -> EditRequest:
    where = _record_where(file, record, index)
    assert isinstance(record, Mapping)
    problems = _Problems()
    read = _record_reader(problems, where, record)
    subject, src = read("subject", _subject_text), read("src", _prompt_text)
    prompt = problems.check(_zsre_prompt, where, subject, src)
    fields = {
        "subject": _BAD if prompt is _BAD else subject,  # not in src: no rephrase check
        "prompt": prompt,
        "target_new": problems.check(_zsre_answer, where, record),
        "paraphrases": _single(read("rephrase", _prompt_text)),
        "neighborhood": _single(read("loc", _prompt_text)),
        "neighborhood_answers": _single(read("loc_ans")),
        "case_id": str(index),
    }
    problems.check(_check_request, where, fields, _zsre_field)
    problems.raise_any(file)
    return EditRequest(**fields)


def _single(value: Any) -> Any:
    """A one-item tuple (_BAD stays _BAD)."""
    return _BAD if value is _BAD else (value,)
