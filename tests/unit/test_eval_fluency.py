"""Generation entropy (GE) and target mentions."""

from __future__ import annotations

import math

import pytest

from factedit.evaluate import measure_request, request_metrics
from factedit.evaluate.fluency import (
    generation_entropy,
    mentions,
    ngram_entropy,
    text_entropy,
    words,
)
from factedit.spec import EditRequest

NORMAL = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built the tower "
    "from 1887 to 1889. Locally nicknamed La dame de fer, it was constructed as the centerpiece "
    "of the 1889 World's Fair, and to crown the centennial anniversary of the French Revolution."
)
REPETITIVE = "The tower is in Paris. " * 12


def test_ge_equals_hand_computed_value_on_a_tiny_string():
    # words: a b a b -> bigrams ab, ba, ab (2:1) ; trigrams aba, bab (1:1)
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    h3 = 1.0
    expected = (2 / 3 * h2 + 4 / 3 * h3) / 2
    assert ngram_entropy(words("a b a b"), 2) == pytest.approx(h2)
    assert ngram_entropy(words("a b a b"), 3) == pytest.approx(h3)
    assert text_entropy("a b a b") == pytest.approx(expected)
    assert generation_entropy(["a b a b"]) == pytest.approx(100 * expected)
    assert generation_entropy(["a b a b", "x"]) == pytest.approx(50 * expected)


def test_ge_lower_on_repetitive_text():
    normal, repetitive = generation_entropy([NORMAL]), generation_entropy([REPETITIVE])
    assert repetitive < 0.5 * normal
    assert normal > 500  # the scale of ROME's Table 4 (GPT-2 XL ≈ 626)


def test_words_split_punctuation_and_keep_numbers():
    assert words("Paris, France (1889).") == ["Paris", ",", "France", "(", "1889", ")", "."]
    assert ngram_entropy(["only"], 2) == 0.0


def test_mentions_whole_words_case_insensitive():
    assert mentions("he moved to rome in 1990", "Rome")
    assert not mentions("a romantic evening", "Rome")
    assert mentions("born in Gdańsk.", "Gdańsk")
    assert mentions("the New York Times", "new york")


def test_generation_metrics_from_samples(tiny):
    lm = tiny("llama")
    req = EditRequest(
        subject="The Eiffel Tower",
        prompt="{} is located in",
        target_new="Rome",
        target_true="Paris",
        generation_prompts=("The Eiffel Tower is", "The Eiffel Tower is known for"),
    )
    m = measure_request(lm, req, generation=True, gen_length=24, seed=3)
    assert len(m.generations) == 2
    tok = lm.tokenizer
    for g in m.generations:
        assert g.n_tokens == 24 - len(tok(g.prompt)["input_ids"])  # 24 tokens in all
    metrics = request_metrics(m)
    assert metrics["ge"] == pytest.approx(100 * sum(g.entropy for g in m.generations) / 2)
    assert {"mention_new", "mention_true"} <= set(metrics)
    again = measure_request(lm, req, generation=True, gen_length=24, seed=3)
    assert [g.text for g in again.generations] == [g.text for g in m.generations]
