"""Model loading, presets and the architecture map.

The presets are light (YAML) and imported at once; loading and the architecture map import
torch and transformers, so their names are imported on first use (``from factedit.models
import load_model`` works as usual) and ``factedit --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from factedit.models.presets import DEFAULT_MODEL, list_presets

if TYPE_CHECKING:
    from factedit.models.arch import ARCHITECTURES, Architecture, resolve_architecture
    from factedit.models.loading import LoadedModel, load_model

_LAZY = {
    "ARCHITECTURES": "factedit.models.arch",
    "Architecture": "factedit.models.arch",
    "resolve_architecture": "factedit.models.arch",
    "LoadedModel": "factedit.models.loading",
    "load_model": "factedit.models.loading",
}

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_MODEL",
    "Architecture",
    "LoadedModel",
    "list_presets",
    "load_model",
    "resolve_architecture",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
