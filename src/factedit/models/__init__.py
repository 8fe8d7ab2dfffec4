"""Model loading, presets and the architecture map."""

from factedit.models.arch import ARCHITECTURES, Architecture, resolve_architecture
from factedit.models.loading import LoadedModel, load_model
from factedit.models.presets import DEFAULT_MODEL, list_presets

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_MODEL",
    "Architecture",
    "LoadedModel",
    "list_presets",
    "load_model",
    "resolve_architecture",
]
