"""Model loading, presets and the architecture map.

The presets are light (YAML) and imported at once; loading and the architecture map import
torch and transformers, so their names are imported on first use (``from factedit.models
import load_model`` works as usual) and ``factedit --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from factedit.lazy import LazyImports
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


__getattr__ = LazyImports(globals(), _LAZY).getattr


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
