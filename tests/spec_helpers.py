"""Helpers shared by the spec tests (tests/unit/test_spec*.py): edit / spec builders, writing
spec and benchmark files, and asserting SpecError messages.

Importable as ``spec_helpers``: pytest puts ``tests/`` (the folder of the top conftest.py) on
``sys.path``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from factedit.errors import SpecError


def base_edit(subject: Any = "The Eiffel Tower", **overrides: Any) -> dict[str, Any]:
    """A valid YAML edit about ``subject`` (its paraphrase names it), with ``overrides``."""
    edit: dict[str, Any] = {
        "subject": subject,
        "prompt": "{} is located in the city of",
        "target_new": "Rome",
        "target_true": "Paris",
        "paraphrases": [f"{subject} stands in the city of"],
        "neighborhood": ["The Louvre is located in the city of"],
    }
    edit.update(overrides)
    return edit


def base_spec(*edits: dict[str, Any], **top: Any) -> dict[str, Any]:
    """A spec mapping of ``edits`` (default: one :func:`base_edit`) and top-level ``top``."""
    data: dict[str, Any] = {"edits": list(edits) if edits else [base_edit()]}
    data.update(top)
    return data


def write_yaml(tmp_path: Path, data: Any, name: str = "facts.yaml") -> Path:
    """``data`` dumped as YAML to ``tmp_path / name``."""
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def write_json(tmp_path: Path, data: Any, name: str) -> Path:
    """``data`` dumped as JSON to ``tmp_path / name``."""
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a benchmark JSON file (a list of objects)."""
    return json.loads(path.read_text(encoding="utf-8"))


def problems_of(action: Callable[[], Any]) -> SpecError:
    """Run ``action``, expect a SpecError and return it."""
    with pytest.raises(SpecError) as info:
        action()
    return info.value


def spec_error(action: Callable[[], Any], *parts: str) -> str:
    """Run ``action``, expect a one-line SpecError containing every part; return the message."""
    message = str(problems_of(action))
    assert "\n" not in message, message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


def tree_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The key / index path of every item under a nested dict / list ``node``."""
    found: list[tuple[Any, ...]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, child in items:
        found.append((*prefix, key))
        if isinstance(child, (dict, list)):
            found.extend(tree_paths(child, (*prefix, key)))
    return found
