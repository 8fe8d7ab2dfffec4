"""Where a model's layers go: accelerate's device maps, from a spec or the command line.

    device_map = check_device_map("auto")                  # or {"model.layers.0": 0, ...}
    max_memory = parse_max_memory("0=20GiB,cpu=60GiB")    # {0: "20GiB", "cpu": "60GiB"}

A device map is one of accelerate's strategies (:data:`STRATEGIES`) or a mapping of module
names to a device (an integer GPU index, ``"cpu"``, ``"cuda:N"``, ``"mps"`` or ``"disk"``).
``max_memory`` caps each device (``"20GiB"``, ``"500MB"`` or bytes). Bad values raise
``ValueError`` with a message that says what is allowed (the spec and the CLI report it).
This module imports nothing heavy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
_DEVICE = re.compile(r"^(cpu|disk|meta|mps|cuda(:\d+)?|\d+)$")
_SIZE = re.compile(r"^\d+(\.\d+)?\s*([KMGT]i?B)$", re.IGNORECASE)


def _device(value: object, where: str) -> str | int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and _DEVICE.match(value.strip()):
        text = value.strip()
        return int(text) if text.isdigit() else text
    raise ValueError(f"{where}: {value!r} is not a device (a GPU index, cpu, cuda:N, mps or disk)")


def check_device_map(value: object) -> str | dict[str, str | int] | None:
    """A device map as accelerate takes it (see the module docstring), or None."""
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip() in STRATEGIES:
            return value.strip()
        raise ValueError(
            f"device_map: {value!r} is not one of {', '.join(STRATEGIES)} nor a mapping of "
            "module names to devices"
        )
    if isinstance(value, Mapping) and value:
        return {str(name): _device(device, f"device_map.{name}") for name, device in value.items()}
    raise ValueError("device_map: must be a strategy such as auto or a mapping module: device")


def check_max_memory(value: object) -> dict[str | int, str | int] | None:
    """``{device: size}`` (sizes like ``"20GiB"`` or a byte count), or None."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or not value:
        raise ValueError("max_memory: must be a mapping of devices to sizes, e.g. {0: 20GiB}")
    out: dict[str | int, str | int] = {}
    for device, size in value.items():
        key = _device(device, "max_memory")
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            out[key] = size
        elif isinstance(size, str) and _SIZE.match(size.strip()):
            out[key] = size.strip().replace(" ", "")
        else:
            raise ValueError(f"max_memory.{device}: {size!r} is not a size such as 20GiB")
    return out


def parse_device_map(text: str | None) -> str | dict[str, str | int] | None:
    """``--device-map``: a strategy name or a JSON object of module: device."""
    if text is None:
        return None
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            return check_device_map(json.loads(stripped))
        except json.JSONDecodeError as exc:
            raise ValueError(f"--device-map: not valid JSON ({exc.msg})") from None
    return check_device_map(stripped)


def parse_max_memory(text: str | None) -> dict[str | int, str | int] | None:
    """``--max-memory 0=20GiB,cpu=60GiB`` -> ``{0: "20GiB", "cpu": "60GiB"}``."""
    if text is None:
        return None
    pairs: dict[Any, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        device, sep, size = part.partition("=")
        if not sep:
            raise ValueError(f"--max-memory: {part!r} is not DEVICE=SIZE (e.g. 0=20GiB)")
        pairs[device.strip()] = int(size) if size.strip().isdigit() else size.strip()
    return check_max_memory(pairs)
