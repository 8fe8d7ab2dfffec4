"""CounterFact / zsRE metrics against plain per-prompt recomputation, and aggregation."""

from __future__ import annotations

import math

import pytest
import torch

from factedit.delta import WeightDelta, apply_deltas
from factedit.evaluate import measure_request, request_metrics, summarize
from factedit.evaluate.counterfact import counterfact_metrics, harmonic_mean
from factedit.evaluate.measure import PromptMeasurement, RequestMeasurement
from factedit.evaluate.metrics import METRIC_KEYS, view_for
from factedit.evaluate.scoring import TokenScores
from factedit.evaluate.zsre import prepare_zsre, zsre_metrics
from factedit.spec import EditRequest
from factedit.tokens import prompt_token_ids, target_token_ids

REQUEST = EditRequest(
    subject="The Eiffel Tower",
    prompt="{} is located in the city of",
    target_new="Rome",
    target_true="Paris",
    paraphrases=("Where is The Eiffel Tower? It is in", "The Eiffel Tower stands in"),
    neighborhood=(
        "The Louvre is located in the city of",
        "Big Ben is in the city of",
        "The Colosseum is in",
        "Notre Dame is located in",
    ),
)


def _sharp(lm):
    with torch.no_grad():
        for p in lm.model.parameters():
            if p.dim() > 1:
                p.mul_(6.0)
    return lm


@torch.no_grad()
def _nll(lm, prompt: str, target: str) -> float:
    """score(p, t) by hand: one unpadded pass over prompt + " " + target's tokens."""
    tok = lm.tokenizer
    p, t = prompt_token_ids(tok, prompt), target_token_ids(tok, target)
    logprobs = torch.log_softmax(lm.model(torch.tensor([p + t])).logits[0].float(), dim=-1)
    return -sum(logprobs[len(p) - 1 + j, x].item() for j, x in enumerate(t)) / len(t)


def _reference_metrics(lm, req: EditRequest) -> dict[str, float]:
    """ES/EM/PS/PM/NS/NM and S computed with a plain loop, one prompt at a time."""

    def new_beats_true(prompts):
        rows = [(_nll(lm, p, req.target_new), _nll(lm, p, req.target_true)) for p in prompts]
        score = sum(n < o for n, o in rows) / len(rows)
        mag = sum(math.exp(-n) - math.exp(-o) for n, o in rows) / len(rows)
        return 100 * score, 100 * mag

    answers = req.neighborhood_answers or (req.target_true,) * len(req.neighborhood)
    rows = [
        (_nll(lm, p, a), _nll(lm, p, req.target_new))
        for p, a in zip(req.neighborhood, answers, strict=True)
    ]
    ns = 100 * sum(o < n for o, n in rows) / len(rows)
    nm = 100 * sum(math.exp(-o) - math.exp(-n) for o, n in rows) / len(rows)
    es, em = new_beats_true([req.rewrite_prompt])
    ps, pm = new_beats_true(req.paraphrases)
    s = 0.0 if 0 in (es, ps, ns) else 3 / (1 / es + 1 / ps + 1 / ns)
    return {"es": es, "em": em, "ps": ps, "pm": pm, "ns": ns, "nm": nm, "s": s}


def _random_edit(lm, layer: int, scale: float, seed: int = 0) -> WeightDelta:
    weight = lm.model.get_parameter(lm.arch.down_proj_weight_name(layer))
    g = torch.Generator().manual_seed(seed)
    left = torch.randn(weight.shape[0], 1, generator=g) * scale
    right = torch.randn(weight.shape[1], 1, generator=g)
    return WeightDelta(lm.arch.down_proj_weight_name(layer), left, right)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gemma3_text"])
def test_metrics_match_per_prompt_loop_before_and_after_an_edit(tiny, arch):
    lm = _sharp(tiny(arch))
    before = request_metrics(measure_request(lm, REQUEST))
    assert {k: before[k] for k in _reference_metrics(lm, REQUEST)} == pytest.approx(
        _reference_metrics(lm, REQUEST), abs=1e-3
    )
    with apply_deltas(lm.model, [_random_edit(lm, 1, 2.0)]):
        after = request_metrics(measure_request(lm, REQUEST))
        reference = _reference_metrics(lm, REQUEST)
    assert {k: after[k] for k in reference} == pytest.approx(reference, abs=1e-3)
    assert after != before


def test_explicit_neighborhood_answers_replace_target_true(tiny):
    lm = _sharp(tiny("llama"))
    req = EditRequest(
        subject=REQUEST.subject,
        prompt=REQUEST.prompt,
        target_new="Rome",
        target_true="Paris",
        paraphrases=REQUEST.paraphrases,
        neighborhood=REQUEST.neighborhood,
        neighborhood_answers=("Paris", "London", "Rome", "Paris"),
    )
    m = measure_request(lm, req)
    assert [p.answer_text for p in m.group("neighborhood")] == list(req.neighborhood_answers)
    got = request_metrics(m)
    ref = _reference_metrics(lm, req)
    assert got["ns"] == pytest.approx(ref["ns"])
    assert got["nm"] == pytest.approx(ref["nm"], abs=1e-3)
    # "Rome" as the expected answer can never strictly beat target_new "Rome"
    assert m.group("neighborhood")[2].answer.nll == pytest.approx(
        m.group("neighborhood")[2].new.nll
    )


def _scores(nll: float, n: int = 1, correct: bool = False) -> TokenScores:
    return TokenScores(logprobs=(-nll,) * n, correct=(correct,) * n)


def test_counterfact_metrics_on_hand_built_scores():
    m = RequestMeasurement(
        "new",
        "true",
        (
            PromptMeasurement("rewrite", "r", new=_scores(1.0), true=_scores(2.0)),
            PromptMeasurement("paraphrase", "p1", new=_scores(1.0), true=_scores(3.0)),
            PromptMeasurement("paraphrase", "p2", new=_scores(2.0), true=_scores(1.0)),
            PromptMeasurement("neighborhood", "n1", new=_scores(2.0), true=_scores(1.0)),
            PromptMeasurement("neighborhood", "n2", new=_scores(1.0), true=_scores(1.0)),
        ),
    )
    got = counterfact_metrics(m)
    e = math.exp
    assert got["es"] == 100.0
    assert got["em"] == pytest.approx(100 * (e(-1) - e(-2)))
    assert got["ps"] == 50.0
    assert got["pm"] == pytest.approx(100 * ((e(-1) - e(-3)) + (e(-2) - e(-1))) / 2)
    assert got["ns"] == 50.0  # a tie is not a success
    assert got["nm"] == pytest.approx(100 * (e(-1) - e(-2)) / 2)
    assert got["s"] == pytest.approx(3 / (1 / 100 + 1 / 50 + 1 / 50))


def test_harmonic_mean_is_zero_with_a_zero():
    assert harmonic_mean([100.0, 0.0, 50.0]) == 0.0
    assert harmonic_mean([50.0, 50.0]) == pytest.approx(50.0)


def test_metrics_without_target_true_and_zsre_accuracy():
    m = RequestMeasurement(
        "Sleater-Kinney",
        None,
        (
            PromptMeasurement(
                "rewrite", "q", new=TokenScores((-0.1, -0.2, -3.0), (True, True, False))
            ),
            PromptMeasurement("paraphrase", "q2", new=TokenScores((-0.1,), (True,))),
            PromptMeasurement(
                "neighborhood",
                "loc?",
                new=_scores(1.0),
                answer=TokenScores((-0.5, -0.5), (False, True)),
                answer_text="Billy Idol",
            ),
        ),
    )
    got = request_metrics(m)
    assert "es" not in got and "ps" not in got and "s" not in got
    assert zsre_metrics(m) == {
        "efficacy": pytest.approx(200 / 3),
        "paraphrase": 100.0,
        "specificity": 50.0,
    }
    assert got["ns"] == 100.0  # the answer (nll 0.5) beats target_new (nll 1.0)
    assert view_for("zsre", got) == ("efficacy", "paraphrase", "specificity")


def test_zsre_accuracy_pools_tokens_over_prompts():
    m = RequestMeasurement(
        "x",
        None,
        (
            PromptMeasurement("paraphrase", "a", new=TokenScores((-1.0,) * 3, (True,) * 3)),
            PromptMeasurement("paraphrase", "b", new=TokenScores((-1.0,), (False,))),
        ),
    )
    assert zsre_metrics(m)["paraphrase"] == 75.0


def test_prepare_zsre_appends_question_mark():
    req = EditRequest(
        subject="Call the Doctor",
        prompt="What artist created {}?",
        target_new="Sleater-Kinney",
        neighborhood=("nq question: who sang nice day for a white wedding", "already?"),
        neighborhood_answers=("Billy Idol", "yes"),
    )
    assert prepare_zsre(req).neighborhood == (
        "nq question: who sang nice day for a white wedding?",
        "already?",
    )


def test_teacher_forced_accuracy_matches_argmax_loop(tiny):
    lm = _sharp(tiny("gpt2"))
    m = measure_request(lm, REQUEST)
    tok = lm.tokenizer
    p = prompt_token_ids(tok, REQUEST.rewrite_prompt)
    t = target_token_ids(tok, "Rome")
    with torch.no_grad():
        logits = lm.model(torch.tensor([p + t])).logits[0]
    hits = [int(logits[len(p) - 1 + j].argmax()) == x for j, x in enumerate(t)]
    assert m.group("rewrite")[0].new.correct == tuple(hits)


def test_summarize_means_and_s_from_means():
    per_edit = [
        {"es": 100.0, "ps": 50.0, "ns": 80.0, "s": 70.6, "ge": 600.0},
        {"es": 0.0, "ps": 50.0, "ns": 60.0, "s": 0.0},
    ]
    got = summarize(per_edit)
    assert got["es"] == 50.0 and got["ps"] == 50.0 and got["ns"] == 70.0
    assert got["ge"] == 600.0  # averaged over the edits that define it
    assert got["s"] == pytest.approx(3 / (1 / 50 + 1 / 50 + 1 / 70))
    assert list(got) == [k for k in METRIC_KEYS if k in got]


def test_measurement_to_dict_has_every_prompt_probability(tiny):
    m = measure_request(tiny("llama"), REQUEST)
    data = m.to_dict()
    assert len(data["prompts"]) == 1 + 2 + 4
    for row in data["prompts"]:
        for key in ("new", "true"):
            target = row["targets"][key]
            assert set(target) >= {"nll", "prob", "logprob", "tokens", "accuracy", "token_logprobs"}
            assert target["prob"] == pytest.approx(math.exp(-target["nll"]))
