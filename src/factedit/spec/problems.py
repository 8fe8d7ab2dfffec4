"""How spec problems are found, phrased and collected, and the typed field getters.

A problem is one line that names the file, the edit / record (``_Where``) and the field or key
path. ``_Problems.check`` runs one independent check and records its problems instead of
stopping, so that one :class:`~factedit.errors.SpecError` can list every problem of a file; a
field whose check failed reads as ``_BAD``, and checks that need it are skipped.

The getters (``_nonempty``, ``_str_list``, ...) read one field as the type it must have and
raise a SpecError naming ``where`` and the field otherwise; every reader of the package uses
them, so a field is phrased the same way in YAML specs and benchmark records.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factedit.errors import SpecError
from factedit.yamltypes import type_name as _type_name

_QUOTE_MAX = 60

#: ``names(field, index)``: how a reader's problems name an EditRequest field (and list item).
FieldNamer = Callable[[str, int | None], str]


class _Bad:
    """The value of a field that failed its checks (its problem is already recorded)."""

    def __repr__(self) -> str:
        return "<bad>"


_BAD: Any = _Bad()


# --------------------------------------------------------------------------- phrasing


def _quote(text: object) -> str:
    """A one-line, double-quoted, shortened rendering of ``text`` for messages."""
    shown = text if isinstance(text, str) else str(text)
    if len(shown) > _QUOTE_MAX:
        shown = shown[: _QUOTE_MAX - 3] + "..."
    return json.dumps(shown, ensure_ascii=False)


def _describe(value: object) -> str:
    """Like :func:`_type_name`, but an empty list reads ``an empty list``."""
    if isinstance(value, (list, tuple)) and not value:
        return "an empty list"
    return _type_name(value)


def _is_int(value: object) -> bool:
    """An integer that is not a boolean."""
    return isinstance(value, int) and not isinstance(value, bool)


def _one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) as one space."""
    return " ".join(text.split())


def _file_label(source: Path | str | None) -> str:
    """How messages name a file: its path, or ``<spec>`` for text without one."""
    return "<spec>" if source is None else str(source)


@dataclass(frozen=True)
class _Where:
    """Where a problem is: the file, optionally an edit / record label."""

    file: str
    label: str | None = None

    def error(self, key: str | None, problem: str) -> SpecError:
        """A one-line SpecError for ``problem`` at field (with a label) or key ``key``."""
        text = self.file
        if self.label is not None:
            text += f": {self.label}"
            text += f', field "{key}"' if key is not None else ""
        elif key is not None:
            text += f': key "{key}"'
        return SpecError(_one_line(f"{text}: {problem}"))


class _Problems:
    """The problems found so far in one file; :meth:`check` runs one independent check."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, exc: SpecError) -> None:
        """Record every problem of ``exc``."""
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


# --------------------------------------------------------------------------- keys


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
    """The keys of ``data`` that are not in ``allowed`` (non-string keys included)."""
    return [key for key in data if not (isinstance(key, str) and key in allowed)]


def _suggestion(key: object, allowed: Sequence[str]) -> str | None:
    """The allowed key that ``key`` looks most like, if any is close."""
    close = difflib.get_close_matches(str(key), allowed, n=1)
    return close[0] if close else None


def _misspelt(data: Mapping[Any, Any], allowed: Sequence[str]) -> set[str]:
    """The valid keys that an unknown key of ``data`` looks like a misspelling of: their
    absence is that same mistake, reported once (as the unknown key)."""
    suggested = {_suggestion(key, allowed) for key in _unknown(data, allowed)}
    return {key for key in suggested if key is not None and data.get(key) is None}


# --------------------------------------------------------------------------- typed getters


def _as_str(where: _Where, key: str, value: object) -> str:
    """``value`` if it is a string; a number gets the hint to quote it in YAML."""
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


def _opt_text(where: _Where, key: str, value: object) -> str | None:
    """An optional non-empty string (stripped); ``None`` when absent."""
    return None if value is None else _nonempty(where, key, value)


def _required(where: _Where, data: Mapping[Any, Any], key: str, shown: str | None = None) -> Any:
    """``data[key]``, a problem naming ``shown`` (default ``key``) when absent or null."""
    if key not in data or data[key] is None:
        raise where.error(shown or key, "missing (required)")
    return data[key]


def _prompt_text(where: _Where, key: str, value: object) -> str:
    """A non-blank string, returned as is (prompts keep their exact text)."""
    text = _as_str(where, key, value)
    if not text.strip():
        raise where.error(key, "must be a non-empty string")
    return text


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


def _subject_text(where: _Where, key: str, value: object) -> str:
    """A subject: a non-empty string without "{}", returned stripped."""
    subject = _nonempty(where, key, value)
    if "{}" in subject:
        raise where.error(key, 'must not contain "{}"')
    return subject


def _opt_id(where: _Where, key: str, value: object) -> str | None:
    """An optional identifier given as a string or an integer."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _nonempty(where, key, value)
