"""zsRE metrics (ROME/MEND): top-1 token accuracy of the target under teacher forcing.

Following kmeng01/rome ``experiments/py/eval_utils_zsre.py``: the target is answers[0]
(" " + answer, tokenised once); at each target position the model sees the question plus the
target tokens before it, and a token counts as correct when it is the arg-max prediction.

- efficacy: accuracy over the target tokens after the question (``src``);
- paraphrase: the same after the rephrased question;
- specificity: accuracy of ``loc_ans``'s tokens after the unrelated ``loc`` question, to
  which a "?" is appended as in the reference (``record["loc"] + "?"``).

Accuracies pool the tokens of all prompts in a group (the reference's ``np.mean`` over the
flattened per-token list). All values are x 100. This is *not* comparable with CounterFact's
probability-comparison metrics (Meng et al. 2022, ROME, §4.1: zsRE is scored by token accuracy).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from factedit.evaluate.measure import PromptMeasurement, RequestMeasurement
from factedit.evaluate.scoring import TokenScores
from factedit.spec import EditRequest


def prepare_requests(requests: Sequence[EditRequest], kind: str) -> list[EditRequest]:
    """Source-specific prompt conventions (zsRE: "?" after the ``loc`` question)."""
    return [prepare_zsre(r) if kind == "zsre" else r for r in requests]


def prepare_zsre(request: EditRequest) -> EditRequest:
    """The request with its ``loc`` questions ending in "?" (as the reference scores them)."""
    loc = tuple(p if p.rstrip().endswith("?") else p + "?" for p in request.neighborhood)
    return dataclasses.replace(request, neighborhood=loc)


def pooled_accuracy(scores: Sequence[TokenScores]) -> float | None:
    """Fraction of all target tokens (over all prompts) predicted top-1; None if none."""
    correct = [c for s in scores for c in s.correct]
    return 100.0 * sum(correct) / len(correct) if correct else None


def _expected(prompts: Sequence[PromptMeasurement]) -> list[TokenScores]:
    return [p.expected for p in prompts if p.expected is not None]  # type: ignore[misc]


def zsre_metrics(m: RequestMeasurement) -> dict[str, float]:
    """``efficacy``, ``paraphrase`` and ``specificity`` (x 100), where defined."""
    values = {
        "efficacy": pooled_accuracy([p.new for p in m.group("rewrite")]),
        "paraphrase": pooled_accuracy([p.new for p in m.group("paraphrase")]),
        "specificity": pooled_accuracy(_expected(m.group("neighborhood"))),
    }
    return {k: v for k, v in values.items() if v is not None}
