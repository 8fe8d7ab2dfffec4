"""The YAML / JSON name of a value's type, for error messages (torch-free)."""

from __future__ import annotations

from collections.abc import Mapping


def type_name(value: object) -> str:
    """``null``, ``boolean``, ``mapping``, ``list``, else the Python type's name."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__
