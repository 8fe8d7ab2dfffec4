"""The post-edit fluency probe: a collapsed model is caught, a benign edit is not."""

from __future__ import annotations

import pytest

import factedit.evaluate.probe as probe
from factedit.delta import apply_deltas
from factedit.evaluate.fluency import words
from factedit.evaluate.probe import COLLAPSE_RATIO, FluencyProbe, probe_entropy, probe_texts
from factedit.testing import collapsing_delta, small_delta

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(params=["llama", "gpt2"])
def lm(request, tiny):
    return tiny(request.param)


def test_the_probe_is_deterministic_and_fluent_on_an_unedited_model(lm):
    before = probe_entropy(lm)
    assert before == probe_entropy(lm)
    # varied text: ~log2(#words) x 100 for distinct n-grams. Measured with the packaged tiny
    # tokenizer, probe_entropy(tiny_model(arch, byte_bpe_tokenizer())): llama 356.9, gpt2
    # 298.1 (the WikiText-trained tokenizer gave 429.0 and 294.8)
    assert before > 250


def test_a_collapsing_update_is_caught(lm):
    before = probe_entropy(lm)
    with apply_deltas(lm.model, [collapsing_delta(lm)]):
        texts = probe_texts(lm)
        result = FluencyProbe(before, probe_entropy(lm))
    assert all(len(set(words(t))) <= 2 for t in texts)  # one token, repeated
    assert result.after == pytest.approx(0.0, abs=1.0)
    assert result.after < COLLAPSE_RATIO * result.before
    assert result.collapsed
    assert result.to_dict() == {"before": before, "after": result.after, "collapsed": True}
    assert probe_entropy(lm) == before  # reverted


def test_a_small_update_is_not_flagged(lm):
    before = probe_entropy(lm)
    with apply_deltas(lm.model, [small_delta(lm)]):
        result = FluencyProbe(before, probe_entropy(lm))
    assert result.after == pytest.approx(before, rel=0.05)
    assert not result.collapsed


@pytest.mark.parametrize(
    ("before", "after", "collapsed"),
    [(400.0, 300.0, False), (400.0, 299.9, True), (400.0, 0.0, True), (0.0, 0.0, False)],
)
def test_collapse_threshold_is_three_quarters_of_the_unedited_entropy(before, after, collapsed):
    assert COLLAPSE_RATIO == 0.75
    assert FluencyProbe(before, after).collapsed is collapsed


def test_report_warns_with_the_numbers_only_when_collapsed(monkeypatch):
    warnings: list[str] = []
    monkeypatch.setattr(probe, "warn", warnings.append)
    probe.report_probe(FluencyProbe(412.3, 401.0))
    assert warnings == []
    probe.report_probe(FluencyProbe(412.3, 3.4))
    (message,) = warnings
    assert "collapsed" in message and "412 before" in message and "3 after" in message
