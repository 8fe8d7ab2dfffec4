"""All metric names, per-request metrics and their aggregation over edits.

``request_metrics(m)`` gives every metric defined for one measurement (x 100):
CounterFact ``es em ps pm ns nm s`` (:mod:`.counterfact`), zsRE-style token accuracies
``efficacy paraphrase specificity`` (:mod:`.zsre`) and, when texts were sampled, ``ge``,
``mention_new`` and ``mention_true`` (:mod:`.fluency`). ``summarize(per_edit)`` averages each
metric over the edits that define it and recomputes ``s`` from the averaged ES, PS and NS
(as ROME's ``summarize.py`` does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from factedit.evaluate.counterfact import counterfact_metrics, harmonic_mean
from factedit.evaluate.greedy import greedy_metrics
from factedit.evaluate.measure import RequestMeasurement
from factedit.evaluate.zsre import zsre_metrics


@dataclass(frozen=True)
class Protocol:
    """How a family of metrics is measured: a short ``label`` for tables, the full rule."""

    key: str
    label: str
    rule: str


PROTOCOLS: dict[str, Protocol] = {
    p.key: p
    for p in (
        Protocol(
            "probability",
            "prob. comparison",
            "teacher-forced probability comparison (ROME/MEMIT, CounterFact): a prompt "
            "passes when the mean per-token NLL of ' ' + target_new after it is below that of "
            "target_true (neighbours: the expected answer's below target_new's); magnitudes "
            "are mean differences of exp(-mean NLL)",
        ),
        Protocol(
            "token_accuracy",
            "token accuracy",
            "teacher-forced top-1 token accuracy (ROME's zsRE, EasyEdit): the share of the "
            "answer's tokens that are the arg-max prediction given the prompt and the answer "
            "tokens before them, pooled over the prompts of a group",
        ),
        Protocol(
            "sampled_generation",
            "sampled generation",
            "continuations of the generation prompts sampled with top-k (see settings): "
            "n-gram entropy (ROME's GE) and whole-word mentions of the targets",
        ),
        Protocol(
            "greedy_generation",
            "greedy generation",
            "generation-based (the Mirage of Model Editing): each prompt continued greedily "
            "for a stated number of tokens (settings.answer_tokens); a prompt passes when the "
            "continuation states the answer at its start: NFKC, case-folded, whitespace "
            "collapsed, leading spaces and opening quotes or brackets dropped, then the "
            "answer followed by a non-alphanumeric character or the end",
        ),
        Protocol("aggregate", "aggregate", "harmonic mean of ES, PS and NS"),
    )
}


@dataclass(frozen=True)
class Metric:
    """A metric's lower-case key (JSON, ``--fail-under``), display label, meaning and the
    key of its :data:`PROTOCOLS` entry."""

    key: str
    label: str
    description: str
    protocol: str


METRICS: tuple[Metric, ...] = (
    Metric("s", "S", "harmonic mean of ES, PS and NS", "aggregate"),
    Metric(
        "es",
        "ES",
        "efficacy score: % rewrite prompts where target_new beats target_true",
        "probability",
    ),
    Metric(
        "ps",
        "PS",
        "paraphrase score: % paraphrases where target_new beats target_true",
        "probability",
    ),
    Metric(
        "ns",
        "NS",
        "neighborhood score: % neighbors still preferring their true answer",
        "probability",
    ),
    Metric(
        "em",
        "EM",
        "efficacy magnitude: mean P(new) - P(true) on rewrite prompts",
        "probability",
    ),
    Metric("pm", "PM", "paraphrase magnitude: mean P(new) - P(true) on paraphrases", "probability"),
    Metric("nm", "NM", "neighborhood magnitude: mean P(true) - P(new) on neighbors", "probability"),
    Metric(
        "gen_es",
        "Gen-ES",
        "% rewrite prompts whose greedy continuation states target_new",
        "greedy_generation",
    ),
    Metric(
        "gen_ps",
        "Gen-PS",
        "% paraphrases whose greedy continuation states target_new",
        "greedy_generation",
    ),
    Metric(
        "gen_ns",
        "Gen-NS",
        "% neighbors whose greedy continuation still states their true answer",
        "greedy_generation",
    ),
    Metric("ge", "GE", "generation n-gram entropy (fluency), x 100", "sampled_generation"),
    Metric(
        "mention_new",
        "Gen→new",
        "% of sampled texts that mention target_new",
        "sampled_generation",
    ),
    Metric(
        "mention_true",
        "Gen→true",
        "% of sampled texts that mention target_true",
        "sampled_generation",
    ),
    Metric(
        "efficacy",
        "Efficacy",
        "top-1 token accuracy of target_new after the prompt",
        "token_accuracy",
    ),
    Metric(
        "paraphrase",
        "Paraphrase",
        "top-1 token accuracy of target_new after paraphrases",
        "token_accuracy",
    ),
    Metric(
        "specificity",
        "Specificity",
        "top-1 token accuracy of the neighbors' answers",
        "token_accuracy",
    ),
)
METRIC_KEYS: tuple[str, ...] = tuple(m.key for m in METRICS)
LABELS: dict[str, str] = {m.key: m.label for m in METRICS}
#: metric key -> the short label of its protocol (the tables' protocol column)
PROTOCOL_LABELS: dict[str, str] = {m.key: PROTOCOLS[m.protocol].label for m in METRICS}


def metric_meta(keys: Sequence[str]) -> dict[str, dict[str, str]]:
    """What a report says of each metric in ``keys``: label, meaning, protocol and its rule."""
    by_key = {m.key: m for m in METRICS}
    return {
        k: {
            "label": by_key[k].label,
            "description": by_key[k].description,
            "protocol": by_key[k].protocol,
            "protocol_rule": PROTOCOLS[by_key[k].protocol].rule,
        }
        for k in keys
        if k in by_key
    }


#: Metrics shown by default per source kind (the JSON always holds all of them).
COUNTERFACT_VIEW: tuple[str, ...] = (
    "s", "es", "ps", "ns", "em", "pm", "nm", "efficacy", "paraphrase", "specificity",
    "gen_es", "gen_ps", "gen_ns", "ge", "mention_new", "mention_true",
)  # fmt: skip
ZSRE_VIEW: tuple[str, ...] = ("efficacy", "paraphrase", "specificity", "gen_es", "gen_ps", "gen_ns")


def generation_metrics(m: RequestMeasurement) -> dict[str, float]:
    """``ge``, ``mention_new`` and ``mention_true`` (x 100) when texts were sampled."""
    gens = m.generations
    if not gens:
        return {}
    out = {
        "ge": 100.0 * sum(g.entropy for g in gens) / len(gens),
        "mention_new": 100.0 * sum(g.mentions_new for g in gens) / len(gens),
    }
    if all(g.mentions_true is not None for g in gens):
        out["mention_true"] = 100.0 * sum(bool(g.mentions_true) for g in gens) / len(gens)
    return out


def request_metrics(m: RequestMeasurement) -> dict[str, float]:
    """Every metric defined for one measurement, keyed by lower-case name, x 100."""
    out = {
        **counterfact_metrics(m),
        **zsre_metrics(m),
        **greedy_metrics(m),
        **generation_metrics(m),
    }
    return {k: out[k] for k in METRIC_KEYS if k in out}


def summarize(per_edit: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over the edits that define it; ``s`` from the mean ES, PS, NS."""
    out: dict[str, float] = {}
    for key in METRIC_KEYS:
        values = [m[key] for m in per_edit if key in m]
        if values:
            out[key] = sum(values) / len(values)
    if all(k in out for k in ("es", "ps", "ns")):
        out["s"] = harmonic_mean([out["es"], out["ps"], out["ns"]])
    return {k: out[k] for k in METRIC_KEYS if k in out}


def view_for(kind: str, available: Mapping[str, float]) -> tuple[str, ...]:
    """The metrics to display for a source ``kind`` (spec / counterfact / zsre)."""
    if kind == "zsre":
        names = ZSRE_VIEW
    elif "es" in available:
        names = COUNTERFACT_VIEW
    else:  # a spec without target_true: only the accuracies and NS are defined
        names = ("ns", "nm", *ZSRE_VIEW, "ge", "mention_new")
    return tuple(n for n in names if n in available)
