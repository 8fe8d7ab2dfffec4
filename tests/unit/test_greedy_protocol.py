"""The generation-based protocol: its match rule, and cases where it and the teacher-forced
protocols disagree (a hand-built measurement passes one and fails the other)."""

from __future__ import annotations

import math

import pytest

from factedit.evaluate import generate_text, measure_request, measure_requests
from factedit.evaluate.greedy import greedy_metrics, states_answer
from factedit.evaluate.measure import PromptMeasurement, RequestMeasurement
from factedit.evaluate.metrics import metric_meta, request_metrics
from factedit.evaluate.scoring import TokenScores
from factedit.spec import EditRequest


@pytest.mark.parametrize(
    ("continuation", "answer", "stated"),
    [
        (" Rome, Italy", "Rome", True),
        (" rome.", "Rome", True),  # case
        ("Rome", "Rome", True),  # no leading space, nothing after
        ('  "Rome" is', "Rome", True),  # spaces and an opening quote dropped
        (" (Rome)", "Rome", True),
        (" Romeo and Juliet", "Rome", False),  # the answer is a prefix of another word
        (" Rome2", "Rome", False),
        (" the city of Rome", "Rome", False),  # not at the start
        (" New   York City", "new york", True),  # whitespace runs collapse
        (" Ｒｏｍｅ", "Rome", True),  # NFKC: full-width letters
        (" Paris", "Rome", False),
        (" anything", "", False),
    ],
)
def test_states_answer(continuation, answer, stated):
    assert states_answer(continuation, answer) is stated


def _scores(prob: float, correct: bool = True) -> TokenScores:
    return TokenScores((math.log(prob),), (correct,))


def _measurement(new_p, true_p, rewrite_said, neighbour_said, correct=True) -> RequestMeasurement:
    rewrite = PromptMeasurement(
        "rewrite",
        "The Eiffel Tower is in",
        new=_scores(new_p, correct),
        true=_scores(true_p),
        continuation=rewrite_said,
    )
    neighbour = PromptMeasurement(
        "neighborhood",
        "Big Ben is in",
        new=_scores(0.01),
        true=_scores(0.02),
        answer=_scores(0.5),
        answer_text="London",
        continuation=neighbour_said,
    )
    return RequestMeasurement("Rome", "Paris", (rewrite, neighbour))


def test_passes_teacher_forcing_but_not_generation():
    # P(Rome) beats P(Paris) when both are handed over, yet the model goes on saying Paris
    m = request_metrics(_measurement(0.3, 0.2, " Paris, of course", " London"))
    assert m["es"] == 100.0 and m["efficacy"] == 100.0
    assert m["gen_es"] == 0.0 and m["gen_ns"] == 100.0


def test_passes_generation_but_not_the_probability_comparison():
    # greedy decoding says Rome, but the whole-target comparison favours Paris and Rome's
    # token is not the teacher-forced arg-max
    m = request_metrics(_measurement(0.2, 0.3, " Rome", " Paris", correct=False))
    assert m["es"] == 0.0 and m["efficacy"] == 0.0
    assert m["gen_es"] == 100.0 and m["gen_ns"] == 0.0  # the neighbour lost London


def test_no_continuations_no_generation_metrics():
    m = _measurement(0.3, 0.2, None, None)
    assert greedy_metrics(m) == {}
    assert "gen_es" not in request_metrics(m)


def test_measure_request_continues_every_prompt_greedily(tiny):
    lm = tiny("llama")
    request = EditRequest(
        subject="Eiffel Tower",
        prompt="The {} is in",
        target_new="Rome",
        target_true="Paris",
        paraphrases=("The Eiffel Tower stands in",),
        neighborhood=("Big Ben is in",),
    )
    m = measure_request(lm, request, answer_tokens=5)
    prompts = [p.prompt for p in m.prompts]
    assert [p.continuation for p in m.prompts] == generate_text(lm, prompts, max_new_tokens=5)
    assert set(greedy_metrics(m)) == {"gen_es", "gen_ps", "gen_ns"}
    assert all(p.continuation is None for p in measure_request(lm, request).prompts)


def test_pooled_requests_measure_as_one_call_each(tiny):
    """Prompts of several requests pooled (scoring buckets, greedy batches of 2 rows, left
    padding across requests) give each request the scores and continuations it gets alone."""
    lm = tiny("llama")
    requests = [
        EditRequest(
            subject="Eiffel Tower",
            prompt="The {} is in",
            target_new="Rome",
            target_true="Paris",
            paraphrases=("Where is the Eiffel Tower? It stands in the city of",),
            neighborhood=("Big Ben is in", "The Colosseum is in"),
        ),
        EditRequest(subject="Danielle Darrieux", prompt="{} speaks", target_new="English"),
    ]
    pooled = measure_requests(lm, requests, answer_tokens=4, batch_size=2)
    for request, together in zip(requests, pooled, strict=True):
        alone = measure_request(lm, request, answer_tokens=4)
        assert [p.continuation for p in together.prompts] == [p.continuation for p in alone.prompts]
        for a, b in zip(together.prompts, alone.prompts, strict=True):
            assert a.new.logprob == pytest.approx(b.new.logprob, abs=1e-5)
            assert (a.true is None) == (b.true is None)
            if a.true is not None:
                assert a.true.logprob == pytest.approx(b.true.logprob, abs=1e-5)
    assert [len(m.prompts) for m in pooled] == [4, 1]


def test_metric_meta_names_the_greedy_protocol():
    meta = metric_meta(["gen_es", "es", "efficacy"])
    assert meta["gen_es"]["protocol"] == "greedy_generation"
    assert "non-alphanumeric" in meta["gen_es"]["protocol_rule"]
    assert {m["protocol"] for m in meta.values()} == {
        "greedy_generation",
        "probability",
        "token_accuracy",
    }
