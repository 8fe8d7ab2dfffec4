"""Held-out perplexity: the value, the slice C was not collected on, and the runs' reports."""

from __future__ import annotations

import functools
import json
import math

import pytest
import torch
from test_eval_runs import (
    EDITS,
    RandomSession,
    cli,  # noqa: F401 (the fixture)
)

from factedit.delta import apply_deltas
from factedit.evaluate.perplexity import HeldOut, heldout_text, perplexity
from factedit.evaluate.runner import EvalOptions, run_independent, run_sequential
from factedit.methods.hparams import RomeHParams
from factedit.methods.state import MethodState
from factedit.report import build_report, summary_rows
from factedit.stats.corpus import stream_tokens_used, token_sequences, token_stream


def _rows(lm, n_rows: int = 3, seq_len: int = 9, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, lm.model.config.vocab_size, (n_rows, seq_len), generator=g)


def test_a_uniform_model_has_the_vocabulary_size_as_perplexity(tiny):
    lm = tiny("llama")
    lm.model.lm_head.weight = torch.nn.Parameter(torch.zeros_like(lm.model.lm_head.weight))
    # every next token has probability 1/V, whatever the text: perplexity V exactly
    assert perplexity(lm, _rows(lm)) == pytest.approx(lm.model.config.vocab_size, rel=1e-6)


@pytest.mark.parametrize("model_type", ["gpt2", "gemma3_text"])
def test_perplexity_is_exp_of_the_mean_next_token_nll(tiny, model_type):
    lm = tiny(model_type)
    ids = _rows(lm, n_rows=3, seq_len=11)
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(input_ids=ids).logits.double(), dim=-1)
    nll = -logp[:, :-1].gather(2, ids[:, 1:, None]).squeeze(2)  # [3, 10]: 30 predictions
    by_hand = math.exp(float(nll.sum()) / 30)
    # the LM head in chunks of 4 positions gives the same value as the whole-row logits
    assert perplexity(lm, ids, logit_rows=4) == pytest.approx(by_hand, rel=1e-5)
    assert 1.0 < by_hand < 2 * lm.model.config.vocab_size


def test_heldout_slice_starts_after_the_tokens_c_is_collected_on(bpe_tokenizer, corpus_path):
    n_c, seq_len = 300, 32
    c_rows = token_sequences(bpe_tokenizer, [corpus_path], n_c, seq_len)
    used = stream_tokens_used(bpe_tokenizer, n_c, seq_len)
    stream = token_stream(bpe_tokenizer, [corpus_path], used + 200)
    assert c_rows.numel() == used  # the BPE tokenizer adds no BOS: rows are the stream itself
    assert c_rows.flatten().tolist() == stream[:used]
    held = heldout_text(bpe_tokenizer, [corpus_path], used, n_tokens=64, seq_len=16)
    assert held is not None and held.ids.shape == (4, 16)
    assert held.ids.flatten().tolist() == stream[used : used + 64]
    assert f"stream tokens {used}..{used + 64}" in held.source


def test_heldout_rows_start_with_bos_for_a_tokenizer_that_adds_one(sp_tokenizer, corpus_path):
    used = stream_tokens_used(sp_tokenizer, 100, 20)
    assert used == 5 * 19  # 5 rows of 20, each BOS + 19 stream tokens
    held = heldout_text(sp_tokenizer, [corpus_path], used, n_tokens=40, seq_len=20)
    assert held is not None
    assert held.ids[:, 0].tolist() == [sp_tokenizer.bos_token_id] * 2
    stream = token_stream(sp_tokenizer, [corpus_path], used + 38)
    assert held.ids[:, 1:].flatten().tolist() == stream[used:]


def test_a_corpus_too_short_for_the_slice_gives_none(bpe_tokenizer, corpus_path):
    size = len(token_stream(bpe_tokenizer, [corpus_path], 10**7))
    assert heldout_text(bpe_tokenizer, [corpus_path], size - 10, n_tokens=64) is None


def _heldout(lm) -> HeldOut:
    return HeldOut(_rows(lm, n_rows=2, seq_len=12, seed=3), "test rows")


def test_sequential_run_measures_perplexity_unedited_after_each_batch_and_at_the_end(tiny):
    lm = tiny("gemma3_text")
    held = _heldout(lm)
    editor = RandomSession(lm, scale=30.0)
    options = EvalOptions(generation=False, answer_tokens=0, heldout=held)
    result = run_sequential(lm, EDITS, editor, options=options, batch_size=1)
    before = perplexity(lm, held.ids)  # the run reverted every edit
    with apply_deltas(lm.model, editor.compute(EDITS)):
        after = perplexity(lm, held.ids)
    assert after != pytest.approx(before, rel=1e-3)  # the random edits do move it
    assert result.heldout is not None
    assert result.heldout["unedited"] == pytest.approx(before, rel=1e-6)
    assert result.heldout["edited"] == pytest.approx(after, rel=1e-6)
    assert result.heldout["states_measured"] == 1
    curve = [p["perplexity"] for p in result.stream["points"]]
    assert len(curve) == 3
    assert curve[0] == pytest.approx(before, rel=1e-6)
    assert curve[-1] == pytest.approx(after, rel=1e-6)


def test_independent_run_measures_each_edit_alone_and_reports_the_mean(tiny):
    lm = tiny("llama")
    held = _heldout(lm)
    editor = RandomSession(lm, scale=30.0)
    options = EvalOptions(generation=False, answer_tokens=0, heldout=held)
    result = run_independent(lm, EDITS, editor, options=options)
    alone = []
    for request in EDITS:
        with apply_deltas(lm.model, editor.compute([request])):
            alone.append(perplexity(lm, held.ids))
    assert [o.perplexity for o in result.outcomes] == pytest.approx(alone, rel=1e-6)
    assert result.heldout["edited"] == pytest.approx(sum(alone) / 2, rel=1e-6)
    assert result.heldout["edited_max"] == pytest.approx(max(alone), rel=1e-6)
    report = build_report(result, model=lm)
    assert report["heldout_perplexity"]["rows"] == 2
    label, unedited, edited, _, protocol = summary_rows(report)[-1]
    assert label == "perplexity" and "held-out" in protocol
    assert float(unedited) == pytest.approx(result.heldout["unedited"], abs=0.05)
    assert float(edited) == pytest.approx(result.heldout["edited"], abs=0.05)


def test_no_heldout_means_no_perplexity_anywhere(tiny):
    lm = tiny("gpt2")
    options = EvalOptions(generation=False, answer_tokens=0)
    result = run_sequential(lm, EDITS, RandomSession(lm), options=options, batch_size=1)
    assert result.heldout is None
    assert all(p["perplexity"] is None for p in result.stream["points"])
    assert summary_rows(build_report(result, model=lm))[-1][0] != "perplexity"


class CountedCorpusSession(RandomSession):
    """The random editor with C's token count set (300), as a real session records it."""

    def __init__(self, lm, **kw):
        super().__init__(lm, **kw)
        self.state = MethodState(RomeHParams(), n_tokens=300)


def test_cli_eval_reports_heldout_perplexity_of_the_slice_after_c(
    cli,  # noqa: F811 (the fixture imported above)
    corpus_path,
    bpe_tokenizer,
    tmp_path,
    monkeypatch,
):
    import factedit.session

    invoke, spec, lm = cli
    monkeypatch.setattr(
        factedit.session, "EditSession", functools.partial(CountedCorpusSession, scale=30.0)
    )
    out = tmp_path / "r.json"
    args = ("--no-generation", "--answer-tokens", "0", "--corpus", corpus_path, "--json", out)
    result = invoke(spec, *args, "--heldout-tokens", "64")
    assert result.exit_code == 0, result.output
    heldout = json.loads(out.read_text())["heldout_perplexity"]
    used = stream_tokens_used(bpe_tokenizer, 300, 256)
    assert heldout["rows"] * heldout["seq_len"] == 512  # one row of the default 512
    assert f"stream tokens {used}..{used + 512}" in heldout["source"]
    held = heldout_text(bpe_tokenizer, [corpus_path], used, n_tokens=64)
    assert heldout["unedited"] == pytest.approx(perplexity(lm, held.ids), rel=1e-6)
    assert heldout["edited"] != pytest.approx(heldout["unedited"], rel=1e-3)
    assert "perplexity" in result.output

    result = invoke(spec, *args, "--heldout-tokens", "0")
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["heldout_perplexity"] is None
