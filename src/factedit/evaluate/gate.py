"""The CI quality gate: ``--fail-under es=95,ps=80,ns=70``.

``parse_thresholds`` turns the option into ``{metric: minimum}`` (unknown metric names and
malformed items are usage errors, exit 2); ``check_gate`` compares the *edited* aggregate
metrics with the minimums and returns every shortfall (the CLI then exits 1).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass

from factedit.errors import FactEditError
from factedit.evaluate.metrics import METRIC_KEYS


class GateError(FactEditError):
    """A malformed ``--fail-under`` value, or a gated metric that was not computed."""


@dataclass(frozen=True)
class Shortfall:
    """A metric below its minimum."""

    metric: str
    value: float
    minimum: float

    @property
    def short_by(self) -> float:
        return self.minimum - self.value

    def describe(self) -> str:
        return f"{self.metric} {self.value:.2f} < {self.minimum:g} (short by {self.short_by:.2f})"


@dataclass(frozen=True)
class RefusedShortfall(Shortfall):
    """Edits a guard refused: a gated run fails while any edit did not happen."""

    @property
    def short_by(self) -> float:
        return self.value

    def describe(self) -> str:
        n = int(self.value)
        return f"refused: {n} edit{'' if n == 1 else 's'} not applied (see the per-edit status)"


def parse_thresholds(text: str) -> dict[str, float]:
    """``"es=95, ps=80"`` -> ``{"es": 95.0, "ps": 80.0}``; metric names are case-insensitive."""
    out: dict[str, float] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not sep or not name or not value.strip():
            raise GateError(f'--fail-under: "{item}" is not METRIC=VALUE (e.g. es=95,ps=80)')
        if name not in METRIC_KEYS:
            close = difflib.get_close_matches(name, METRIC_KEYS, n=1)
            hint = f'did you mean "{close[0]}"? ' if close else ""
            raise GateError(
                f'--fail-under: unknown metric "{name}"; {hint}known: {", ".join(METRIC_KEYS)}'
            )
        try:
            minimum = float(value)
        except ValueError:
            raise GateError(f'--fail-under: "{value.strip()}" for {name} is not a number') from None
        if not math.isfinite(minimum):
            raise GateError(f"--fail-under: the minimum for {name} must be a finite number")
        if name in out:
            raise GateError(f"--fail-under: {name} is given twice")
        out[name] = minimum
    if not out:
        raise GateError("--fail-under: no METRIC=VALUE given (e.g. es=95,ps=80)")
    return out


def check_gate(metrics: Mapping[str, float], thresholds: Mapping[str, float]) -> list[Shortfall]:
    """Every gated metric below its minimum; a gated metric that is absent is an error."""
    missing = [name for name in thresholds if name not in metrics]
    if missing:
        have = ", ".join(metrics) or "none"
        raise GateError(
            f"--fail-under: {', '.join(missing)} not computed for this source/options "
            f"(computed: {have})"
        )
    return [
        Shortfall(name, float(metrics[name]), minimum)
        for name, minimum in thresholds.items()
        if not float(metrics[name]) >= minimum
    ]
