"""Errors factedit reports to users: each carries a one-line message that says what to fix.

Every subclass of :class:`FactEditError` is caught by the CLI, printed without a traceback and
turned into exit code 2 (usage or input error). Anything else is a bug.
"""

from __future__ import annotations


class FactEditError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""

    exit_code: int = 2


class SpecError(FactEditError):
    """An edit spec or benchmark file is malformed (names file, edit and field)."""


class ModelLoadError(FactEditError):
    """A model reference cannot be resolved or loaded."""


class UnsupportedArchitectureError(FactEditError):
    """The model's ``config.model_type`` is not in the architecture map."""


class SubjectNotFoundError(FactEditError):
    """The subject string does not occur in the prompt it should be found in."""


class StatsError(FactEditError):
    """Second-moment statistics cannot be computed (e.g. no corpus available)."""


class NumericalError(FactEditError):
    """An update contains NaN/Inf or is implausibly large; the model was not touched."""
