"""The per-edit verdict: rewrite / paraphrases passed, neighbours kept, neighbours changed."""

from __future__ import annotations

import math

from factedit.evaluate.measure import PromptMeasurement, RequestMeasurement
from factedit.evaluate.scoring import TokenScores
from factedit.evaluate.verdict import ChangedNeighbour, edit_verdict


def scores(p: float, top1: bool = False) -> TokenScores:
    return TokenScores(logprobs=(math.log(p),), correct=(top1,))


def prompt(group: str, text: str, p_new: float, p_true: float, answer=None):
    if answer is None:
        return PromptMeasurement(group, text, new=scores(p_new), true=scores(p_true))
    name, p_answer = answer
    return PromptMeasurement(
        group, text, new=scores(p_new), true=scores(p_true), answer=scores(p_answer),
        answer_text=name,
    )  # fmt: skip


def measured(*prompts: PromptMeasurement) -> RequestMeasurement:
    return RequestMeasurement("Berlin", "Cupertino", prompts)


APPLE = "Apple's headquarters are in"
MSFT = "Microsoft's headquarters are in"
SONY = "Sony's headquarters are in"
IBM = "IBM's headquarters are in"


def test_counts_and_the_neighbours_the_edit_turned():
    before = measured(
        prompt("rewrite", APPLE, 0.01, 0.6),
        prompt("paraphrase", "Apple is based in", 0.01, 0.5),
        prompt("paraphrase", "Apple's home town is", 0.02, 0.4),
        prompt("neighborhood", MSFT, 0.01, 0.001, answer=("Redmond", 0.5)),
        prompt("neighborhood", SONY, 0.02, 0.001, answer=("Tokyo", 0.4)),
        prompt("neighborhood", IBM, 0.30, 0.001, answer=("Armonk", 0.1)),  # wrong already
    )
    after = measured(
        prompt("rewrite", APPLE, 0.7, 0.05),
        prompt("paraphrase", "Apple is based in", 0.6, 0.1),
        prompt("paraphrase", "Apple's home town is", 0.1, 0.3),  # did not generalise
        prompt("neighborhood", MSFT, 0.6, 0.001, answer=("Redmond", 0.1)),  # leaked
        prompt("neighborhood", SONY, 0.1, 0.001, answer=("Tokyo", 0.3)),  # kept
        prompt("neighborhood", IBM, 0.4, 0.001, answer=("Armonk", 0.05)),  # not the edit's doing
    )
    verdict = edit_verdict(before, after)
    assert verdict.rewrite == (1, 1)
    assert verdict.paraphrases == (1, 2)
    assert verdict.neighbours_kept == (1, 3)
    assert verdict.changed == (ChangedNeighbour(MSFT, "Redmond", "Berlin"),)
    assert verdict.line() == "rewrite 1/1, paraphrases 1/2, neighbours kept 1/3"
    assert verdict.to_dict()["changed_neighbours"] == [
        {"prompt": MSFT, "answer": "Redmond", "now": "Berlin"}
    ]


def test_neighbours_without_an_answer_fall_back_to_target_true_and_no_true_uses_top1():
    before = RequestMeasurement(
        "Rome",
        None,
        (PromptMeasurement("rewrite", "X is in", new=scores(0.1, top1=False)),),
    )
    after = RequestMeasurement(
        "Rome", None, (PromptMeasurement("rewrite", "X is in", new=scores(0.9, top1=True)),)
    )
    verdict = edit_verdict(before, after)
    assert verdict.rewrite == (1, 1) and verdict.line() == "rewrite 1/1"
    cf_before = measured(prompt("neighborhood", MSFT, 0.1, 0.5))
    cf_after = measured(prompt("neighborhood", MSFT, 0.5, 0.1))
    flipped = edit_verdict(cf_before, cf_after)
    assert flipped.changed == (ChangedNeighbour(MSFT, "Cupertino", "Berlin"),)
