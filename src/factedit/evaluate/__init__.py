"""Evaluate edits: CounterFact / zsRE metrics, fluency, and the evaluation loops.

The metrics are the ROME paper's (Meng et al. 2022, §4 and Appendix C).

    m = measure_request(lm, request, generation=True)  # all prompt x target scores (+ samples)
    ms = measure_requests(lm, requests)  # many requests on one model, prompts pooled
    request_metrics(m)          # {"es", "em", "ps", "pm", "ns", "nm", "s", "ge", ...} x 100
    summarize([metrics, ...])   # aggregate over edits (S from the mean ES, PS, NS)
    generate_text(lm, prompts)  # batched, KV cache, greedy or seeded top-k
    run_independent / run_sequential / run_edited   # loops used by ``factedit eval``

Modules: ``scoring`` (batched teacher-forced log-probs), ``generation``, ``measure``,
``counterfact`` / ``zsre`` / ``fluency`` (metrics), ``metrics`` (names, aggregation),
``runner`` (loops), ``gate`` (``--fail-under``), ``probe`` (the post-edit fluency probe).
"""

from factedit.evaluate.generation import generate_ids, generate_text
from factedit.evaluate.measure import (
    Generation,
    PromptMeasurement,
    RequestMeasurement,
    measure_request,
    measure_requests,
)
from factedit.evaluate.metrics import METRIC_KEYS, METRICS, request_metrics, summarize
from factedit.evaluate.runner import (
    EditOutcome,
    EvalOptions,
    EvalResult,
    run_edited,
    run_independent,
    run_sequential,
)
from factedit.evaluate.scoring import TokenScores, score_continuations

__all__ = [
    "METRICS",
    "METRIC_KEYS",
    "EditOutcome",
    "EvalOptions",
    "EvalResult",
    "Generation",
    "PromptMeasurement",
    "RequestMeasurement",
    "TokenScores",
    "generate_ids",
    "generate_text",
    "measure_request",
    "measure_requests",
    "request_metrics",
    "run_edited",
    "run_independent",
    "run_sequential",
    "score_continuations",
    "summarize",
]
