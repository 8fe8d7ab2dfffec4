"""Errors factedit reports to users: each carries a one-line message that says what to fix.

Every subclass of :class:`FactEditError` is caught by the CLI, printed without a traceback and
turned into exit code 2 (usage or input error). Anything else is a bug.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence


class FactEditError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""

    exit_code: int = 2


class SpecError(FactEditError):
    """An edit spec or benchmark file is malformed (names file, edit and field).

    ``problems`` holds one line per problem: validation reports every independent problem in
    a file at once (:meth:`collect`), the message then starts with ``FILE: N problems``.
    """

    def __init__(self, message: str, *, problems: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.problems: tuple[str, ...] = tuple(problems) if problems else (message,)

    @classmethod
    def collect(cls, file: str, problems: Sequence[str]) -> SpecError:
        """One error for all ``problems`` of ``file``: ``FILE: N problems`` and one line each.

        A single problem keeps its own one-line message.
        """
        if len(problems) == 1:
            return cls(problems[0])
        lines = "\n".join(problems)
        return cls(f"{file}: {len(problems)} problems\n{lines}", problems=problems)


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


class RefusedEdit(NumericalError):
    """A guard refused an edit's update (too large, not finite, C too ill-conditioned).

    Reports count it as refused (``refused: N`` and a per-edit status), never as an edit.
    """


class PatchError(FactEditError):
    """A patch file cannot be trusted or used here: unreadable, tampered with, made for another
    model, or made on weights that have changed since; nothing was changed or written."""


#: errno values that mean "no space": ENOSPC, and EDQUOT (quota exceeded) where defined.
DISK_FULL_ERRNOS: frozenset[int] = frozenset(
    n for n in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if n is not None
)


class OutputWriteError(FactEditError):
    """An output or cache file could not be written (disk full, permissions, ...).

    Raised by the atomic writers of :mod:`factedit.paths`, which leave whatever was at
    ``path`` before untouched and no temporary file behind. ``cause`` is the ``OSError``.
    """

    def __init__(self, path: object, cause: OSError) -> None:
        self.path = path
        self.cause = cause
        self.errno = cause.errno
        self.reason = cause.strerror or str(cause) or type(cause).__name__
        disk_full = cause.errno in DISK_FULL_ERRNOS
        what = f"disk full ({self.reason})" if disk_full else self.reason
        super().__init__(
            f"cannot write {path}: {what}; nothing was written there and any previous "
            "version is unchanged"
        )


class ProbeDataError(FactEditError):
    """A probing data file (JSONL examples, a facts file) cannot be used: the message names
    the file and the line or record, and says what to fix."""
