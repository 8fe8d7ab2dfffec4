"""Reading spec and benchmark files: :func:`load_spec` and :func:`load_spec_text`.

Parses YAML (``yaml.safe_load``, so no tags run code; duplicate keys are an error) and JSON,
each failure one ``FILE:LINE:COL: malformed ...`` line, and reports unreadable files. A
``.yaml`` / ``.yml`` file is always a spec; any other file is parsed as JSON when it is
``.json`` or starts with ``[`` / ``{`` (else as YAML), and is a spec when it holds a mapping,
a benchmark (:mod:`factedit.spec.datasets`) when it holds a list.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from factedit.errors import SpecError
from factedit.spec.datasets import _records_spec
from factedit.spec.problems import _file_label, _one_line, _quote, _type_name
from factedit.spec.requests import EditSpec
from factedit.spec.validation import _spec_from_mapping

_YAML_SUFFIXES = (".yaml", ".yml")


def load_spec(path: str | Path, *, limit: int | None = None, offset: int = 0) -> EditSpec:
    """Load a YAML spec, a CounterFact (ROME or flattened layout) or a zsRE JSON file
    (detected by content).

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


def load_spec_text(text: str, *, source: Path | None = None) -> EditSpec:
    """Parse and validate YAML spec text."""
    file = _file_label(source)
    return _spec_from_mapping(_parse_yaml(text, file), file, source)


# --------------------------------------------------------------------------- files


def _read_text(path: Path, file: str) -> str:
    """The file's UTF-8 text; a missing, non-regular, undecodable or unreadable file is an
    error naming it."""
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
    """The file's data, parsed as YAML or JSON by its suffix (or, without one, its text)."""
    suffix = path.suffix.lower()
    if suffix in _YAML_SUFFIXES:
        return _parse_yaml(text, file)
    if suffix == ".json" or text.lstrip()[:1] in ("[", "{"):
        return _parse_json(text, file)
    return _parse_yaml(text, file)


def _parse_json(text: str, file: str) -> Any:
    """JSON data; malformed JSON is ``FILE:LINE:COL: malformed JSON: ...``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{file}:{exc.lineno}:{exc.colno}: malformed JSON: {exc.msg}") from None
    except RecursionError:
        raise SpecError(f"{file}: malformed JSON: nested too deeply") from None


# --------------------------------------------------------------------------- YAML


def _parse_yaml(text: str, file: str) -> Any:
    """Safe-loaded YAML data; malformed YAML or a duplicate key is one line with its place."""
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
    """``FILE:LINE:COL: malformed YAML: PROBLEM`` (no position without a mark)."""
    position = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
    return SpecError(f"{file}{position}: malformed YAML: {_one_line(problem)}")


def _line_col(text: str, position: int) -> tuple[int, int]:
    """1-based line and column of character ``position`` in ``text``."""
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
