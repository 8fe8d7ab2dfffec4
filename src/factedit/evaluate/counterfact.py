"""CounterFact metrics from a :class:`RequestMeasurement` (Meng et al. 2022, §4.2, App. C).

With ``score(p, t)`` the mean token NLL of " " + t after p, n = target_new, o = target_true
and ``P(t) = exp(-score(p, t))`` (ROME's magnitudes; kmeng01/rome ``experiments/summarize.py``):

- ES: fraction of rewrite prompts with score(p, n) < score(p, o); EM: mean P(n) - P(o);
- PS / PM: the same over the paraphrase prompts;
- NS: fraction of neighborhood prompts with score(p, o) < score(p, n), where o is the prompt's
  explicit answer when the request gives one (zsRE ``loc_ans``, YAML ``answer``), else
  target_true; NM: mean P(o) - P(n);
- S: harmonic mean of ES, PS and NS (0 when any is 0).

All values are x 100. A metric whose prompts (or target_true) are missing is left out.
"""

from __future__ import annotations

from collections.abc import Sequence

from factedit.evaluate.measure import PromptMeasurement, RequestMeasurement


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean of non-negative values; 0 when any value is 0."""
    if any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


def ranks_above(nll: float, other_nll: float) -> bool:
    """Protocol (a)'s comparison: a target ranks above another after the same prompt when its
    mean token NLL (``score``) is lower."""
    return nll < other_nll


def _new_vs_true(prompts: Sequence[PromptMeasurement]) -> tuple[float, float] | None:
    """(score, magnitude) x 100 for prompts where target_new should win."""
    pairs = [(p.new, p.true) for p in prompts if p.true is not None]
    if not pairs:
        return None
    score = _mean([float(ranks_above(new.nll, true.nll)) for new, true in pairs])
    magnitude = _mean([new.prob - true.prob for new, true in pairs])
    return 100.0 * score, 100.0 * magnitude


def _expected_vs_new(prompts: Sequence[PromptMeasurement]) -> tuple[float, float] | None:
    """(score, magnitude) x 100 for prompts where the expected answer should still win."""
    pairs = [(p.expected, p.new) for p in prompts if p.expected is not None]
    if not pairs:
        return None
    score = _mean([float(ranks_above(exp.nll, new.nll)) for exp, new in pairs])  # type: ignore[union-attr]
    magnitude = _mean([exp.prob - new.prob for exp, new in pairs])  # type: ignore[union-attr]
    return 100.0 * score, 100.0 * magnitude


def counterfact_metrics(m: RequestMeasurement) -> dict[str, float]:
    """``es``, ``em``, ``ps``, ``pm``, ``ns``, ``nm`` and ``s`` (x 100), where defined."""
    out: dict[str, float] = {}
    for (score_name, mag_name), result in (
        (("es", "em"), _new_vs_true(m.group("rewrite"))),
        (("ps", "pm"), _new_vs_true(m.group("paraphrase"))),
        (("ns", "nm"), _expected_vs_new(m.group("neighborhood"))),
    ):
        if result is not None:
            out[score_name], out[mag_name] = result
    if all(k in out for k in ("es", "ps", "ns")):
        out["s"] = harmonic_mean([out["es"], out["ps"], out["ns"]])
    return out
